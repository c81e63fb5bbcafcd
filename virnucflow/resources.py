"""What each rule's jobs ask a scheduler for, from the config's ``resources`` section.

The defaults live once, in ``workflow/schemas/config.schema.yaml``; the rules
declare them (``threads:`` and ``resources:``), so Snakemake composes them with
a site profile's ``default-resources`` (which fill only keys a rule leaves
out) and a command-line ``--set-resources RULE:KEY=VALUE`` (which replaces only
that key) instead of one profile's ``set-resources`` block replacing another's.
"""

from __future__ import annotations

from typing import Any, Mapping

# Resources that only mean something with a GPU: dropped when the embedding runs on CPUs.
GPU_ONLY = ("gpu_model", "cpus_per_gpu", "gres", "tasks_per_gpu")


def rule_threads(config: Mapping[str, Any], rule: str) -> int:
    """CPU cores of one rule's jobs (``resources.<rule>.cpus``; SLURM ``--cpus-per-task``)."""
    return int(config["resources"][rule]["cpus"])


def rule_resources(config: Mapping[str, Any], rule: str) -> dict[str, Any]:
    """One rule's ``resources:`` (all of ``resources.<rule>`` but ``cpus``, which are its threads).

    With ``embedding.device: cpu`` a GPU rule asks for no GPU (``gpu=0``: no
    ``--gpus``, no gres) and none of the GPU-only keys, so it runs on any node.
    """
    spec = {k: v for k, v in config["resources"][rule].items() if k != "cpus"}
    if "gpu" in spec and config["embedding"]["device"] == "cpu":
        spec["gpu"] = 0
        for key in GPU_ONLY:
            spec.pop(key, None)
    return spec
