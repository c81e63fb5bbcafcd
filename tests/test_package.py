"""Where bioinformaticians find and deploy workflows: the catalog's layout, formatting and lint, use as
a Snakemake module from another directory, and a plain (non-editable) ``pip install``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from virnucflow import __version__

from .conftest import REPO

SNAKEFILES = [REPO / "Snakefile", REPO / "workflow" / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
OUTPUTS = ["prediction_results.txt", "prediction_results_highestscore.csv", "summary.tsv", "windows.bed", "windows.tsv"]


def test_catalog_layout():
    assert (REPO / "workflow" / "Snakefile").is_file()
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    assert set(catalog["usage"]) == {"mandatory-flags", "software-stack-deployment", "report"}
    assert catalog["usage"]["mandatory-flags"]["flags"].startswith("--configfile ")
    assert catalog["usage"]["software-stack-deployment"]["conda"] is True
    assert (REPO / "config" / "README.md").is_file() and (REPO / "config" / "config.yaml").is_file()
    readme = (REPO / "README.md").read_text().lower()
    assert "snakemake" in readme and "workflow" in readme


def test_snakefmt_clean():
    """The catalog's formatting badge; snakefmt is pinned in the test extras."""
    res = subprocess.run([sys.executable, "-m", "snakefmt", "--check", *map(str, SNAKEFILES)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_snakemake_lint_clean():
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", REPO / "workflow" / "Snakefile", "--directory", REPO,
                          "--lint", "--configfile", REPO / "config" / "demo.yaml"], capture_output=True, text=True)
    assert res.returncode == 0 and "Congratulations, your workflow is in a good condition!" in res.stdout + res.stderr, \
        res.stdout + res.stderr


def test_the_rule_environment_installs_this_version():
    env = yaml.safe_load((REPO / "envs" / "virnucflow.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == [f"virnucflow=={__version__}"]
    assert re.search(rf"^## {re.escape(__version__)} ", (REPO / "CHANGELOG.md").read_text(), re.M)


def _demo_dir(path: Path) -> Path:
    res = subprocess.run([sys.executable, "-m", "virnucflow", "init-demo", path], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return path


def _same_outputs(a: Path, b: Path) -> None:
    for sample in ("demo_lambda", "demo_controls"):
        for name in OUTPUTS:
            assert (a / "results" / sample / name).read_bytes() == (b / "results" / sample / name).read_bytes(), \
                (sample, name)


@pytest.mark.long
def test_used_as_a_module_from_another_directory_the_demo_gives_the_plain_runs_outputs(tmp_path):
    plain = _demo_dir(tmp_path / "plain")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", REPO / "workflow" / "Snakefile", "--cores", "2",
                          "--configfile", "config/demo.yaml"], cwd=plain, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    deployed = _demo_dir(tmp_path / "deployed")
    shutil.rmtree(deployed / "profiles")  # the deploying user's own settings only
    (deployed / "Snakefile").write_text(
        'configfile: "config/demo.yaml"\n\n\n'
        f'module virnucflow:\n    snakefile:\n        "{REPO / "workflow" / "Snakefile"}"\n    config:\n        config\n\n\n'
        "use rule * from virnucflow\n")
    res = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2"], cwd=deployed, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    _same_outputs(plain, deployed)


@pytest.mark.long
def test_a_plain_pip_install_runs_the_demo_outside_the_checkout(tmp_path):
    """``pip install .`` (a wheel, not editable) into a fresh virtual environment: the workflow's files
    come from the installed package; nothing is read from the checkout."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    torch = f"torch=={__import__('torch').__version__.split('+')[0]}"
    subprocess.run(pip + [torch], check=True)
    subprocess.run(pip + [str(REPO)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    run = _demo_dir(tmp_path / "demo")

    def tool(*args, cwd=run):
        return subprocess.run([str(venv / "bin" / args[0]), *map(str, args[1:])], cwd=cwd, env=env, capture_output=True,
                              text=True)

    assert tool("virnucflow", "--version").stdout.strip() == f"virnucflow {__version__}"
    snakefile = Path(tool("virnucflow", "snakefile").stdout.strip())
    assert snakefile.is_file() and str(venv) in str(snakefile) and str(REPO) not in str(snakefile)
    res = tool("snakemake", "-s", snakefile, "--cores", "2", "--configfile", "config/demo.yaml")
    assert res.returncode == 0, res.stderr[-3000:]
    checkout = _demo_dir(tmp_path / "checkout")
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", REPO / "workflow" / "Snakefile", "--cores", "2",
                          "--configfile", "config/demo.yaml"], cwd=checkout, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    _same_outputs(run, checkout)
