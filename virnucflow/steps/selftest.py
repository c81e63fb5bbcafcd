"""``virnucflow selftest``: this installation, with the configured models, against the original VirNucPro.

A reference directory holds cases in the original's layout: per case ``NAME.fa`` and any of
``NAME_chunked{L}.fa``, ``NAME_identified_nucleotide.fa``, ``NAME_identified_protein.faa``
(preprocessing), ``NAME_output_1_DNABERT_S.pt``, ``NAME_output_1_ESM.pt`` (pooled embeddings),
``NAME_prediction_results.txt`` and ``NAME_prediction_results_highestscore.csv`` (predictions),
and optionally ``reference.yaml`` (its chunk length; the models it needs). The bundled one
(:data:`BUNDLED`) is what the original wrote for two inputs with the published models; a lab can
keep its own, made with its own models.

All cases go through the production path together: the workflow's own preprocessing, shard plan,
embedding job (the configured precision, packing and attention), scoring and gathering functions;
with ``selftest.fp32`` again on the FP32 reference path (FP32, padded batches, math attention).
One row per case, check and path (:data:`COLUMNS`):

- ``preprocess_windows``, ``preprocess_nucleotide``, ``preprocess_protein``: byte for byte;
- ``embedding_dnabert_s``, ``embedding_esm2``: every frame's pooled vector against the reference's
  (matched by frame ID). A path that ran in FP32: minimum cosine >= ``selftest.fp32_min_cosine``
  and max abs difference <= ``selftest.fp32_max_abs_diff``; FP16/BF16/FP8: the ``fp32_compare``
  thresholds (minimum pooled cosine, mean abs difference, relative std difference);
- ``predictions``: ``prediction_results.txt``'s frame IDs, order and calls identical, scores within
  ``selftest.fp32_max_score_diff`` (FP32) or ``selftest.max_score_diff``;
- ``calls``: ``prediction_results_highestscore.csv``'s windows and calls identical.

Against a reference that needs the published models (its ``reference.yaml`` says which), the
embedding and prediction checks are SKIP when the configured models are not those (a demo model,
another architecture), never PASS. Reference ``.pt`` files are read weights-only: a pickle that
would run code is refused before anything runs.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import yaml

from virnucflow.errors import InputError, short
from virnucflow.models.registry import embedding_models, names

log = logging.getLogger("virnucflow")

BUNDLED = Path(__file__).resolve().parents[1] / "data" / "selftest"
COLUMNS = ["case", "check", "path", "result", "measured", "tolerance", "detail"]
#: The original's per-model files (virnucflow.models.registry): their file names, the ID list's key and,
#: for a dict per frame, the key of its vector (else each frame's vector is a tensor).
PT_LAYOUT = {spec.name: spec.original_pt for spec in embedding_models() if spec.original_pt}
CASE_FILES = {
    "nucleotide": "{case}_identified_nucleotide.fa",
    "protein": "{case}_identified_protein.faa",
    **{name: pattern for name, (pattern, _, _) in PT_LAYOUT.items()},
    "predictions": "{case}_prediction_results.txt",
    "highest": "{case}_prediction_results_highestscore.csv",
}
WINDOWS = re.compile(r"^(?P<case>.+)_chunked(?P<length>[0-9]+)\.fa$")


@dataclass
class Case:
    name: str
    fasta: Path
    files: dict[str, Path] = field(default_factory=dict)  # the reference files present, by CASE_FILES key
    chunk_length: int | None = None  # from NAME_chunked{L}.fa


def find_cases(directory: str | os.PathLike) -> tuple[list[Case], dict]:
    """The cases of a reference directory and its ``reference.yaml`` (empty when absent)."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError(f"{d}: reference directory not found")
    names = sorted(p.name for p in d.iterdir() if p.is_file())
    windows = {m["case"]: (d / n, int(m["length"])) for n in names if (m := WINDOWS.match(n))}
    cases = []
    for n in names:
        if not n.endswith(".fa") or WINDOWS.match(n) or n.endswith("_identified_nucleotide.fa"):
            continue
        case = Case(n[:-3], d / n)
        case.files = {k: d / p.format(case=case.name) for k, p in CASE_FILES.items() if (d / p.format(case=case.name)).is_file()}
        if case.name in windows:
            case.files["windows"], case.chunk_length = windows[case.name]
        cases.append(case)
    if not cases:
        raise InputError(f"{d}: no reference cases: expected NAME.fa with NAME_identified_nucleotide.fa, "
                         "NAME_output_1_ESM.pt, ... (the original VirNucPro's file names)")
    meta = {}
    if (d / "reference.yaml").is_file():
        meta = yaml.safe_load((d / "reference.yaml").read_text()) or {}
        if not isinstance(meta, dict):
            raise InputError(f"{d / 'reference.yaml'}: expected a mapping (chunk_length, published_models)")
    return cases, meta


def read_reference_vectors(path: str | os.PathLike, kind: str) -> dict[str, np.ndarray]:
    """Frame ID -> pooled vector from the original's ``*_output_1_DNABERT_S.pt`` or ``*_output_1_ESM.pt``,
    loaded weights-only (dicts, lists, strings, numbers and tensors; nothing that runs code)."""
    import torch

    _, key, field_name = PT_LAYOUT[kind]
    holds = f"a dict with {field_name}" if field_name else "a tensor"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(f"{path}: refused to load: the pickle asks for more than lists of tensors and strings "
                         f"(it could run code): {short(exc, 200)}") from None
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise InputError(f"{path}: truncated or not a PyTorch file ({short(exc, 200)})") from None
    try:
        ids, data = obj[key], obj["data"]
        if field_name:
            vectors = [np.asarray(d[field_name], dtype=np.float32).ravel() for d in data]
        else:
            vectors = [t.detach().float().numpy().ravel() for t in data]
        if len(ids) != len(vectors) or not all(isinstance(i, str) for i in ids) or len({v.shape for v in vectors}) > 1:
            raise ValueError
    except (KeyError, TypeError, AttributeError, ValueError, IndexError):
        raise InputError(f"{path}: not the original's {kind} file: expected {{'{key}': [frame IDs], "
                         f"'data': [one vector per ID, each {holds}]}}") from None
    return dict(zip(ids, vectors))


def unpublished(manifest: Mapping, meta: Mapping) -> str | None:
    """Why the configured models are not the ones a reference needs (None: they are, or it needs none)."""
    for kind, facts in (meta.get("published_models") or {}).items():
        entry = manifest[kind]
        label = f"models.{kind} ({entry['spec']})"
        if entry.get("demo"):
            return f"{label} is a demo model (its file says so)"
        for key, value in facts.items():
            have = entry.get("dim") if key == "dim" else (entry.get("config") or {}).get(key)
            if key != "name" and have != value:
                return f"{label} has {key} {have}; the published {facts.get('name', kind)} has {value}"
    return None


# --------------------------------------------------------------------------- comparisons


def compare_bytes(ours: Path, theirs: Path) -> tuple[bool, str, str]:
    a, b = ours.read_bytes(), theirs.read_bytes()
    if a == b:
        return True, f"identical ({len(a)} bytes)", ""
    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    la, lb = a.splitlines(), b.splitlines()
    lines = sum(x != y for x, y in zip(la, lb)) + abs(len(la) - len(lb))
    line = a[:k].count(b"\n") + 1
    return (False, f"{lines} of {max(len(la), len(lb))} lines differ ({len(a)} vs {len(b)} bytes)",
            f"first difference at byte {k} (line {line}): ours {a[k:k + 24]!r}, reference {b[k:k + 24]!r}")


def compare_vectors(ids: list[str], vectors: np.ndarray, reference: Mapping[str, np.ndarray]) -> dict | str:
    """Per-frame metrics of our pooled vectors against the reference's, or why they cannot be compared."""
    if set(ids) != set(reference):
        missing, extra = sorted(set(ids) - set(reference)), sorted(set(reference) - set(ids))
        return (f"frame IDs differ: {len(missing)} of ours not in the reference (first: {missing[:3]}), "
                f"{len(extra)} of the reference's not ours (first: {extra[:3]})")
    if not ids:
        return {"frames": 0, "min_cosine": 1.0, "worst": "-", "max_abs_diff": 0.0, "mean_abs_diff": 0.0,
                "rel_std_diff": 0.0}
    ref = np.stack([reference[i] for i in ids]).astype(np.float64)
    if ref.shape != vectors.shape:
        return f"vectors are {vectors.shape[1]} wide, the reference's {ref.shape[1]}"
    ours = vectors.astype(np.float64)
    norms = np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1)
    cos = np.where(norms > 0, (ours * ref).sum(axis=1) / np.where(norms > 0, norms, 1), 1.0)
    diff = np.abs(ours - ref)
    worst = int(np.argmin(cos))
    return {"frames": len(ids), "min_cosine": float(cos[worst]), "worst": ids[worst],
            "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "rel_std_diff": float(abs(ours.std() - ref.std()) / ref.std()) if ref.std() > 0 else 0.0}


def judge_vectors(m: dict, fp32: bool, settings: Mapping, thresholds: Mapping) -> tuple[bool, str, str]:
    measured = (f"min cosine {m['min_cosine']:.7f} ({m['worst']}), max abs diff {m['max_abs_diff']:.2e}, "
                f"mean abs diff {m['mean_abs_diff']:.2e}, rel std diff {m['rel_std_diff']:.2e}, {m['frames']} frames")
    if fp32:
        tol = (f"min cosine >= {settings['fp32_min_cosine']:g}, max abs diff <= {settings['fp32_max_abs_diff']:g} "
               "(FP32 against FP32)")
        ok = m["min_cosine"] >= settings["fp32_min_cosine"] and m["max_abs_diff"] <= settings["fp32_max_abs_diff"]
    else:
        tol = (f"min cosine >= {thresholds['min_pooled_cosine']:g}, mean abs diff <= {thresholds['max_mean_abs_diff']:g}, "
               f"rel std diff <= {thresholds['max_rel_std_diff']:g} (fp32_compare thresholds)")
        ok = (m["min_cosine"] >= thresholds["min_pooled_cosine"] and m["mean_abs_diff"] <= thresholds["max_mean_abs_diff"]
              and m["rel_std_diff"] <= thresholds["max_rel_std_diff"])
    return ok, measured, tol


def compare_predictions(ours: Path, theirs: Path, tolerance: float) -> tuple[bool, str, str]:
    from virnucflow.steps.predict import read_predictions

    a, b = read_predictions(ours), read_predictions(theirs)
    if a["Sequence_ID"].tolist() != b["Sequence_ID"].tolist():
        k = next((i for i, (x, y) in enumerate(zip(a["Sequence_ID"], b["Sequence_ID"])) if x != y), min(len(a), len(b)))
        return False, f"frame IDs or order differ ({len(a)} vs {len(b)} frames)", f"first at row {k + 1}"
    diff = np.abs(a[["score1", "score2"]].to_numpy(np.float64) - b[["score1", "score2"]].to_numpy(np.float64))
    flipped = a.loc[a["Prediction"] != b["Prediction"], "Sequence_ID"].tolist()
    largest = float(diff.max()) if len(a) else 0.0
    where = f" ({a['Sequence_ID'].iloc[int(diff.max(axis=1).argmax())]})" if len(a) else ""
    measured = f"max score diff {largest:.2e}{where}, {len(flipped)} of {len(a)} frame calls differ"
    ok = not flipped and largest <= tolerance
    return ok, measured, ("frames whose call differs: " + ", ".join(flipped[:5])) if flipped else ""


def compare_calls(ours: Path, theirs: Path) -> tuple[bool, str, str]:
    from virnucflow.io.tables import read_tsv

    a = read_tsv(ours, dtype={"Modified_ID": str, "Is_Virus": str})
    b = read_tsv(theirs, dtype={"Modified_ID": str, "Is_Virus": str})
    merged = a.merge(b, on="Modified_ID", how="outer", suffixes=("_ours", "_reference"), indicator=True)
    differ = merged[(merged["_merge"] != "both") | (merged["Is_Virus_ours"] != merged["Is_Virus_reference"])]
    measured = f"{len(differ)} of {len(merged)} windows differ"
    return differ.empty, measured, ("windows: " + ", ".join(differ["Modified_ID"].head(5))) if len(differ) else ""


# --------------------------------------------------------------------------- the run


def _row(case: str, check: str, path: str, ok: bool | None, measured: str = "", tolerance: str = "",
         detail: str = "") -> dict:
    result = "SKIP" if ok is None else "PASS" if ok else "FAIL"
    return dict(case=case, check=check, path=path, result=result, measured=measured or "-",
                tolerance=tolerance or "-", detail=detail or "-")


def _preprocess_case(case: Case, chunk_length: int, work: Path) -> list[dict]:
    """The workflow's preprocessing of the case's input, compared byte for byte."""
    from virnucflow.steps.preprocess import preprocess

    work.mkdir()
    preprocess(case.fasta, chunk_length, work / "windows.fa", work / "nucleotide.fa", work / "protein.faa",
               records_out=work / "records.tsv")
    rows = []
    for check, ours, key in (("preprocess_windows", "windows.fa", "windows"),
                             ("preprocess_nucleotide", "nucleotide.fa", "nucleotide"),
                             ("preprocess_protein", "protein.faa", "protein")):
        if key in case.files:
            ok, measured, detail = compare_bytes(work / ours, case.files[key])
            rows.append(_row(case.name, check, "-", ok, measured, "byte for byte", detail))
        else:
            wanted = f"{case.name}_chunked{chunk_length}.fa" if key == "windows" else CASE_FILES[key].format(case=case.name)
            rows.append(_row(case.name, check, "-", None, detail=f"no {wanted} in the reference"))
    return rows


def run_path(cases: list[Case], work: Path, name: str, models_json: Path, options: Mapping, chunk_length: int,
             demo: bool) -> dict:
    """Every case through the embedding job (one shard), the scoring and the gathering, as in a run;
    returns each model's embedding table (all cases) and writes the cases' prediction files in ``work/name``."""
    from virnucflow.steps.embed import embed_shard_models
    from virnucflow.io.features import read_h5
    from virnucflow.steps.predict import gather_sample
    from virnucflow.steps.score import score_shard
    from virnucflow.steps.shard import plan_shards, read_planned_shard, shard_names

    d = work / name
    d.mkdir()
    files = {c.name: (str(work / c.name / "nucleotide.fa"), str(work / c.name / "protein.faa")) for c in cases}
    plan_shards([c.name for c in cases], files, 1, d / "shards.tsv")
    shard = read_planned_shard(d / "shards.tsv", shard_names(1)[0], files, label=f"selftest {name}")
    outs = {k: d / f"{k}.h5" for k in options}
    embed_shard_models({k: models_json for k in options}, shard, outs, dict(options),
                       {k: d / f"{k}.nonfinite.tsv" for k in options})
    score_shard({k: outs[k] for k in names()}, models_json, d / "scores.tsv", d / "scores.json")
    for c in cases:
        gather_sample(c.name, work / c.name / "records.tsv", [d / "scores.tsv"], chunk_length,
                      d / f"{c.name}_prediction_results.txt", d / f"{c.name}_prediction_results_highestscore.csv",
                      d / f"{c.name}_summary.tsv", demo=demo)
    return {k: read_h5(outs[k]) for k in options}


def _compare_case(case: Case, d: Path, tables: Mapping, why_not: str | None,
                  vectors: Mapping, settings: Mapping, thresholds: Mapping, label: str) -> list[dict]:
    from virnucflow.io.features import sample_rows

    rows = []
    fp32 = all(t.attrs.get("precision") == "fp32" for t in tables.values())
    skip = f"not the published models: {why_not}" if why_not else None
    for kind, table in tables.items():
        check = f"embedding_{kind}"
        if skip or kind not in case.files:
            rows.append(_row(case.name, check, label, None, detail=skip or f"no {case.files.get(kind, CASE_FILES[kind].format(case=case.name))} in the reference"))
            continue
        part = sample_rows(table, case.name)
        m = compare_vectors(part.ids, part.vectors, vectors[case.name, kind])
        if isinstance(m, str):
            rows.append(_row(case.name, check, label, False, detail=m))
        else:
            rows.append(_row(case.name, check, label, *judge_vectors(m, table.attrs.get("precision") == "fp32", settings, thresholds)))
    tolerance = settings["fp32_max_score_diff"] if fp32 else settings["max_score_diff"]
    for check, key, compare in (("predictions", "predictions", compare_predictions), ("calls", "highest", compare_calls)):
        if skip or key not in case.files:
            rows.append(_row(case.name, check, label, None, detail=skip or f"no {CASE_FILES[key].format(case=case.name)} in the reference"))
            continue
        ours = d / CASE_FILES[key].format(case=case.name)
        args = (ours, case.files[key], tolerance) if key == "predictions" else (ours, case.files[key])
        ok, measured, detail = compare(*args)
        tol = f"scores within {tolerance:g}, calls identical" if key == "predictions" else "identical"
        rows.append(_row(case.name, check, label, ok, measured, tol, detail))
    return rows


def selftest(config: Mapping, models_json: str | os.PathLike, out: str | os.PathLike,
             reference: str | os.PathLike | None = None, workdir: str | os.PathLike | None = None,
             threads: int = 1) -> pd.DataFrame:
    """Run the checks of a reference directory (``None``: ``selftest.reference`` of the config; ``bundled``:
    :data:`BUNDLED`) with the config's models (``models_json``: their manifest); write the table to ``out``."""
    from virnucflow.planning.config import embedding_options
    from virnucflow.engine import EmbedOptions
    from virnucflow.io.tables import write_tsv

    settings, thresholds = config["selftest"], config["fp32_compare"]
    where = str(reference or settings["reference"])
    cases, meta = find_cases(BUNDLED if where == "bundled" else where)
    manifest = json.loads(Path(models_json).read_text())
    chunk_length = int(config["chunk_length"])
    why_not = unpublished(manifest, meta)
    rows, runnable = [], []
    for c in cases:
        made_with = c.chunk_length or meta.get("chunk_length")
        if made_with is not None and int(made_with) != chunk_length:
            rows.append(_row(c.name, "case", "-", None, detail=f"the reference was made with {made_with} bp windows; "
                             f"the config's chunk_length is {chunk_length}"))
        else:
            runnable.append(c)
    # every reference file is read (a pickle that would run code refused) before anything runs
    vectors = {(c.name, k): read_reference_vectors(c.files[k], k) for c in runnable for k in PT_LAYOUT if k in c.files}
    log.info("selftest: %d cases of %s (%s), chunk_length %d", len(runnable), where,
             "needs the published models" if meta.get("published_models") else "made with the configured models",
             chunk_length)
    options = {k: EmbedOptions(**o, threads=threads) for k, o in embedding_options(config["embedding"])[0].items()
               if k in PT_LAYOUT}
    paths = {"production": options}
    if settings["fp32"]:
        paths["fp32"] = {k: o.reference() for k, o in options.items()}
    Path(workdir or Path(out).parent).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".selftest-", dir=workdir or Path(out).parent) as tmp:
        work = Path(tmp)
        for c in runnable:
            rows += _preprocess_case(c, chunk_length, work / c.name)
        for name, opts in paths.items() if runnable else ():
            tables = run_path(runnable, work, name, Path(models_json), opts, chunk_length,
                              demo=any(bool(manifest[k].get("demo")) for k in manifest if isinstance(manifest[k], dict)))
            first = next(iter(tables.values()))
            used = "; ".join(f"{k} {t.attrs.get('precision')}/{'packed' if t.attrs.get('packing') else 'padded'}/"
                             f"{t.attrs.get('attention')}" for k, t in tables.items())
            healed = sum(int(t.attrs.get("recomputed_fp32", 0)) for t in tables.values())
            rows.append(_row("all", "run", name, True, f"{len(first.ids)} frames embedded by each model and scored, "
                             "all finite" + (f" ({healed} recomputed in FP32)" if healed else ""),
                             detail=f"{used} on {first.attrs.get('device')}"))
            for c in runnable:
                rows += _compare_case(c, work / name, tables, why_not, vectors, settings, thresholds, name)
    table = pd.DataFrame(rows, columns=COLUMNS)
    write_tsv(out, table)
    return table


def lines(table: pd.DataFrame) -> list[str]:
    """One line per check, then the verdict."""
    out = [f"{r.result}  {r.case}  {r.check}  {r.path}  {r.measured}"
           + (f"  [{r.tolerance}]" if r.tolerance != "-" else "") + (f"  {r.detail}" if r.detail != "-" else "")
           for r in table.itertuples()]
    counts = table["result"].value_counts()
    verdict = "FAIL" if counts.get("FAIL", 0) else "PASS"
    out.append(f"selftest: {verdict} ({counts.get('PASS', 0)} passed, {counts.get('FAIL', 0)} failed, "
               f"{counts.get('SKIP', 0)} skipped)")
    return out


def check_verdict(table: pd.DataFrame, out: str | os.PathLike) -> None:
    """Raise :class:`CheckFailed` (one line: the first failure, the number of failures) on any FAIL."""
    from virnucflow.errors import CheckFailed

    failed = table[table["result"] == "FAIL"]
    if len(failed):
        r = failed.iloc[0]
        raise CheckFailed(f"selftest: {len(failed)} check(s) failed, first {r['case']} {r['check']} {r['path']}: "
                          f"{r['measured']} [{r['tolerance']}] {r['detail'] if r['detail'] != '-' else ''}".rstrip()
                          + f"; every check is in {out}")
