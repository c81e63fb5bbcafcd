"""``virnucflow selftest`` and ``snakemake selftest``: this installation against the original's outputs.

References in the original's layout are built from the demo models by paths independent of the
production path (:mod:`tests.make_reference`: fair-esm for ESM-2, the FP32 reference attention for
DNABERT-S, the classifier's weights applied by hand). Tolerances are the config's defaults
(``selftest.*``: FP32 against FP32 1e-5 in cosine, 1e-3 per value, 1e-4 per score; FP16 the
``fp32_compare`` thresholds); the perturbations are 10-50x beyond them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from virnucflow.planning.config import load_config
from virnucflow.steps.demo import build_demo_models
from virnucflow.errors import CheckFailed, InputError
from virnucflow.steps.selftest import BUNDLED, check_verdict, lines, selftest

from .conftest import REFERENCE, REPO, run_cli
from .make_reference import build_reference

MODELS = {"esm2": "esm2_demo.pt", "dnabert_s": "dnabert_s_demo", "classifier": "virnucpro_demo.pth"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Demo models, a reference made from them, and a config naming them (absolute paths)."""
    root = tmp_path_factory.mktemp("selftest")
    paths = {k: root / "models" / v for k, v in MODELS.items()}
    build_demo_models({"esm2": paths["esm2"], "dnabert_s": paths["dnabert_s"], "classifier": paths["classifier"]})
    build_reference(paths, root / "reference")
    (root / "samples.tsv").write_text(f"sample\tfasta\ns1\t{REPO / 'resources' / 'demo' / 'lambda_contigs.fa'}\n")
    config = root / "config.yaml"
    config.write_text(f"samples: {root / 'samples.tsv'}\nchunk_length: 500\nmodels:\n"
                      + "".join(f"  {k}: {v}\n" for k, v in paths.items())
                      + "  classifier_chunk_length: 500\n  download: false\n")
    return root


def _manifest(root: Path) -> Path:
    from virnucflow.models.manifest import check_models

    out = root / "models.json"
    if not out.exists():
        check_models({k: str(root / "models" / v) for k, v in MODELS.items()}, out)
    return out


def _run(root: Path, tmp_path: Path, reference: Path, **embedding):
    config = load_config(root / "config.yaml")
    config["embedding"].update(embedding)
    return selftest(config, _manifest(root), tmp_path / "selftest.tsv", reference=reference, threads=2)


def _copy_reference(demo: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(demo / "reference", tmp_path / "reference"))


def test_bundled_reference_is_the_originals_output():
    """The bundled files are ../shared's reference, byte for byte (all but the merged .pt)."""
    bundled = sorted(p.name for p in BUNDLED.iterdir() if p.name != "reference.yaml")
    assert bundled == sorted(p.name for p in REFERENCE.iterdir() if not p.name.endswith("_merged.pt"))
    for name in bundled:
        assert (BUNDLED / name).read_bytes() == (REFERENCE / name).read_bytes(), name


def test_bundled_reference_with_the_demo_models_checks_preprocessing_and_skips_the_rest(demo, tmp_path):
    res = run_cli("selftest", "--configfile", demo / "config.yaml", "--out", tmp_path / "s.tsv")
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert [line.split("  ")[:3] for line in out if "preprocess" in line] == [
        ["PASS", case, f"preprocess_{what}"] for case in ("test_fixed_500bp", "test_with_orfs")
        for what in ("windows", "nucleotide", "protein")]
    compared = [line for line in out if any(f"  {c}  " in line for c in
                                            ("embedding_esm2", "embedding_dnabert_s", "predictions", "calls"))]
    assert len(compared) == 16  # 2 cases x 4 checks x (production, fp32)
    for line in compared:
        assert line.startswith("SKIP  ") and line.endswith(
            f"not the published models: models.esm2 ({demo / 'models' / 'esm2_demo.pt'}) is a demo model "
            "(its file says so)"), line
    assert out[-1] == "selftest: PASS (8 passed, 0 failed, 16 skipped)"
    assert (tmp_path / "s.tsv").read_text().count("\tSKIP\t") == 16
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".selftest-")]


@pytest.mark.parametrize("embedding", [{}, {"fp16_on_cpu": True}], ids=["cpu-fp32", "fp16-on-cpu"])
def test_reference_made_from_the_configured_models_passes(demo, tmp_path, embedding):
    table = _run(demo, tmp_path, demo / "reference", **embedding)
    assert len(table) == 6 + 2 * (1 + 2 * 4)
    assert set(table["result"]) == {"PASS"}, table[table["result"] != "PASS"].to_string()
    production = table[(table["path"] == "production") & (table["check"] == "embedding_esm2")]
    if embedding:  # FP16 judged by the fp32_compare thresholds, FP32 by the tight ones
        assert production["tolerance"].str.contains("fp32_compare thresholds").all()
        assert table.loc[table["check"] == "run", "detail"].iloc[0].startswith("dnabert_s fp16/packed/")
    else:
        assert production["tolerance"].str.contains(r"FP32 against FP32").all()
    check_verdict(table, tmp_path / "selftest.tsv")  # does not raise
    assert lines(table)[-1] == "selftest: PASS (24 passed, 0 failed, 0 skipped)"


def _failed(table):
    return table[table["result"] == "FAIL"][["case", "check", "path", "measured", "tolerance", "detail"]]


def test_a_perturbed_embedding_fails_naming_case_check_and_size(demo, tmp_path):
    ref = _copy_reference(demo, tmp_path)
    pt = ref / "test_with_orfs_output_1_ESM.pt"
    obj = torch.load(pt, weights_only=True)
    obj["data"][1] = obj["data"][1].clone()
    obj["data"][1][7] += 0.05
    torch.save(obj, pt)
    failed = _failed(_run(demo, tmp_path, ref))
    assert failed[["case", "check", "path"]].values.tolist() == [
        ["test_with_orfs", "embedding_esm2", "production"], ["test_with_orfs", "embedding_esm2", "fp32"]]
    assert failed["measured"].str.contains(r"max abs diff 5\.00e-02").all(), failed.to_string()
    with pytest.raises(CheckFailed, match=r"^selftest: 2 check\(s\) failed, first test_with_orfs embedding_esm2 "
                                          r"production: min cosine .* max abs diff 5\.00e-02"):
        check_verdict(_run(demo, tmp_path, ref), tmp_path / "selftest.tsv")


def test_a_changed_score_fails_naming_case_check_and_size(demo, tmp_path):
    ref = _copy_reference(demo, tmp_path)
    txt = ref / "test_fixed_500bp_prediction_results.txt"
    rows = txt.read_text().splitlines()
    fields = rows[2].split("\t")
    fields[3] = str(float(fields[3]) + 0.001)
    rows[2] = "\t".join(fields)
    txt.write_text("\n".join(rows) + "\n")
    failed = _failed(_run(demo, tmp_path, ref))
    assert failed[["case", "check"]].values.tolist() == [["test_fixed_500bp", "predictions"]] * 2
    assert failed["measured"].str.match(rf"max score diff 1\.00e-03 \({fields[0]}\), 0 of 4 frame calls differ").all()


def test_a_changed_preprocessing_byte_fails_naming_case_check_and_place(demo, tmp_path):
    ref = _copy_reference(demo, tmp_path)
    faa = ref / "test_fixed_500bp_identified_protein.faa"
    original = faa.read_bytes()
    data = bytearray(original)
    at = data.index(b"\n", data.index(b"\n") + 1) - 5  # in the first protein's sequence line
    data[at] = ord("W") if data[at] != ord("W") else ord("A")
    faa.write_bytes(bytes(data))
    failed = _failed(_run(demo, tmp_path, ref))
    assert failed.values.tolist() == [[
        "test_fixed_500bp", "preprocess_protein", "-", "1 of 8 lines differ (780 vs 780 bytes)", "byte for byte",
        f"first difference at byte {at} (line 2): ours {original[at:at + 24]!r}, reference {bytes(data[at:at + 24])!r}"]]


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_reference_pickle_that_would_run_code_is_refused_before_anything_runs(demo, tmp_path):
    ref = _copy_reference(demo, tmp_path)
    marker = tmp_path / "ran"
    evil = _RunsCode()
    evil.marker = marker
    pt = ref / "test_with_orfs_output_1_ESM.pt"
    torch.save({"proteins": ["x"], "data": [evil]}, pt)
    res = run_cli("selftest", "--configfile", demo / "config.yaml", "--reference", ref, "--out", tmp_path / "out" / "s.tsv")
    assert res.returncode == 1
    assert res.stdout == ""
    assert res.stderr.splitlines()[-1].startswith(f"virnucflow: error: {pt}: refused to load: the pickle asks for more "
                                                  "than lists of tensors and strings (it could run code)")
    assert "Traceback" not in res.stderr
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_reference_errors_are_one_line(demo, tmp_path):
    config = load_config(demo / "config.yaml")
    with pytest.raises(InputError, match=rf"^{tmp_path / 'absent'}: reference directory not found$"):
        selftest(config, _manifest(demo), tmp_path / "s.tsv", reference=tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: no reference cases: expected NAME.fa with NAME_identified_nucleotide"):
        selftest(config, _manifest(demo), tmp_path / "s.tsv", reference=tmp_path / "empty")
    ref = _copy_reference(demo, tmp_path)
    torch.save({"sequences": [], "data": []}, ref / "test_with_orfs_output_1_DNABERT_S.pt")
    with pytest.raises(InputError, match=r"test_with_orfs_output_1_DNABERT_S.pt: not the original's dnabert_s file: "
                                         r"expected \{'nucleotide': \[frame IDs\]"):
        selftest(config, _manifest(demo), tmp_path / "s.tsv", reference=ref)
    assert not (tmp_path / "s.tsv").exists()


def test_a_reference_of_another_window_length_is_skipped_saying_so(demo, tmp_path):
    config = load_config(demo / "config.yaml")
    config["chunk_length"] = 300
    table = selftest(config, _manifest(demo), tmp_path / "s.tsv", reference=demo / "reference")
    assert table[["case", "check", "result"]].values.tolist() == [
        ["test_fixed_500bp", "case", "SKIP"], ["test_with_orfs", "case", "SKIP"]]
    assert (table["detail"] == "the reference was made with 500 bp windows; the config's chunk_length is 300").all()


@pytest.mark.slow
def test_snakemake_selftest_target(demo, tmp_path):
    """``snakemake selftest``: the same checks as a rule (log, benchmark, the table), here with a
    lab's own reference given in the config."""
    extra = tmp_path / "selftest.yaml"
    extra.write_text(f"selftest:\n  reference: {demo / 'reference'}\n")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", REPO / "Snakefile", "--directory", tmp_path,
                          "--cores", "2", "selftest", "--configfile", demo / "config.yaml", extra],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    table = (tmp_path / "results" / "selftest" / "selftest.tsv").read_text().splitlines()
    assert len(table) == 1 + 24 and all("\tPASS\t" in row for row in table[1:])
    log = (tmp_path / "logs" / "selftest.log").read_text()
    assert "selftest: PASS (24 passed, 0 failed, 0 skipped)" in log
    assert (tmp_path / "logs" / "benchmarks" / "selftest.tsv").exists()
