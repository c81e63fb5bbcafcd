"""Fault injection: the whole workflow SIGKILLed at 11 points (a node crash, ``scancel``, the OOM
killer) over preprocessing, model checks, embedding, scoring, the NaN/Inf gate, prediction, merging
and reporting; then ``snakemake --unlock`` (a killed Snakemake leaves its lock: needed) and the same
command with ``--rerun-incomplete`` finish with outputs identical to an uninterrupted run's and no
temporary file left behind.

Long (about 8 minutes on 2 cores): not in ``make test``; run it with ``make test-long``.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from virnucflow.io.features import read_h5

from .conftest import REPO

pytestmark = [pytest.mark.long, pytest.mark.slow]

# Kill once this log file appears (the job has started), after a seeded random delay of up to 0.4 s.
KILL_AT = [
    "logs/demo_lambda/preprocess.log",
    "logs/models/esm2.log",
    "logs/batches/demo_controls/plan_shards.log",
    "logs/batches/demo_lambda/embed/1-of-1.log",
    "logs/batches/demo_controls/embed/1-of-1.log",
    "logs/batches/demo_lambda/score/1-of-1.log",
    "logs/batches/demo_lambda/nan_gate.log",
    "logs/demo_lambda/predict.log",
    "logs/demo_controls/merge.log",
    "logs/demo_lambda/report_sample.log",
    "logs/report_run.log",
]
# Outputs whose bytes must equal the uninterrupted run's (timings and figures aside).
SAME_BYTES = re.compile(r"results/(demo_\w+/(prediction_results\.txt|prediction_results_highestscore\.csv|summary\.tsv|"
                        r"windows\.(bed|tsv)|preprocess/.*|demo_\w+_merged\.pt)|batches/.*\.tsv)$")
TEMPORARY = re.compile(r"(^\..*\.tmp\d+$)|(^\.highest_runs\.)|(^\.selftest-)")


def _command(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--cores", "2", "--configfile", str(REPO / "config" / "demo.yaml"),
            "--config", f"samples={workdir / 's.tsv'}", *extra]


def _workdir(path: Path) -> Path:
    path.mkdir()
    demo = REPO / "resources" / "demo"
    (path / "s.tsv").write_text(f"sample\tfasta\ndemo_lambda\t{demo / 'lambda_contigs.fa'}\n"
                                f"demo_controls\t{demo / 'synthetic_controls.fa.gz'}\n")
    return path


def _outputs(workdir: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for p in sorted((workdir / "results").rglob("*")):
        rel = str(p.relative_to(workdir))
        if p.is_file() and SAME_BYTES.search(rel):
            out[rel] = p.read_bytes()
        elif p.suffix == ".h5":
            t = read_h5(p, dataset="features" if p.name == "features.h5" else "embeddings")
            out[rel] = (t.ids, t.index.tolist(), t.vectors.tobytes())
    return out


def _kill_when(workdir: Path, marker: str, delay: float) -> bool:
    """Start the run, SIGKILL its whole process group ``delay`` s after ``marker`` appears;
    False when the run finished first."""
    proc = subprocess.Popen(_command(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    while proc.poll() is None:
        if (workdir / marker).exists():
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    return False


def test_killed_anywhere_a_rerun_finishes_with_identical_outputs_and_no_leftovers(tmp_path):
    reference = _workdir(tmp_path / "reference")
    res = subprocess.run(_command(reference), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    expected = _outputs(reference)
    assert len(expected) > 20
    rng = random.Random(23)
    killed = 0
    for k, marker in enumerate(KILL_AT):
        wd = _workdir(tmp_path / f"kill{k}")
        killed += _kill_when(wd, marker, rng.uniform(0, 0.4))
        assert subprocess.run(_command(wd, "--unlock"), capture_output=True).returncode == 0
        res = subprocess.run(_command(wd, "--rerun-incomplete"), capture_output=True, text=True)
        assert res.returncode == 0, (marker, res.stderr[-3000:])
        got = _outputs(wd)
        assert sorted(got) == sorted(expected), marker
        for name, value in expected.items():
            assert got[name] == value, (marker, name)
        left = [str(p.relative_to(wd)) for p in wd.rglob("*")
                if TEMPORARY.search(p.name) and ".snakemake" not in p.parts]
        assert not left, (marker, left)
    assert killed >= 10, f"only {killed} of {len(KILL_AT)} runs were killed before they finished"
