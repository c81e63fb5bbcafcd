"""``snakemake fp32_compare``: the production embedding path against FP32, on a sample's own frames.

For each embedding model a seeded sample of the sample's frames is drawn per
length stratum (ESM-2: proteins of < 50, 50-200 and > 200 residues; DNABERT-S:
windows of < 50, 50-200 and > 200 tokens; ``per_stratum`` frames each, all of
a smaller stratum). Every drawn frame is embedded by both models twice: with
the production path exactly as configured (precision, packing, attention,
token budget) and with the reference path (FP32, padded batches, math
attention). Per model and stratum the pooled vectors and the last-layer token
states are compared against the thresholds of the config's ``fp32_compare``
section; the classifier scores the frames with both feature sets (call
agreement: the number users care about). Outputs, in ``results/{sample}/qc/fp32_compare/``:

- ``per_sequence.tsv``: model, ID, length, stratum, pooled cosine, minimum and
  mean per-token cosine, max abs difference of the pooled vector;
- ``summary.tsv``: per model and stratum: n, mean and minimum pooled cosine,
  minimum per-token cosine, mean abs difference, relative std difference,
  L2-norm ratio, each threshold's pass/fail;
- ``calls.tsv``: per frame, the production and FP32 viral scores and calls;
  ``call_agreement.tsv``: frames and windows whose call flips, largest score change;
- ``cosine.png``, ``scores.png``: figures for ``snakemake --report``.

A failed threshold ends the step with one line naming the model, stratum and
metric, and the config edit that rolls the production path back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from virnucflow.engine import Embedder, EmbedOptions
from virnucflow.errors import NumericalError
from virnucflow.models.interface import EmbeddingModel
from virnucflow.models.registry import load_model, names
from virnucflow.steps.preprocess import iter_identified
from virnucflow.io.tables import write_tsv

log = logging.getLogger("virnucflow")

STRATA = ((0, 50, "<50"), (50, 201, "50-200"), (201, 1 << 62, ">200"))
#: Test-only: relative Gaussian noise added to the production path's outputs, to check that
#: a path that does not agree with FP32 fails the comparison.
CHUNK = 64  # sequences whose token states are held at once


def stratum(length: int) -> str:
    return next(name for low, high, name in STRATA if low <= length < high)


def draw(lengths: np.ndarray, per_stratum: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of a stratified sample: ``per_stratum`` per stratum (all of a smaller one), sorted."""
    chosen = []
    for low, high, _ in STRATA:
        members = np.flatnonzero((lengths >= low) & (lengths < high))
        take = min(per_stratum, len(members))
        chosen.append(rng.choice(members, size=take, replace=False) if take else members[:0])
    return np.sort(np.concatenate(chosen))


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


def compare_model(name: str, path: str, options: EmbedOptions, tokens: list[np.ndarray],
                  model: EmbeddingModel | None = None):
    """Production and reference pooled vectors (N, D) and per-sequence token cosines of one model.

    ``model``: the model already loaded from ``path`` (it becomes the production one); the
    reference is always loaded from the file again, so it has the file's own values.
    """
    production = Embedder.create(model if model is not None else load_model(name, path)[0], options)
    reference = Embedder.create(load_model(name, path)[0], dataclasses.replace(options.reference(), device=str(production.device)))
    log.info("%s: production %s/%s/%s against reference %s/%s/%s on %s, %d frames", name, production.precision.name,
             "packed" if production.packed else "padded", production.backend, reference.precision.name,
             "packed" if reference.packed else "padded", reference.backend, production.device, len(tokens))
    fast = torch.from_numpy(production.embed_tokens(tokens))
    slow = torch.from_numpy(reference.embed_tokens(tokens))
    token_min, token_mean = np.empty(len(tokens)), np.empty(len(tokens))
    for start in range(0, len(tokens), CHUNK):
        part = tokens[start:start + CHUNK]
        for k, (a, b) in enumerate(zip(production.token_states(part), reference.token_states(part))):
            c = _cos(a.cpu(), b.cpu())
            token_min[start + k], token_mean[start + k] = float(c.min()), float(c.mean())
    setting = dict(precision=production.precision.name, packing=production.packed, attention=production.backend)
    return fast.numpy(), slow.numpy(), token_min, token_mean, setting


def rollback_hint(name: str, setting: Mapping) -> str:
    if setting["precision"] == "fp8":
        return f"embedding.{name}.precision: fp16 (the default)"
    if setting["precision"] != "fp32":
        return f"embedding.{name}.precision: fp32 (or embedding.precision: fp32 for both models)"
    if setting["packing"]:
        return f"embedding.{name}.packing: false (or embedding.packing: false)"
    return f"embedding.{name}.attention: math (or embedding.attention: math)"


def summarise(per_sequence: pd.DataFrame, fast: dict, slow: dict, thresholds: Mapping) -> pd.DataFrame:
    rows = []
    for (name, stratum_name), group in per_sequence.groupby(["model", "stratum"], sort=False):
        a, b = fast[name][group["row"].to_numpy()], slow[name][group["row"].to_numpy()]
        row = {
            "model": name, "stratum": stratum_name, "n": len(group),
            "mean_pooled_cosine": group["pooled_cosine"].mean(), "min_pooled_cosine": group["pooled_cosine"].min(),
            "min_token_cosine": group["min_token_cosine"].min(),
            "mean_abs_diff": float(np.abs(a - b).mean()),
            "rel_std_diff": float(abs(a.std() - b.std()) / b.std()) if b.std() > 0 else 0.0,
            "l2_norm_ratio": float(np.mean(np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))),
        }
        row["pass_pooled_cosine"] = row["min_pooled_cosine"] >= thresholds["min_pooled_cosine"]
        row["pass_token_cosine"] = row["min_token_cosine"] >= thresholds["min_token_cosine"]
        row["pass_mean_abs_diff"] = row["mean_abs_diff"] <= thresholds["max_mean_abs_diff"]
        row["pass_rel_std_diff"] = row["rel_std_diff"] <= thresholds["max_rel_std_diff"]
        rows.append(row)
    return pd.DataFrame(rows)


def call_agreement(ids: Sequence[str], fast: np.ndarray, slow: np.ndarray, classifier_path: str):
    from virnucflow.models.classifier import classify, load_classifier

    model, _ = load_classifier(classifier_path)
    s_fast = classify(model, torch.from_numpy(fast)).numpy()
    s_slow = classify(model, torch.from_numpy(slow)).numpy()
    calls = pd.DataFrame({
        "id": list(ids), "score_production": s_fast[:, 1], "score_fp32": s_slow[:, 1],
        "call_production": np.where(s_fast[:, 1] > s_fast[:, 0], "virus", "others"),
        "call_fp32": np.where(s_slow[:, 1] > s_slow[:, 0], "virus", "others"),
    })
    calls["flipped"] = calls["call_production"] != calls["call_fp32"]
    # per window, the original's rule over the window's drawn frames: max(score2) >= max(score1)
    w = pd.DataFrame({"window": [i[:-2] for i in ids], "f1": s_fast[:, 0], "f2": s_fast[:, 1],
                      "r1": s_slow[:, 0], "r2": s_slow[:, 1]}).groupby("window").max()
    window_flips = int(((w["f2"] >= w["f1"]) != (w["r2"] >= w["r1"])).sum())
    agreement = pd.DataFrame([{
        "frames": len(calls), "frames_flipped": int(calls["flipped"].sum()),
        "frame_flip_fraction": float(calls["flipped"].mean()) if len(calls) else 0.0,
        "windows": len(w), "windows_flipped": window_flips,
        "window_flip_fraction": window_flips / len(w) if len(w) else 0.0,
        "max_score_change": float(np.abs(s_fast[:, 1] - s_slow[:, 1]).max()) if len(calls) else 0.0,
        "flipped_ids": ",".join(calls.loc[calls["flipped"], "id"]) or "-",
    }])
    return calls, agreement


def plot(per_sequence: pd.DataFrame, calls: pd.DataFrame, cosine_png: str | os.PathLike, scores_png: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from virnucflow.io.atomic import atomic_outputs

    names = list(dict.fromkeys(per_sequence["model"]))
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(5 * max(1, len(names)), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        group = per_sequence[per_sequence["model"] == name]
        labels = [s for _, _, s in STRATA if (group["stratum"] == s).any()]
        data = [np.clip(1 - group.loc[group["stratum"] == s, "pooled_cosine"].to_numpy(), 1e-12, None) for s in labels]
        ax.boxplot(data, tick_labels=labels)
        ax.set_yscale("log")
        ax.set_title(f"{name}: 1 - pooled cosine")
        ax.set_xlabel("length stratum")
    fig.tight_layout()
    with atomic_outputs([cosine_png, scores_png]) as (t1, t2):
        fig.savefig(t1, format="png", dpi=110)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(4.2, 4.2))
        colors = np.where(calls["flipped"], "tab:red", "tab:blue")
        ax.scatter(calls["score_fp32"], calls["score_production"], s=6, c=colors)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        ax.set_xlabel("viral score, FP32 features")
        ax.set_ylabel("viral score, production features")
        ax.set_title(f"{int(calls['flipped'].sum())} of {len(calls)} calls flip")
        fig.tight_layout()
        fig.savefig(t2, format="png", dpi=110)
        plt.close(fig)


def fp32_compare(nucleotide_fa: str | os.PathLike, protein_faa: str | os.PathLike, models_json: str | os.PathLike,
                 embedding: Mapping, settings: Mapping, outputs: Mapping[str, str | os.PathLike], threads: int = 1) -> pd.DataFrame:
    """Compare the production path with FP32 for every model; write ``outputs`` (keys: per_sequence, summary,
    calls, agreement, cosine_png, scores_png). Raises :class:`NumericalError` when a threshold fails."""
    manifest = json.loads(Path(models_json).read_text())
    frames = list(iter_identified(nucleotide_fa, protein_faa))
    ids = [f.id for f in frames]
    models = [m for m in names() if m in manifest]
    tokens, lengths, loaded = {}, {}, {}
    for name in models:  # loaded once here for its tokenizer, then used as the production model
        loaded[name] = model = load_model(name, manifest[name]["path"])[0]  # on the CPU, memory-mapped
        seqs = [f.nucleotide if model.reads == "nucleotide" else f.protein for f in frames]
        tokens[name] = model.tokenizer.encode_batch(seqs)
        # strata: residues for proteins, tokens for nucleotide windows
        lengths[name] = np.array([len(s) for s in seqs] if model.reads == "protein" else [len(t) for t in tokens[name]])
    rng = np.random.default_rng(int(settings["seed"]))
    drawn = {name: draw(lengths[name], int(settings["per_stratum"]), rng) for name in models}
    union = np.unique(np.concatenate([drawn[n] for n in models])) if models else np.zeros(0, np.int64)
    log.info("%d frames in the sample; %d drawn (%s)", len(frames), len(union),
             ", ".join(f"{n}: {len(drawn[n])}" for n in models))
    fast, slow, rows, used = {}, {}, [], {}
    for name in models:
        options = EmbedOptions(**embedding[name], threads=threads)
        a, b, tmin, tmean, used[name] = compare_model(name, manifest[name]["path"], options,
                                                      [tokens[name][i] for i in union], model=loaded.pop(name))
        fast[name], slow[name] = a, b
        pooled = _cos(torch.from_numpy(a), torch.from_numpy(b)).numpy()
        # every drawn frame (of either model's draw), in this model's stratum
        for row, i in enumerate(union):
            rows.append({"model": name, "id": ids[i], "length": int(lengths[name][i]),
                         "stratum": stratum(int(lengths[name][i])), "pooled_cosine": pooled[row],
                         "min_token_cosine": tmin[row], "mean_token_cosine": tmean[row],
                         "max_abs_diff": float(np.abs(a[row] - b[row]).max()), "row": row})
    per_sequence = pd.DataFrame(rows)
    summary = summarise(per_sequence, fast, slow, settings)
    features_fast = np.concatenate([fast[n] for n in names() if n in fast], axis=1)
    features_slow = np.concatenate([slow[n] for n in names() if n in slow], axis=1)
    calls, agreement = call_agreement([ids[i] for i in union], features_fast, features_slow, manifest["classifier"]["path"])
    write_tsv(outputs["per_sequence"], per_sequence.drop(columns="row").round(8))
    write_tsv(outputs["summary"], summary.round(8))
    write_tsv(outputs["calls"], calls.round(6))
    write_tsv(outputs["agreement"], agreement.round(6))
    plot(per_sequence, calls, outputs["cosine_png"], outputs["scores_png"])
    for line in summary.round(6).to_string(index=False).splitlines():
        log.info("%s", line)
    a = agreement.iloc[0]
    log.info("call agreement: %d of %d frames flip (%.3f%%), %d of %d windows; largest viral score change %.2e",
             a["frames_flipped"], a["frames"], 100 * a["frame_flip_fraction"], a["windows_flipped"], a["windows"],
             a["max_score_change"])
    _check(summary, settings, used)
    return summary


CHECKS = (("pass_pooled_cosine", "min_pooled_cosine", "min_pooled_cosine", ">="),
          ("pass_token_cosine", "min_token_cosine", "min_token_cosine", ">="),
          ("pass_mean_abs_diff", "mean_abs_diff", "max_mean_abs_diff", "<="),
          ("pass_rel_std_diff", "rel_std_diff", "max_rel_std_diff", "<="))


def _check(summary: pd.DataFrame, settings: Mapping, used: Mapping) -> None:
    for _, row in summary.iterrows():
        for flag, metric, key, op in CHECKS:
            if not row[flag]:
                raise NumericalError(
                    f"fp32_compare: {row['model']}, stratum {row['stratum']} ({row['n']} frames): {metric} "
                    f"{row[metric]:.6g} fails fp32_compare.{key} ({op} {settings[key]:g}) with "
                    f"{used[row['model']]['precision']}/{'packed' if used[row['model']]['packing'] else 'padded'}/"
                    f"{used[row['model']]['attention']}; roll back with {rollback_hint(row['model'], used[row['model']])}"
                )
