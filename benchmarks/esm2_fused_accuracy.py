"""ESM-2 3B pooled embeddings of the fused and the unfused paths against FP32, on the same frames.

Full-size ESM-2 3B (random weights, seed 1, as ``embed_throughput.py``) on
``--n`` non-redundant proteins of 500 bp windows (``workloads.frames.virnucpro_frames``,
duplicates removed). The reference is the FP32 path (padded batches, math
attention, no TF32: ``EmbedOptions.reference``); each production path runs
packed on the same frames:

- fp16 unfused: ``fused: false``, the previous default (rotary pass, erf GELU pass);
- fp16 fused (the default): q/k rotated in the q|k|v GEMM's epilogue, fc1's GELU in cuBLASLt's
  epilogue (tanh), as ``esm2.FOLD_RESIDUAL`` says;
- fp16 fused, erf GELU: the fused path with the erf GELU pass (separates the tanh GELU's share);
- fp16 fused with ``esm2.FOLD_RESIDUAL`` the other way (residual adds in the GEMMs / as passes);
- fp16 fused with ``esm2.QKV_ROTARY_EPILOGUE`` the other way (the rotary pass, or in the GEMM);
- fp8 unfused / fp8 fused: E4M3 products, two-pass / one-pass GELU + quantisation.

Per path and ESM-2 stratum (residues < 50, 50-200, > 200, as ``fp32_compare``):
mean and minimum pooled cosine, largest absolute difference of a pooled value,
mean absolute difference, relative std difference, with ``fp32_compare``'s
default thresholds (min pooled cosine 0.99, mean abs diff 0.01, rel std
diff 0.05), and the minimum per-token cosine (threshold 0.95) on the first
``--token-frames`` frames. Writes ``<out>/esm2_fused_accuracy_<gpu>.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workloads.frames import virnucpro_frames  # noqa: E402
from virnucflow.engine import EmbedOptions, Embedder  # noqa: E402
from virnucflow.steps.fp32_compare import STRATA, stratum  # noqa: E402
from virnucflow.models import esm2, fp8  # noqa: E402
from virnucflow.models.esm2 import ESM2, TransformerLayer, tokenize  # noqa: E402
from workloads.published import KNOWN_CONFIGS  # noqa: E402
from virnucflow.models.random_weights import init_random  # noqa: E402

THRESHOLDS = dict(min_pooled_cosine=0.99, min_token_cosine=0.95, max_mean_abs_diff=0.01, max_rel_std_diff=0.05)


def set_fused(model, fused: bool) -> None:
    model.fused = fused
    for m in model.modules():
        if isinstance(m, fp8.Fp8Linear):
            m.fused = fused


def embedder(state, cfg, opts: EmbedOptions) -> Embedder:
    with torch.device("meta"):
        m = ESM2(cfg)
    m.load_state_dict(state, assign=True)
    return Embedder.create(m, opts)


def token_min_cos(a: Embedder, b: Embedder, tokens) -> float:
    worst = 1.0
    for start in range(0, len(tokens), 256):
        part = tokens[start:start + 256]
        for x, y in zip(a.token_states(part), b.token_states(part)):
            c = torch.nn.functional.cosine_similarity(x.double().cpu(), y.double().cpu(), dim=-1)
            worst = min(worst, float(c.min()))
    return worst


def metrics(a: np.ndarray, b: np.ndarray) -> dict:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return dict(n=len(a), mean_cos=float(cos.mean()), min_cos=float(cos.min()), max_abs=float(np.abs(a - b).max()),
                mean_abs=float(np.abs(a - b).mean()), rel_std=float(abs(a.std() - b.std()) / b.std()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--token-frames", type=int, default=1000)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--size", default="esm2_t36_3B_UR50D")
    args = p.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # the CPU: a smoke test (--size, --n small)
    gpu = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    t0 = time.monotonic()
    _, aas = virnucpro_frames(int(args.n * 1.2) + 100, seed=7)
    aas = list(dict.fromkeys(aas))[: args.n]  # non-redundant
    tokens = [tokenize(a) for a in aas]
    lengths = np.array([len(a) for a in aas])
    strata = np.array([stratum(int(n)) for n in lengths])
    cfg = KNOWN_CONFIGS[args.size]
    with torch.device(dev):
        master = ESM2(cfg)
    init_random(master, 1)
    state = {k: v.detach().to("cpu") for k, v in master.state_dict().items()}
    del master
    torch.cuda.empty_cache()
    base = EmbedOptions.defaults(device=dev.type)

    vectors, seconds = {}, {}

    default_fold, default_rope = esm2.FOLD_RESIDUAL, esm2.QKV_ROTARY_EPILOGUE

    def run(name, e, fused, patch_erf=False, fold=None, rope=None):
        set_fused(e.model, fused)
        original = TransformerLayer.fc1_gelu
        if patch_erf:
            TransformerLayer.fc1_gelu = lambda self, h, fused: original(self, h, False)
        esm2.FOLD_RESIDUAL = default_fold if fold is None else fold
        esm2.QKV_ROTARY_EPILOGUE = default_rope if rope is None else rope
        try:
            t = time.monotonic()
            vectors[name] = e.embed_tokens(tokens)
            seconds[name] = time.monotonic() - t
        finally:
            TransformerLayer.fc1_gelu = original
            esm2.FOLD_RESIDUAL = default_fold
            esm2.QKV_ROTARY_EPILOGUE = default_rope
        print(f"{name}: {seconds[name]:.1f} s", flush=True)

    # production paths first (one model per precision, the switch toggled), then FP32
    e16 = embedder(state, cfg, base)
    run("fp16 unfused (previous default)", e16, False)
    run("fp16 fused (default)", e16, True)
    run("fp16 fused, erf GELU", e16, True, patch_erf=True)
    other_fold = ("fp16 fused, residual adds as passes" if default_fold
                  else "fp16 fused, residual adds in the GEMMs (FOLD_RESIDUAL)")
    run(other_fold, e16, True, fold=not default_fold)  # the default is the row "fp16 fused (default)"
    other_rope = f"fp16 fused, QKV_ROTARY_EPILOGUE={not default_rope}"
    run(other_rope, e16, True, rope=not default_rope)
    sub = tokens[: args.token_frames]
    states16 = {}
    for fused in (False, True):
        set_fused(e16.model, fused)
        states16[fused] = [x.float().cpu() for x in e16.token_states(sub)] if sub else []
    del e16
    torch.cuda.empty_cache()
    if fp8.supported(dev) is None:
        e8 = embedder(state, cfg, EmbedOptions.defaults(device=dev.type, precision="fp8"))
        run("fp8 unfused (two-pass quantisation)", e8, False)
        run("fp8 fused (one-pass quantisation)", e8, True)
        fast, fp8.FAST_ACCUM = fp8.FAST_ACCUM, False
        run("fp8 fused, FP32 accumulation (previous)", e8, True)
        fp8.FAST_ACCUM = fast
        del e8
        torch.cuda.empty_cache()
    ref = embedder(state, cfg, base.reference())
    t = time.monotonic()
    vec32 = ref.embed_tokens(tokens)
    print(f"fp32 reference: {time.monotonic() - t:.1f} s", flush=True)
    states32 = [x.float().cpu() for x in ref.token_states(sub)] if sub else []

    def tmin(states):
        return min(float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).min())
                   for a, b in zip(states, states32)) if states else float("nan")

    tok = {"fp16 unfused (previous default)": tmin(states16[False]), "fp16 fused (default)": tmin(states16[True])}
    lines = [f"# ESM-2 3B fused vs unfused against FP32, {gpu}", "",
             f"{len(tokens):,} non-redundant proteins of 500 bp windows ({int(lengths.mean())} residues on average), "
             f"random weights (seed 1), torch {torch.__version__}; reference: FP32, padded, math attention, no TF32. "
             f"Token cosine: the first {len(sub)} frames (FP16 paths). fp32_compare's default thresholds: pooled cosine "
             f">= 0.99, token cosine >= 0.95, mean abs diff <= 0.01, rel std diff <= 0.05.", "",
             "| path | stratum | n | mean cosine | min cosine | max abs diff | mean abs diff | rel std diff | min token cosine | "
             "passes | seconds |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    for name, vec in vectors.items():
        for label in [s[2] for s in STRATA] + ["all"]:
            sel = np.ones(len(vec), bool) if label == "all" else strata == label
            if not sel.any():
                continue
            m = metrics(vec[sel], vec32[sel])
            ok = (m["min_cos"] >= THRESHOLDS["min_pooled_cosine"] and m["mean_abs"] <= THRESHOLDS["max_mean_abs_diff"]
                  and m["rel_std"] <= THRESHOLDS["max_rel_std_diff"])
            tc = tok.get(name, float("nan")) if label == "all" else float("nan")
            if tc == tc:
                ok = ok and tc >= THRESHOLDS["min_token_cosine"]
            summary[(name, label)] = m
            secs = f"{seconds[name]:.1f}" if label == "all" else ""
            lines.append(f"| {name} | {label} | {m['n']} | {m['mean_cos']:.6f} | {m['min_cos']:.6f} | {m['max_abs']:.4g} | "
                         f"{m['mean_abs']:.4g} | {m['rel_std']:.4g} | {'' if tc != tc else f'{tc:.6f}'} | "
                         f"{'yes' if ok else 'NO'} | {secs} |")
    lines += ["", "Fused error / unfused error, same frames (all strata; the Done-when bound is 1.05):", "",
              "| precision | fused path | 1 - mean cosine | 1 - min cosine | max abs diff | mean abs diff |", "|---|---|---|---|---|---|"]
    pairs = [("fp16", "fp16 fused (default)", "fp16 unfused (previous default)"),
             ("fp16", "fp16 fused, erf GELU", "fp16 unfused (previous default)"),
             ("fp16", other_fold, "fp16 unfused (previous default)"),
             ("fp16", other_rope, "fp16 unfused (previous default)"),
             ("fp8", "fp8 fused (one-pass quantisation)", "fp8 unfused (two-pass quantisation)"),
             ("fp8", "fp8 fused (one-pass quantisation)", "fp8 fused, FP32 accumulation (previous)")]
    for prec, a, b in pairs:
        if (a, "all") in summary and (b, "all") in summary:
            x, y = summary[(a, "all")], summary[(b, "all")]
            r = [(f(x) / f(y) if f(y) else float("nan")) for f in (lambda m: 1 - m["mean_cos"], lambda m: 1 - m["min_cos"],
                                                                    lambda m: m["max_abs"], lambda m: m["mean_abs"])]
            lines.append(f"| {prec} | {a} | " + " | ".join(f"{v:.3f}" for v in r) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"esm2_fused_accuracy_{gpu.split()[1] if len(gpu.split()) > 1 else gpu}.md").write_text(text)
    print(f"total {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
