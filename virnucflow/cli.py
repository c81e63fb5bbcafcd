"""Command-line entry points: one subcommand per workflow step.

The Snakemake rules call these same functions (``workflow/scripts/*.py`` build
an argument list and call :func:`run_rule`), so a step behaves identically from
the workflow, the tests and the shell. A :class:`VirNucFlowError` ends the
command with one line ``virnucflow: error: <message>`` and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from . import __version__
from .errors import VirNucFlowError

log = logging.getLogger("virnucflow")


def _setup_logging(log_file: str | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a"))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    root = logging.getLogger("virnucflow")
    root.handlers.clear()
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    root.setLevel(logging.INFO)
    root.propagate = False


# --------------------------------------------------------------------------- steps


def cmd_preprocess(a: argparse.Namespace) -> None:
    from .preprocess import preprocess

    t0 = time.perf_counter()
    stats = preprocess(a.fasta, a.chunk_length, a.chunked, a.nucleotide, a.protein, a.records)
    dt = time.perf_counter() - t0
    log.info(
        "%s: %d records, %d bases -> %d windows of %d bp, %d frames kept (%.1f s, %.0f records/s)",
        a.fasta, stats.records, stats.bases, stats.chunks, a.chunk_length, stats.frames, dt,
        stats.records / dt if dt > 0 else float("nan"),
    )


def cmd_shard(a: argparse.Namespace) -> None:
    from .shard import write_shards

    counts = write_shards(a.nucleotide, a.protein, a.out)
    log.info("wrote %d shards with %s frames", len(counts), counts)


def cmd_check_models(a: argparse.Namespace) -> None:
    from .models.acquire import check_models

    manifest = check_models(a.esm2, a.dnabert_s, a.classifier, a.out, allow_download=a.download)
    for kind, entry in manifest.items():
        log.info("%s: %s (%s)", kind, entry["path"], entry["description"])


def cmd_embed(a: argparse.Namespace) -> None:
    from .engine import EmbedOptions, embed_shard

    opts = EmbedOptions(
        precision=a.precision,
        packing=a.packing,
        attention=a.attention,
        token_budget=a.token_budget,
        device=a.device,
        dedup=a.dedup,
        threads=a.threads,
    )
    embed_shard(a.model, a.models_json, a.shard, a.out, opts)


def cmd_merge(a: argparse.Namespace) -> None:
    from .features import merge_features

    attrs = json.loads(a.attrs) if a.attrs else {}
    table = merge_features(a.dnabert, a.esm, a.out, attrs=attrs, merged_pt=a.merged_pt)
    log.info("merged %d frames into %s (%d features each)", len(table.ids), a.out, table.vectors.shape[1])


def cmd_predict(a: argparse.Namespace) -> None:
    from .predict import predict_sample

    predict_sample(a.features, a.models_json, a.records, a.predictions, a.highest, a.summary)


def cmd_export_merged_pt(a: argparse.Namespace) -> None:
    from .features import export_merged_pt, read_table

    export_merged_pt(read_table(a.features, dataset="features"), a.out)


def cmd_build_demo(a: argparse.Namespace) -> None:
    from .demo import build_demo_models

    build_demo_models(a.esm2, a.dnabert_s, a.classifier, seed=a.seed)


def cmd_aggregate(a: argparse.Namespace) -> None:
    from .predict import write_highest_scores

    write_highest_scores(a.predictions, a.out)


# --------------------------------------------------------------------------- parser


def _bool(text: str) -> bool:
    if text.lower() in {"1", "true", "yes", "on"}:
        return True
    if text.lower() in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="virnucflow", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"virnucflow {__version__}")
    p.add_argument("--log", help="also append log messages to this file")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("preprocess", help="chunk, translate and filter one FASTA file (the original's outputs)")
    s.add_argument("--fasta", required=True)
    s.add_argument("--chunk-length", type=int, required=True)
    s.add_argument("--chunked", required=True)
    s.add_argument("--nucleotide", required=True)
    s.add_argument("--protein", required=True)
    s.add_argument("--records")
    s.set_defaults(func=cmd_preprocess)

    s = sub.add_parser("shard", help="split identified frames into token-balanced shards")
    s.add_argument("--nucleotide", required=True)
    s.add_argument("--protein", required=True)
    s.add_argument("--out", nargs="+", required=True)
    s.set_defaults(func=cmd_shard)

    s = sub.add_parser("check-models", help="resolve, fetch and validate the three model files")
    s.add_argument("--esm2", required=True)
    s.add_argument("--dnabert-s", required=True)
    s.add_argument("--classifier", required=True)
    s.add_argument("--download", type=_bool, default=True)
    s.add_argument("--out", required=True, help="JSON manifest of resolved model paths")
    s.set_defaults(func=cmd_check_models)

    s = sub.add_parser("embed", help="embed one shard with DNABERT-S or ESM-2")
    s.add_argument("--model", choices=["dnabert_s", "esm2"], required=True)
    s.add_argument("--models-json", required=True)
    s.add_argument("--shard", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--precision", default="fp16", choices=["fp16", "bf16", "fp32"])
    s.add_argument("--packing", type=_bool, default=True)
    s.add_argument("--attention", default="auto")
    s.add_argument("--token-budget", default="auto")
    s.add_argument("--device", default="auto")
    s.add_argument("--dedup", type=_bool, default=True)
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_embed)

    s = sub.add_parser("merge", help="join per-shard embeddings into features.h5")
    s.add_argument("--dnabert", nargs="+", required=True)
    s.add_argument("--esm", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--merged-pt")
    s.add_argument("--attrs", help="JSON object of attributes to store")
    s.set_defaults(func=cmd_merge)

    s = sub.add_parser("predict", help="score features with the VirNucPro classifier")
    s.add_argument("--features", required=True)
    s.add_argument("--models-json", required=True)
    s.add_argument("--records", required=True)
    s.add_argument("--predictions", required=True)
    s.add_argument("--highest", required=True)
    s.add_argument("--summary", required=True)
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("export-merged-pt", help="features.h5 -> the original's _merged.pt")
    s.add_argument("--features", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_export_merged_pt)

    s = sub.add_parser("aggregate", help="prediction_results.txt -> prediction_results_highestscore.csv")
    s.add_argument("--predictions", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_aggregate)

    s = sub.add_parser("build-demo-models", help="write tiny random demo models in the real file formats")
    s.add_argument("--esm2", required=True)
    s.add_argument("--dnabert-s", required=True)
    s.add_argument("--classifier", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_build_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log)
    try:
        args.func(args)
    except VirNucFlowError as exc:
        msg = " ".join(str(exc).split())
        log.debug("failed", exc_info=True)
        print(f"virnucflow: error: {msg}", file=sys.stderr)
        if args.log:
            with open(args.log, "a") as f:
                f.write(f"virnucflow: error: {msg}\n")
        return 1
    except MemoryError:
        print("virnucflow: error: out of host memory", file=sys.stderr)
        return 1
    return 0


def run_rule(argv: Sequence[str], log_file: str | None) -> None:
    """Entry point for ``workflow/scripts``: run a step, exit non-zero on failure."""
    argv = list(map(str, argv))
    if log_file:
        argv = ["--log", str(log_file)] + argv
    code = main(argv)
    if code:
        sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
