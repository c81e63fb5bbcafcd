"""Cluster set-up without a cluster: the installed profile, and what each rule's jobs ask for."""

from __future__ import annotations

import os
import subprocess
import sys

from virnucflow.planning.config import schema_defaults
from virnucflow.planning.resources import rule_resources, rule_threads

from .conftest import REPO, run_cli


def _install(tmp_path, *args):
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    return subprocess.run([sys.executable, "-m", "virnucflow", "install-profile", *args], env=env,
                          capture_output=True, text=True)


def test_install_profile_copies_the_project_profile(tmp_path):
    res = _install(tmp_path, "slurm")
    assert res.returncode == 0, res.stderr
    installed = tmp_path / "xdg" / "snakemake" / "slurm" / "profile.yaml"
    assert installed.read_bytes() == (REPO / "profiles" / "slurm" / "profile.yaml").read_bytes()
    assert res.stdout == f"installed the slurm profile in {installed.parent}: snakemake --profile slurm\n"


def test_install_profile_never_replaces_one_without_force(tmp_path):
    target = tmp_path / "xdg" / "snakemake" / "slurm"
    target.mkdir(parents=True)
    (target / "profile.yaml").write_text("executor: site\n")
    res = _install(tmp_path, "slurm")
    assert res.returncode == 1
    assert res.stderr == f"virnucflow: error: {target}: a profile is already there; use --force to replace it\n"
    assert (target / "profile.yaml").read_text() == "executor: site\n"
    res = _install(tmp_path, "slurm", "--force")
    assert res.returncode == 0, res.stderr
    assert (target / "profile.yaml").read_bytes() == (REPO / "profiles" / "slurm" / "profile.yaml").read_bytes()
    assert [p.name for p in target.parent.iterdir()] == ["slurm"]  # no temporary copy left beside it


def test_install_profile_defaults_to_the_home_config_folder(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
    res = subprocess.run([sys.executable, "-m", "virnucflow", "install-profile", "slurm"],
                         env={**env, "HOME": str(tmp_path)}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / ".config" / "snakemake" / "slurm" / "profile.yaml").is_file()


def test_unknown_profile_is_refused():
    res = run_cli("install-profile", "pbs")
    assert res.returncode == 2
    assert "invalid choice: 'pbs'" in res.stderr


def test_slurm_profile_is_cluster_level_only():
    import yaml

    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "profile.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"
    assert "set-resources" not in profile and "set-scatter" not in profile


def _config(**embedding):
    config = schema_defaults()
    config["embedding"].update(embedding)
    return config


def test_rules_declare_the_schema_defaults():
    config = _config()
    embed = rule_resources(config, "embed")
    # runtime auto: derived from each job's shard (tests/test_resources.py)
    assert callable(embed.pop("runtime"))
    assert embed == {"mem_mb": 48000, "gpu": 1}
    assert rule_resources(config, "preprocess") == {"mem_mb": 2000, "runtime": 240}
    assert rule_threads(config, "embed") == 4 and rule_threads(config, "merge") == 1


def test_device_cpu_asks_for_no_gpu():
    config = _config(device="cpu")
    config["resources"]["embed"].update(gpu_model="a100", slurm_partition="cpu")
    config["resources"]["embed"]["runtime"] = 480
    assert rule_resources(config, "embed") == {"mem_mb": 48000, "runtime": 480, "gpu": 0, "slurm_partition": "cpu"}
    assert rule_resources(config, "fp32_compare_sample")["gpu"] == 0
    assert rule_resources(_config(device="cuda"), "embed")["gpu"] == 1
