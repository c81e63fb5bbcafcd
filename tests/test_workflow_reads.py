"""The workflow on reads: FASTA, FASTQ, gzip FASTQ under misleading names, paired mates."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from virnucflow.io.fasta import read_fasta

from .conftest import ORIGINAL
from .test_workflow import _l300, snakemake

pytestmark = pytest.mark.slow
OUTPUTS = ["preprocess/chunked.fa", "preprocess/identified_nucleotide.fa", "preprocess/identified_protein.faa",
           "preprocess/records.tsv", "prediction_results.txt", "prediction_results_highestscore.csv",
           "summary.tsv", "windows.bed", "windows.tsv"]


def _fastq(records) -> bytes:
    return "".join(f"@{r.description}\n{r.seq}\n+\n{'F' * len(r.seq)}\n" for r in records).encode()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("reads")
    records = list(read_fasta(ORIGINAL / "both_strands.fa"))
    (wd / "reads.fq").write_bytes(gzip.compress(_fastq(records)))  # gzip named .fq
    (wd / "reads.txt").write_bytes(_fastq(records))  # FASTQ named .txt
    half = len(records) // 2
    (wd / "r1.fq").write_text("".join(f"@pair{i}/1\n{r.seq}\n+\n{'F' * len(r.seq)}\n" for i, r in enumerate(records[:half])))
    (wd / "r2.fq.gz").write_bytes(gzip.compress("".join(
        f"@pair{i}/2\n{r.seq}\n+\n{'F' * len(r.seq)}\n" for i, r in enumerate(records[half:2 * half])).encode()))
    (wd / "samples.tsv").write_text(
        "sample\tfasta\tmate2\n"
        f"fasta\t{ORIGINAL / 'both_strands.fa'}\t\n"
        "gz_fq\treads.fq\t\nfastq_txt\treads.txt\t\n"
        "paired\tr1.fq\tr2.fq.gz\n"
    )
    res = snakemake(wd, config=["samples=samples.tsv", "chunk_length=300", "shards=2"], configfiles=[_l300(wd)])
    assert res.returncode == 0, res.stderr[-3000:]
    return wd


# plain FASTQ and FASTQ.gz under their usual names: tests/test_reads.py (preprocessing)
@pytest.mark.parametrize("sample", ["gz_fq", "fastq_txt"])
def test_fastq_gives_the_same_outputs_as_fasta(run, sample):
    for out in OUTPUTS:
        assert (run / "results" / sample / out).read_bytes() == (run / "results" / "fasta" / out).read_bytes(), out


def test_paired_reads_get_a_pair_call(run):
    rows = [line.split("\t") for line in (run / "results" / "paired" / "summary.tsv").read_text().splitlines()[1:]]
    assert rows[0][-2:] == ["pair", "pair_call"]
    body = rows[1:]
    n = len(body) // 2
    assert [r[0] for r in body] == [f"pair{i}/{m}" for i in range(n) for m in (1, 2)]
    for a, b in zip(body[::2], body[1::2]):
        viral = (a[8] == "virus") + (b[8] == "virus")
        called = {a[8], b[8]} <= {"virus", "non-viral"}
        assert a[-1] == b[-1] == ["neither" if called else "undetermined", "one", "both"][viral]


@pytest.mark.parametrize(
    "text,message",
    [
        ("@r1\nACGT\n+\nIIII\n@r2\nACGT\n", "reads.fq: record 'r2' (line 5) is truncated: the file ends inside it"),
        ("@r1\nACGT\n+\nIII\n", "reads.fq: record 'r1' (line 1): quality has 3 characters but the sequence has 4"),
        ("@r1\nACGT\nIIII\n@r2\n", "reads.fq: record 'r1' (line 1): line 3 should be the '+' separator, found 'IIII'"),
    ],
)
def test_bad_fastq_fails_with_one_line_and_leaves_nothing(tmp_path, text, message):
    (tmp_path / "reads.fq").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "s.tsv").write_text("sample\treads\nbad\treads.fq\n")
    res = snakemake(tmp_path, config=["samples=s.tsv"])
    assert res.returncode != 0
    assert f"virnucflow: error: {message}" in res.stderr
    results = tmp_path / "results" / "bad"
    assert not results.exists() or not [p for p in results.rglob("*") if p.is_file()]


def _frames(results: Path) -> int:
    return sum(1 for line in (results / "preprocess" / "identified_protein.faa").open() if line.startswith(">"))


def test_status_of_a_finished_run(run):
    from .conftest import run_cli

    res = run_cli("status", run)
    assert res.returncode == 0, res.stderr
    expected = []
    for sample in sorted(["fasta", "gz_fq", "fastq_txt", "paired"]):
        n = _frames(run / "results" / sample)
        # preprocess, plan, embed and score (one shard), gate, predict, merge (the demo writes features.h5)
        expected.append(f"{sample}: steps 7/7, dnabert_s frames {n}/{n}, esm2 frames {n}/{n}, finished")
    assert res.stdout.splitlines() == expected


def test_status_of_a_run_killed_mid_embedding(tmp_path):
    import os
    import signal
    import subprocess
    import time

    from .conftest import REPO, run_cli
    from .test_workflow import SNAKEMAKE

    (tmp_path / "s.tsv").write_text(f"sample\tfasta\nlam\t{ORIGINAL / 'lambda_pieces.fa'}\n")
    cmd = SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--cores", "1",
                       "--configfile", str(REPO / "config" / "demo.yaml"), "--config", "samples=s.tsv", "shards=3"]
    env = {k: v for k, v in os.environ.items() if k != "VIRNUCFLOW_PROGRESS_EVERY_S"}  # the default: every 30 s
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=env)
    emb = tmp_path / "results" / "batches" / "lam" / "embeddings"
    try:
        deadline = time.monotonic() + 300
        while not (emb / "dnabert_s" / "1-of-1.h5").exists():  # DNABERT-S done, ESM-2 running
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first embedding"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    batch = tmp_path / "results" / "batches" / "lam"
    esm2_done = (emb / "esm2" / "1-of-1.h5").exists()  # the tiny ESM-2 may have finished before the kill
    embedded = (batch / "embed" / "1-of-1.json").exists()
    scored = (batch / "scores" / "1-of-1.json").exists()
    assert not scored, "killed before the shard was scored"
    res = run_cli("status", tmp_path)
    assert res.returncode == 0, res.stderr
    total = _frames(tmp_path / "results" / "lam")
    # of: preprocess, the plan, embed and score of one shard, gate, predict (merge not begun)
    assert res.stdout.splitlines() == [
        f"lam: steps {2 + (esm2_done and embedded)}/6, dnabert_s frames {total}/{total}, "
        f"esm2 frames {total if esm2_done else 0}/{total}, ETA ?"]


def test_status_eta_of_a_run_killed_mid_embedding(tmp_path):
    """Progress lines every 0.5 s (VIRNUCFLOW_PROGRESS_EVERY_S, test/debug only): killed while an
    embedding job has logged progress, status prints the ETA of that job's last progress line."""
    import os
    import random
    import signal
    import subprocess
    import time

    from virnucflow.planning.progress import parse_progress

    from .conftest import REPO, run_cli
    from .test_workflow import SNAKEMAKE

    # G/C only: no stop codon in any of the six frames, so every 500 bp window gives 6 distinct frames
    rng = random.Random(12)
    (tmp_path / "gc.fa").write_text("".join(
        f">gc{i}\n" + "".join(rng.choice("GC") for _ in range(5000)) + "\n" for i in range(100)))
    (tmp_path / "s.tsv").write_text("sample\tfasta\ngc\tgc.fa\n")
    cmd = SNAKEMAKE + ["-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--cores", "1",
                       "--configfile", str(REPO / "config" / "demo.yaml"), "--config", "samples=s.tsv", "shards=3"]
    env = {**os.environ, "VIRNUCFLOW_PROGRESS_EVERY_S": "0.5"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env=env)
    res_dir, logs = tmp_path / "results" / "batches" / "gc", tmp_path / "logs" / "batches" / "gc"

    def running_with_progress():  # a job's model with a progress line and no embedding file yet
        return [(log, model) for log in logs.glob("embed/*.log") for model in ("dnabert_s", "esm2")
                if parse_progress(log.read_text(errors="replace"), model) is not None
                and not (res_dir / "embeddings" / model / f"{log.stem}.h5").exists()]

    try:
        deadline = time.monotonic() + 300
        while not running_with_progress():
            assert proc.poll() is None and time.monotonic() < deadline, "no progress line before the run ended"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    plan = [line.split("\t") for line in (res_dir / "shards.tsv").read_text().splitlines()[1:]]
    rows = {shard: int(stop) - int(first) for shard, _, first, stop, *_ in plan}
    total = sum(rows.values())
    assert total == 100 * 10 * 6 == _frames(tmp_path / "results" / "gc") and len(rows) == 2  # 6,000 frames
    n_done, frames, etas = 0, {}, []
    for model in ("dnabert_s", "esm2"):
        done = 0.0
        for item, n in rows.items():
            if (res_dir / "embeddings" / model / f"{item}.h5").exists():
                n_done, done = n_done + 1, done + n
            elif (logs / "embed" / f"{item}.log").exists():
                line = parse_progress((logs / "embed" / f"{item}.log").read_text(), model)
                if line is not None:
                    done += n * line.done / line.total
                    if line.eta_seconds is not None:
                        etas.append(line.eta_seconds)
        frames[model] = int(done)
    assert etas, "a running job's progress line has an ETA"
    eta = max(etas)  # the ETA status documents: the longest of the running jobs' last progress lines
    h, rest = divmod(round(eta), 3600)
    res = run_cli("status", tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        f"gc: steps {2 + n_done // 2}/8, dnabert_s frames {frames['dnabert_s']}/{total}, "
        f"esm2 frames {frames['esm2']}/{total}, ETA {h}:{rest // 60:02d}:{rest % 60:02d}"
    ]
    assert 0 < frames["dnabert_s"] + frames["esm2"] < 2 * total


def test_auto_shards_count_both_mates(run):
    """shards: auto counts the frames of FASTQ input, both mates of a pair: a paired sample with more frames
    than shard_frames only by its second mate is a batch of its own, not pooled with the next sample."""
    from .test_unusual_workflow import _jobs

    frames = {m: sum(1 for line in (run / "results" / "paired" / "preprocess" / "identified_protein.faa").open()
                     if line.startswith(">") and line.split("_chunk_")[0].endswith(f"/{m}")) for m in (1, 2)}
    assert min(frames.values()) > 0
    (run / "paired_first.tsv").write_text(f"sample\tfasta\tmate2\npaired\tr1.fq\tr2.fq.gz\nstrands\t{ORIGINAL / 'both_strands.fa'}\t\n")
    for per_shard, batches in ((frames[1] + frames[2], 1), (frames[1] + frames[2] + 1, 0)):
        res = snakemake(run, "-n", "--forceall", config=["samples=paired_first.tsv", "chunk_length=300",
                                                         "shards=auto", f"shard_frames={per_shard}"],
                        configfiles=[_l300(run)])
        assert res.returncode == 0, res.stderr[-2000:]
        # both mates reach shard_frames: two batches (paired alone, then strands); else one pooled batch
        assert _jobs(res)["plan_shards"] == 2 - (batches == 0), (per_shard, _jobs(res))


def test_status_names_a_failed_step(tmp_path):
    """A sample that failed in preprocessing has no results/ folder, only its log: status shows it,
    the step and the one-line error, beside a sample that finished."""
    from .conftest import run_cli

    (tmp_path / "bad.fq").write_text("@r1\nACGT\n+\nIII\n")
    (tmp_path / "s.tsv").write_text(f"sample\tfasta\nbad\tbad.fq\ngood\t{ORIGINAL / 'both_strands.fa'}\n")
    res = snakemake(tmp_path, "--keep-going", config=["samples=s.tsv", "chunk_length=300"],
                    configfiles=[_l300(tmp_path)])
    assert res.returncode != 0
    assert not (tmp_path / "results" / "bad").exists()
    status = run_cli("status", tmp_path)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == ("bad: steps 0/4+, dnabert_s frames ?/?, esm2 frames ?/?, FAILED in preprocess "
                        "(logs/bad/preprocess.log): virnucflow: error: bad.fq: record 'r1' (line 1): "
                        "quality has 3 characters but the sequence has 4")
    n = _frames(tmp_path / "results" / "good")
    assert lines[1:] == [f"good: steps 7/7, dnabert_s frames {n}/{n}, esm2 frames {n}/{n}, finished"]
