"""`snakemake --report` on a demo run, rendered in headless Chromium.

Chromium is installed with apt-get where it is missing and we are root (CI: a
fresh Debian 12 machine); the test is skipped only where that cannot be done.
Each figure is opened the way a click does (the report app's own
``app.setView``) and must render as a non-empty image.
"""

from __future__ import annotations

import base64
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
FIGURES = ["results/lam/report/calls.png", "results/run/rule_times.png"]


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
    wd = tmp_path_factory.mktemp("report")
    (wd / "s.tsv").write_text(f"sample\tfasta\nlam\t{ORIGINAL / 'lambda_pieces.fa'}\n")
    config = ["samples=s.tsv", "shards=2"]
    res = snakemake(wd, config=config)
    assert res.returncode == 0, res.stderr[-3000:]
    res = snakemake(wd, "--report", "report.html", config=config)
    assert res.returncode == 0, res.stderr[-3000:]
    return wd


def test_report_has_every_section(report):
    html = (report / "report.html").read_text()
    results = json.loads(re.search(r"var results = (\{.*?\});\n", html, re.S).group(1))
    for key in FIGURES + ["results/run/embedding_jobs.tsv", "results/lam/summary.tsv"]:
        assert key in results, key
        assert results[key]["caption"].strip()
    jobs = (report / "results" / "run" / "embedding_jobs.tsv").read_text().splitlines()
    assert jobs[0].split("\t") == ["sample", "model", "shard", "frames", "unique", "dedup_saving", "tokens",
                                   "tokens_per_second", "wall_s", "precision", "attention", "device", "model_spec"]
    assert len(jobs) == 1 + 4


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
