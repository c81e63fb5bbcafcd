"""The models are listed once (virnucflow.models.registry), and a third model is one module plus one
registration: tests/toy_plugin holds a module (toy_model.py) and its entry point (a dist-info folder, as
an installed package would have), and the demo runs with it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd

from virnucflow.models import registry

from .conftest import REPO

TOY = REPO / "tests" / "toy_plugin"


def test_the_model_names_are_listed_in_the_registry_only():
    """No module of the package or workflow names both embedding models in one expression (a list,
    tuple, dict, set or a call's arguments): every list of models derives from the registry."""
    pair = re.compile(r"""['"](esm2|dnabert_s)['"][^\n]{0,80}['"](esm2|dnabert_s)['"]""")
    found = []
    for path in sorted([*(REPO / "virnucflow").rglob("*.py"), *(REPO / "workflow").rglob("*.smk"),
                        *(REPO / "workflow" / "scripts").glob("*.py"), REPO / "workflow" / "Snakefile"]):
        for k, line in enumerate(path.read_text().splitlines(), 1):
            m = pair.search(line)
            if m and m.group(1) != m.group(2):
                found.append(f"{path.relative_to(REPO)}:{k}: {line.strip()}")
    assert [f for f in found if not f.startswith("virnucflow/models/registry.py")] == []
    assert registry.names() == ("dnabert_s", "esm2")  # the classifier's feature order: DNABERT-S 768, ESM-2 2560


def test_a_third_model_is_one_module_and_one_registration(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TOY), os.environ.get("PYTHONPATH")]))}
    code = "from virnucflow.models.registry import names; print(' '.join(names()))"
    listed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert listed.stdout.split() == ["dnabert_s", "esm2", "toy"]

    work = tmp_path / "demo"
    subprocess.run([sys.executable, "-m", "virnucflow", "init-demo", str(work)], check=True, capture_output=True)
    (work / "toy.yaml").write_text("models:\n  toy: resources/demo_models/toy_demo.pt\n")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2",
                          "--configfile", "config/demo.yaml", "toy.yaml"], cwd=work, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    # the demo models were built for it: the classifier is as wide as the three models together (48 + 32 + 3)
    assert (work / "results" / "models" / "toy.json").is_file()
    for sample in ("demo_lambda", "demo_controls"):
        with h5py.File(work / "results" / sample / "features.h5") as h5:
            features, ids = h5["features"][()], [i.decode() for i in h5["ids"][()]]
            assert h5.attrs["layout"] == "[DNABERT-S | ESM-2 | Toy] mean-pooled, float32"
        assert features.shape[1] == 48 + 32 + 3
        # the toy's 3 columns are its pooled table rows over each frame's window, in input order
        fasta = (work / "results" / sample / "preprocess" / "identified_nucleotide.fa").read_text().split()
        windows = dict(zip([h[1:] for h in fasta[0::2]], fasta[1::2]))
        table = np.arange(18, dtype=np.float32).reshape(6, 3) / 18
        tokens = {c: 2 + k for k, c in enumerate("ACGT")}
        expected = np.array([table[[1] + [tokens.get(c, 1) for c in windows[i]] + [1]].mean(0) for i in ids])
        np.testing.assert_allclose(features[:, 80:], expected, rtol=1e-5, atol=1e-6)
        calls = pd.read_csv(work / "results" / sample / "prediction_results.txt", sep="\t", comment="#")
        assert len(calls) == len(ids) and set(calls.iloc[:, 1]) <= {"virus", "others"}
    status = subprocess.run([sys.executable, "-m", "virnucflow", "status", "--json"], cwd=work, env=env,
                            capture_output=True, text=True, check=True)
    assert '"toy"' in status.stdout


def test_the_published_esm2_sizes_are_the_registrys_known_names():
    """The tests' and benchmarks' table of published sizes (workloads/published.py) names the same models
    the registry resolves (a size added to one and not the other would be a second list)."""
    from workloads.published import KNOWN_CONFIGS

    assert tuple(KNOWN_CONFIGS) == registry.get("esm2").known_names
    assert all(c.name == name for name, c in KNOWN_CONFIGS.items())
