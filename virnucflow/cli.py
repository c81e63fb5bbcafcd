"""``virnucflow``: the workflow's steps as commands, for people.

A thin layer over the same library functions the Snakemake rules call
(``workflow/scripts/*.py``); option defaults come from the config schema. A
:class:`~virnucflow.errors.VirNucFlowError` ends the command with one line
``virnucflow: error: <message>`` and exit status 1.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from virnucflow import __version__
from virnucflow.planning.config import schema_defaults
from virnucflow.models.registry import embedding_models, model_kinds, names
from virnucflow.planning.step import cli_step


def _preprocess(a: argparse.Namespace) -> None:
    from virnucflow.steps.preprocess import preprocess

    preprocess(a.fasta, a.chunk_length, a.chunked, a.nucleotide, a.protein, a.records, a.source, mate2=a.mate2,
               threads=a.threads)


def _plan_shards(a: argparse.Namespace) -> None:
    from virnucflow.steps.shard import plan_shards

    names = a.sample or [f"sample{k + 1}" for k in range(len(a.nucleotide))]
    if not len(names) == len(a.nucleotide) == len(a.protein):
        from virnucflow.errors import InputError

        raise InputError("plan-shards: give one --nucleotide, --protein (and --sample) file per sample")
    plan_shards(names, dict(zip(names, zip(a.nucleotide, a.protein))), a.shards, a.out)


def _score(a: argparse.Namespace) -> None:
    from virnucflow.steps.score import score_shard

    score_shard(_per_model(a), a.classifier, a.scores, a.info)


def _check_models(a: argparse.Namespace) -> None:
    from virnucflow.models.manifest import check_models

    check_models({**_per_model(a), "classifier": a.classifier, "download": a.download}, a.out)


def _check_model(a: argparse.Namespace) -> None:
    from virnucflow.models.manifest import check_model

    others = {m: p for m, p in _per_model(a, "_json").items() if p} or None
    check_model(a.kind, a.spec, a.out, allow_download=a.download, others=others)


def _embed(a: argparse.Namespace) -> None:
    from virnucflow.engine import EmbedOptions
    from virnucflow.steps.embed import embed_shard

    options = EmbedOptions(precision=a.precision, packing=a.packing, attention=a.attention, token_budget=a.token_budget,
                           device=a.device, dedup=a.dedup, fp16_on_cpu=a.fp16_on_cpu, threads=a.threads,
                           fused=a.fused)
    embed_shard(a.model, a.models_json, a.shard, a.out, options, nonfinite_out=a.nonfinite)


def _merge(a: argparse.Namespace) -> None:
    from virnucflow.io.features import merge_features

    attrs = {k: v for k, v in (("chunk_length", a.chunk_length), ("sample", a.sample)) if v is not None}
    merge_features(_per_model(a), a.out, attrs=attrs)


def _predict(a: argparse.Namespace) -> None:
    from virnucflow.steps.calling import resolve_calling
    from virnucflow.steps.predict import predict_sample

    calling = resolve_calling({"preset": a.preset, "min_viral_fraction": a.min_viral_fraction,
                               "min_windows": a.min_windows})
    predict_sample(_per_model(a), a.models_json, a.records, a.predictions, a.highest, a.summary, **calling)


def _export_merged_pt(a: argparse.Namespace) -> None:
    from virnucflow.io.features import export_merged_pt, read_h5

    export_merged_pt(read_h5(a.features, dataset="features"), a.out)


def _build_demo_models(a: argparse.Namespace) -> None:
    from virnucflow.steps.demo import build_demo_models

    build_demo_models({**_per_model(a), "classifier": a.classifier}, seed=a.seed)


def _status(a: argparse.Namespace) -> None:
    from virnucflow.planning.status import run_status, status_json

    samples, record = run_status(a.dir)
    if a.json:
        import json

        print(json.dumps(status_json(samples, record), indent=1))
        return
    for sample in samples:
        print(sample.line())
    for line in record.lines():
        print(line)


def _outputs(a: argparse.Namespace) -> None:
    """Each sample's output files, and where the logs are."""
    from pathlib import Path

    from virnucflow.io.tables import has_demo_banner

    root = Path(a.results)
    names = ["prediction_results.txt", "prediction_results_highestscore.csv", "summary.tsv", "windows.bed",
             "windows.tsv", "features.h5", "{sample}_merged.pt"]
    summaries = sorted(root.glob("*/summary.tsv"))
    if any(has_demo_banner(s) for s in summaries):
        print("DEMO MODELS (random weights): the calls mean nothing")
    for summary in summaries:
        d = summary.parent
        print(f"{d}/: {', '.join(n.format(sample=d.name) for n in names if (d / n.format(sample=d.name)).exists())}")
    print("logs: logs/   per-rule time and memory: logs/benchmarks/   HTML report: snakemake --report report.html")


def _install_profile(a: argparse.Namespace) -> None:
    from virnucflow.planning.profiles import install_profile

    print(f"installed the {a.name} profile in {install_profile(a.name, force=a.force)}: snakemake --profile {a.name}")


def _selftest(a: argparse.Namespace) -> None:
    import tempfile

    from virnucflow.planning.checks import classifier_chunk_length
    from virnucflow.planning.config import load_config
    from virnucflow.planning.gpu import use_compile_cache
    from virnucflow.models.manifest import check_models
    from virnucflow.steps.selftest import check_verdict, lines, selftest

    config = load_config(a.configfile)
    models = config["models"]
    classifier_chunk_length(models["classifier"], models.get("classifier_chunk_length"), config["chunk_length"])
    use_compile_cache(config["compile_cache"])
    with tempfile.TemporaryDirectory(prefix="virnucflow-selftest-") as tmp:
        manifest = f"{tmp}/models.json"
        check_models(models, manifest)
        table = selftest(config, manifest, a.out, reference=a.reference, threads=a.threads)
    print("\n".join(lines(table)), flush=True)
    check_verdict(table, a.out)


def _snakefile(a: argparse.Namespace) -> None:
    from virnucflow.layout import snakefile

    print(snakefile())


def _init_demo(a: argparse.Namespace) -> None:
    """The demo's config, sample sheet, inputs and workflow profile, copied into a working directory."""
    import shutil
    from pathlib import Path

    from virnucflow.errors import OutputError
    from virnucflow.layout import share

    root, dest = share(), Path(a.dir)
    files = ["config/demo.yaml", "config/demo_samples.tsv", "profiles/default/profile.yaml",
             *(str(p.relative_to(root)) for p in sorted((root / "resources" / "demo").iterdir()) if p.name.endswith((".fa", ".fa.gz")))]
    clash = [f for f in files if (dest / f).exists()]
    if clash and not a.force:
        raise OutputError(f"{dest / clash[0]}: exists; give --force to overwrite the demo's files")
    for f in files:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / f, dest / f)
    print(f"demo in {dest}: cd {dest} && snakemake -s {share() / 'workflow' / 'Snakefile'} "
          "--configfile config/demo.yaml --cores 2")


def _per_model(a: argparse.Namespace, suffix: str = "") -> dict:
    """The per-model options (``--esm2``, ``--dnabert-s``, ...) as model name -> value, in feature order."""
    return {m: getattr(a, m + suffix.replace("-", "_")) for m in names()}


def _model_options(s: argparse.ArgumentParser, help: str, suffix: str = "", defaults: dict | None = None,
                   **kwargs) -> None:
    """One option per embedding model (``--esm2``, ``--dnabert-s``, ...; virnucflow.models.registry)."""
    for spec in embedding_models():
        if defaults is not None:
            kwargs["default"] = defaults.get(spec.name)
        s.add_argument(f"--{spec.name.replace('_', '-')}{suffix}", help=help.format(label=spec.label), **kwargs)


def _token_budget(text: str) -> int | str:
    return text if text == "auto" else int(text)


def build_parser() -> argparse.ArgumentParser:
    defaults = schema_defaults()
    models, emb = defaults["models"], defaults["embedding"]
    p = argparse.ArgumentParser(prog="virnucflow", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"virnucflow {__version__}")
    p.add_argument("--log", help="also append log messages to this file")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("preprocess", help="chunk, translate and filter one FASTA file (the original's outputs)")
    s.add_argument("--fasta", required=True)
    s.add_argument("--chunk-length", type=int, default=defaults["chunk_length"])
    s.add_argument("--chunked", required=True)
    s.add_argument("--nucleotide", required=True)
    s.add_argument("--protein", required=True)
    s.add_argument("--records")
    s.add_argument("--source", help="JSON: the input's size and hash")
    s.add_argument("--mate2", help="second file of paired reads (mate 2)")
    s.add_argument("--threads", type=int, default=1, help="processes translating the records (the outputs do not depend on it)")
    s.set_defaults(func=_preprocess)

    s = sub.add_parser("plan-shards", help="plan token-balanced shards over samples' identified frames")
    s.add_argument("--nucleotide", nargs="+", required=True, help="identified_nucleotide.fa per sample")
    s.add_argument("--protein", nargs="+", required=True, help="identified_protein.faa per sample")
    s.add_argument("--sample", nargs="+", help="sample names (default sample1, sample2, ...)")
    s.add_argument("--shards", type=int, default=1)
    s.add_argument("--out", required=True, help="the plan (TSV)")
    s.set_defaults(func=_plan_shards)

    s = sub.add_parser("score", help="score one shard's embedding files with the VirNucPro classifier")
    _model_options(s, "{label} embedding file of the shard", required=True)
    s.add_argument("--classifier", required=True, help="classifier .pth or its manifest (JSON)")
    s.add_argument("--scores", required=True)
    s.add_argument("--info", required=True)
    s.set_defaults(func=_score)

    s = sub.add_parser("check-models", help="resolve, fetch and validate the three model files")
    _model_options(s, "{label}: a path or a published name", defaults=models)
    s.add_argument("--classifier", default=models["classifier"])
    s.add_argument("--download", action=argparse.BooleanOptionalAction, default=models["download"])
    s.add_argument("--out", required=True, help="JSON manifest of resolved model paths")
    s.set_defaults(func=_check_models)

    s = sub.add_parser("check-model", help="resolve, fetch and validate one model file")
    s.add_argument("--kind", choices=model_kinds(), required=True)
    s.add_argument("--spec", required=True)
    s.add_argument("--download", action=argparse.BooleanOptionalAction, default=models["download"])
    _model_options(s, "classifier only: the {label} manifest, to check the feature width", suffix="-json")
    s.add_argument("--out", required=True, help="JSON manifest of the resolved model")
    s.set_defaults(func=_check_model)

    s = sub.add_parser("embed", help="embed one shard with one model of the manifest")
    s.add_argument("--model", required=True, choices=names())
    s.add_argument("--models-json", required=True)
    s.add_argument("--shard", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--precision", default=emb["precision"])
    s.add_argument("--packing", action=argparse.BooleanOptionalAction, default=emb["packing"])
    s.add_argument("--attention", default=emb["attention"])
    s.add_argument("--fused", action=argparse.BooleanOptionalAction, default=emb["fused"],
                   help="ESM-2's fused kernels (--no-fused: the unfused reference kernels)")
    s.add_argument("--token-budget", type=_token_budget, default=emb["token_budget"])
    s.add_argument("--device", default=emb["device"])
    s.add_argument("--dedup", action=argparse.BooleanOptionalAction, default=emb["dedup"])
    s.add_argument("--fp16-on-cpu", action=argparse.BooleanOptionalAction, default=emb["fp16_on_cpu"])
    s.add_argument("--nonfinite", help="TSV of the frames recomputed in FP32 (the NaN/Inf gate's record)")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=_embed)

    s = sub.add_parser("merge", help="join per-shard embeddings into features.h5")
    _model_options(s, "the sample's {label} embedding files (all shards)", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--chunk-length", type=int)
    s.add_argument("--sample")
    s.set_defaults(func=_merge)

    s = sub.add_parser("predict", help="score a sample's embeddings with the VirNucPro classifier")
    _model_options(s, "the sample's {label} embedding files (all shards)", nargs="+", required=True)
    s.add_argument("--models-json", required=True)
    s.add_argument("--records", required=True)
    s.add_argument("--predictions", required=True)
    s.add_argument("--highest", required=True)
    s.add_argument("--summary", required=True)
    s.add_argument("--preset", default=defaults["calling"]["preset"], help="calling preset (see config/README.md)")
    s.add_argument("--min-viral-fraction", type=float, help="overrides the preset's value")
    s.add_argument("--min-windows", type=int, help="overrides the preset's value")
    s.set_defaults(func=_predict)

    s = sub.add_parser("export-merged-pt", help="features.h5 -> the original's _merged.pt")
    s.add_argument("--features", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=_export_merged_pt)

    s = sub.add_parser("status", help="per sample: steps done, frames embedded per model, ETA")
    s.add_argument("dir", nargs="?", default=".", help="working directory (default: the current one)")
    s.add_argument("--json", action="store_true", help="the same as JSON (per sample and the last run's record)")
    s.set_defaults(func=_status)

    s = sub.add_parser("outputs", help="list each sample's output files (after a run)")
    s.add_argument("results", nargs="?", default="results", help="the results folder (default: results)")
    s.set_defaults(func=_outputs)

    s = sub.add_parser("build-demo-models", help="write tiny random demo models in the real file formats")
    _model_options(s, "where to write the demo {label}", required=True)
    s.add_argument("--classifier", required=True)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_build_demo_models)

    s = sub.add_parser("selftest", help="this installation with your models against the original VirNucPro's outputs")
    s.add_argument("--configfile", default="config/config.yaml", help="the config a run takes (its models, "
                   "chunk_length, embedding and selftest sections)")
    s.add_argument("--reference", help="a directory in the original's layout (default: selftest.reference, "
                   "the bundled one)")
    s.add_argument("--out", default="results/selftest/selftest.tsv", help="the table of checks")
    s.add_argument("--threads", type=int, default=4, help="CPU threads (when the models run on the CPU)")
    s.set_defaults(func=_selftest)

    s = sub.add_parser("snakefile", help="print the path of the installed workflow's Snakefile (snakemake -s ...)")
    s.set_defaults(func=_snakefile)

    s = sub.add_parser("init-demo", help="copy the demo's config, samples, inputs and profile into a directory")
    s.add_argument("dir", nargs="?", default=".")
    s.add_argument("--force", action="store_true", help="overwrite the demo's files there")
    s.set_defaults(func=_init_demo)

    s = sub.add_parser("install-profile", help="install the project's SLURM profile as your `snakemake --profile slurm`")
    s.add_argument("name", choices=["slurm"])
    s.add_argument("--force", action="store_true", help="replace a profile of that name")
    s.set_defaults(func=_install_profile)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with cli_step(args.log):
        args.func(args)
    return 0
