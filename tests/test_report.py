"""`snakemake --report` on a demo run, rendered in headless Chromium.

Chromium is installed with apt-get where it is missing and we are root (CI: a
fresh Debian 12 machine); the test is skipped only where that cannot be done.
Each figure is opened the way a click does (the report app's own
``app.setView``) and must render as a non-empty image.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import ORIGINAL
from .test_workflow import snakemake

pytestmark = pytest.mark.slow
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FIGURES = ["results/lam/report/calls.png", "results/run/rule_times.png", "results/lam/qc/fp32_compare/cosine.png"]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("no headless Chromium, and not root with apt-get to install Debian's chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if res.returncode != 0:
            pytest.skip(f"cannot install chromium: {' '.join(cmd)} failed: {res.stderr.strip()[-300:]}")
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The workflow and `snakemake fp32_compare` on a FASTA sample and a paired FASTQ.gz sample, then the report."""
    wd = tmp_path_factory.mktemp("report")
    from virnucflow.io.fasta import read_fasta

    records = list(read_fasta(ORIGINAL / "lambda_pieces.fa"))[:3]
    for mate, cut in ((1, slice(0, 600)), (2, slice(-600, None))):
        text = "".join(f"@p{i}/{mate}\n{r.seq[cut]}\n+\n{'F' * 600}\n" for i, r in enumerate(records))
        (wd / f"r{mate}.fq.gz").write_bytes(gzip.compress(text.encode()))
    (wd / "s.tsv").write_text(f"sample\tfasta\tmate2\nlam\t{ORIGINAL / 'lambda_pieces.fa'}\t\n"
                              "pairs\tr1.fq.gz\tr2.fq.gz\n")
    # targets: the run and `snakemake fp32_compare`, whose QC the report then shows
    # (after "--config a=b" they would be read as config entries, hence the flag between)
    targets = ["--config", "samples=s.tsv", "shards=2", "--printshellcmds", "all", "fp32_compare"]
    res = snakemake(wd, *targets)
    assert res.returncode == 0, res.stderr[-3000:]
    res = snakemake(wd, "--report", "report.html", *targets)
    assert res.returncode == 0, res.stderr[-3000:]
    return wd


def _tsv(path: Path) -> list[dict[str, str]]:
    head, *rows = path.read_text().splitlines()
    return [dict(zip(head.split("\t"), row.split("\t"))) for row in rows]


def test_report_has_every_section(report):
    html = (report / "report.html").read_text()
    results = json.loads(re.search(r"var results = (\{.*?\});\n", html, re.S).group(1))
    per_sample = ["report/calls.png", "summary.tsv", "qc/fp32_compare/summary.tsv",
                  "qc/fp32_compare/call_agreement.tsv", "qc/fp32_compare/cosine.png", "qc/fp32_compare/scores.png"]
    per_run = ["results/run/inputs.tsv", "results/run/embedding_jobs.tsv", "results/run/rule_times.png",
               "results/run/rule_times.tsv"]
    expected = per_run + [f"results/{s}/{f}" for s in ("lam", "pairs") for f in per_sample] + [
        f"results/batches/{s}/nan_gate.tsv" for s in ("lam", "pairs")]  # each sample its own batch: shards: 2
    assert sorted(results) == sorted(expected)
    for key in expected:  # every item has a caption saying how to read it
        assert len(re.sub(r"<[^>]+>", "", results[key]["caption"]).strip()) > 100, key
    # the workflow description names the models and the precision
    desc = re.search(r'var workflow_desc = "(.*?)";\n', html, re.S).group(1)
    assert "resources/demo_models/esm2_demo.pt" in desc and "fp16" in desc

    # per run: input sizes
    inputs = {r["sample"]: r for r in _tsv(report / "results" / "run" / "inputs.tsv")}
    assert list(_tsv(report / "results" / "run" / "inputs.tsv")[0]) == [
        "sample", "input", "format", "size_bytes", "records", "bases", "read_pairs", "windows", "frames", "batch",
        "dnabert_s_unique_frames", "dnabert_s_dedup_saving", "esm2_unique_frames", "esm2_dedup_saving", "note"]
    lam, pairs = inputs["lam"], inputs["pairs"]
    assert (lam["format"], lam["records"], lam["bases"], lam["read_pairs"]) == (
        "FASTA", "6", str(2400 + 900 + 4000 + 2777 + 1300 + 3502), "NA")
    assert lam["size_bytes"] == str((ORIGINAL / "lambda_pieces.fa").stat().st_size)
    assert (pairs["input"], pairs["format"]) == ("r1.fq.gz + r2.fq.gz", "FASTQ.gz + FASTQ.gz")
    assert (pairs["records"], pairs["bases"], pairs["read_pairs"]) == ("6", "3600", "3")
    for sample, row in inputs.items():
        recs = _tsv(report / "results" / sample / "preprocess" / "records.tsv")
        assert row["windows"] == str(sum(int(r["chunks"]) for r in recs))
        assert row["frames"] == str(sum(int(r["frames"]) for r in recs))
        for model in ("dnabert_s", "esm2"):
            assert 0 < int(row[f"{model}_unique_frames"]) <= int(row["frames"])
            assert 0 <= float(row[f"{model}_dedup_saving"]) < 1

    # per run: frames embedded, dedup saving, throughput, wall time, models, precision and backends
    jobs = _tsv(report / "results" / "run" / "embedding_jobs.tsv")
    assert list(jobs[0]) == ["batch", "samples", "model", "shard", "frames", "unique", "dedup_saving", "tokens",
                             "tokens_per_second", "load_s", "compute_s", "job_wall_s", "precision", "attention",
                             "device", "model_spec"]
    assert len(jobs) == 2 * 2 * 1  # two samples, two models, one shard each (each < 4,096 frames)
    for sample in inputs:
        assert inputs[sample]["batch"] == sample
        for model in ("dnabert_s", "esm2"):
            mine = [j for j in jobs if j["batch"] == sample and j["model"] == model]
            assert [j["samples"] for j in mine] == [sample]
            assert sum(int(j["frames"]) for j in mine) == int(inputs[sample]["frames"])
            assert sum(int(j["unique"]) for j in mine) == int(inputs[sample][f"{model}_unique_frames"])
    for j in jobs:
        assert int(j["tokens_per_second"]) > 0 and float(j["job_wall_s"]) > float(j["compute_s"]) > 0
        assert j["precision"] == "fp32" and j["device"] == "cpu" and j["attention"]  # fp16 falls back on a CPU
        assert j["model_spec"].startswith("resources/demo_models/")

    # per run: wall, CPU and GPU time per rule from the benchmark files
    times = {r["rule"]: r for r in _tsv(report / "results" / "run" / "rule_times.tsv")}
    assert {"preprocess", "plan_shards", "embed", "score", "nan_gate", "merge", "predict", "check_model"} <= set(times)
    assert times["embed"]["jobs"] == "2" and float(times["embed"]["wall_s"]) > 0
    # the embedding's wall time is its jobs', once (both models run in each)
    assert float(times["embed"]["wall_s"]) == pytest.approx(sum(float(j["job_wall_s"]) for j in jobs) / 2, abs=0.05)
    assert all(float(r["gpu_s"]) == 0 for r in times.values())  # a CPU-only run: no GPU time


@pytest.mark.parametrize("figure", FIGURES)
def test_figures_render_in_chromium(report, figure, tmp_path):
    chromium = _chromium()
    html = (report / "report.html").read_text()
    show = f"""<script>
    const entry = results[{json.dumps(figure)}];
    let shown = false;
    const step = () => {{
      // the report app sets the global `app` when React has rendered it
      if (!shown && typeof app !== "undefined" && app) {{
        app.setView({{content: "img", contentPath: entry.data_uri, resultPath: {json.dumps(figure)}}});
        shown = true;
      }}
      const img = document.querySelector("img[src^='data:image/png']");
      if (img && img.complete && img.naturalWidth > 0) {{
        document.body.setAttribute("data-rendered", img.naturalWidth + "x" + img.naturalHeight);
      }} else {{ setTimeout(step, 50); }}
    }};
    step();
    </script></body>"""
    page = tmp_path / "page.html"
    end = html.rindex("</body>")  # the last one: the page's (the scripts hold the string too)
    page.write_text(html[:end] + show + html[end + len("</body>"):])
    base = [chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
            "--window-size=1280,900"]
    dom = subprocess.run(base + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    size = re.search(r'data-rendered="(\d+)x(\d+)"', dom)
    assert size, f"figure did not render: {re.search(r'<body[^>]*>', dom)}"
    width, height = map(int, size.groups())
    assert width >= 600 and height >= 300
    src = re.search(r'<img src="data:image/png[^"]*?base64,([^"]+)"', dom).group(1)
    png = base64.b64decode(src)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    shot = tmp_path / "shot.png"
    subprocess.run(base + [f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    assert shot.stat().st_size > 20_000  # a page with a figure, not a blank one
    keep = os.environ.get("VIRNUCFLOW_KEEP_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / (figure.replace("/", "_")))


def test_demo_tables_are_recognised_for_the_figures_warning(tmp_path):
    """Figures of demo runs say DEMO MODELS in their title (report.sample_figures): the test is the banner."""
    import pandas as pd

    from virnucflow.io.tables import has_demo_banner, write_tsv

    table = pd.DataFrame({"a": [1]})
    write_tsv(tmp_path / "demo.tsv", table, demo=True)
    write_tsv(tmp_path / "real.tsv", table)
    (tmp_path / "other.tsv").write_text("# a comment\na\n1\n")
    assert has_demo_banner(tmp_path / "demo.tsv")
    assert not has_demo_banner(tmp_path / "real.tsv") and not has_demo_banner(tmp_path / "other.tsv")
