"""Embedding throughput on one GPU: VirNucFlow beside the peers, measured in one run.

Full-size ESM-2 3B and DNABERT-S with random weights (the real architectures;
throughput does not depend on the weights' values), two workloads:

- ``500bp``: what VirNucPro embeds for 500 bp windows: ~166-residue proteins
  and their ~500-nt windows (random coding windows through the real
  preprocessing);
- ``mixed``: proteins of 20-1200 residues (log-normal, median ~200) and their
  3n+1-nt windows.

Methods (each on the same sequences; slow peers on a prefix of them):

ESM-2 3B
  original      fair-esm ESM2, FP32, 2,048-token batches (VirNucPro's extract_esm)
  fair-esm fp16 fair-esm ESM2 .half(), 16,384-token batches
  hf sdpa fp16  transformers EsmModel, FP16, SDPA, padded, length-sorted batches of 192
  ours padded   VirNucFlow, FP16, padded batches, SDPA
  ours packed   VirNucFlow, FP16, packed (token budget), attention auto (the Triton kernel)
  ours packed varlen  the same with PyTorch's varlen FlashAttention
  ours packed fp8  the same with FP8 E4M3 matrix products (precision fp8; GPUs with FP8
                tensor cores), compared with ours packed by cosine
DNABERT-S
  original      one sequence at a time, FP32 (VirNucPro's extract_DNABERT_S loop;
                our reference model, which computes what the remote code's PyTorch path does)
  ours padded   our reference model, FP16, padded batches, SDPA with the ALiBi bias
  ours packed   VirNucFlow, FP16, packed, attention auto (the Triton kernel, in-kernel ALiBi)
  ours packed flex  the same with FlexAttention

Tokens are the model's tokens including <cls>/<eos> ([CLS]/[SEP]), never
padding. Each timing is the median of --reps runs after a warm-up run;
"GPU busy" is NVML's utilisation averaged over the timed runs; peak memory
is torch's peak allocation with only that model resident. Also: FP16 vs FP32
peak memory for the same packed batch, agreement of our pooled vectors with
the original's (cosine), and (--job) the whole embedding job on a shard of
>= 100,000 frames, model load and I/O included, with the GPU's busy share
after model load.

Writes ``<out>/embed_throughput_<gpu>_<date>.{md,json}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from virnucflow.engine import EmbedOptions, Embedder  # noqa: E402
from virnucflow.models.dnabert_s import DNABERTS, DNABERTSConfig  # noqa: E402
from virnucflow.models.esm2 import ESM2, PAD, tokenize  # noqa: E402
from workloads.published import KNOWN_CONFIGS  # noqa: E402
from virnucflow.models.random_weights import init_random  # noqa: E402
from benchmarks.gpu_util import UtilizationSampler  # noqa: E402
from workloads.frames import mixed_frames, virnucpro_frames  # noqa: E402

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CUDA = DEV.type == "cuda"
ESM_SIZE = "esm2_t36_3B_UR50D"
DNABERT_SIZE: dict = {}
ROWS: list[dict] = []


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def reset_peak() -> None:
    if CUDA:
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if CUDA else float("nan")


def log(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- timing


def timed(fn, reps: int, sampler: UtilizationSampler | None) -> tuple[float, float, float]:
    """Median seconds of ``fn()`` over ``reps`` runs after one warm-up; GPU busy share; peak GiB."""
    fn()
    sync()
    reset_peak()
    times = []
    t_start = time.monotonic()
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    busy = sampler.mean(t_start, time.monotonic()) if sampler else float("nan")
    return statistics.median(times), busy, peak_gib()


def record(model: str, workload: str, method: str, n_seq: int, n_tok: int, seconds: float, busy: float,
           peak: float, **extra) -> None:
    row = dict(model=model, workload=workload, method=method, sequences=n_seq, tokens=n_tok,
               seconds=round(seconds, 4), tokens_per_s=round(n_tok / seconds), seqs_per_s=round(n_seq / seconds, 1),
               gpu_busy=round(busy, 3), peak_gib=round(peak, 2), **extra)
    ROWS.append(row)
    log(f"  {method:<16} {row['tokens_per_s']:>10,} tok/s {row['seqs_per_s']:>9,.1f} seq/s "
        f"peak {peak:5.1f} GiB busy {busy:.0%} {extra}")


def cleanup() -> None:
    """Call after ``del``-ing the caller's references to a model."""
    gc.collect()
    if CUDA:
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- ESM-2


def esm_master(seed: int) -> tuple[dict, object]:
    cfg = KNOWN_CONFIGS[ESM_SIZE]
    with torch.device(DEV):
        m = ESM2(cfg)
    init_random(m, seed)
    state = {k: v.detach().to("cpu") for k, v in m.state_dict().items()}
    del m
    cleanup()
    return state, cfg


def ours_esm(state, cfg, precision: str, packing: bool, attention: str = "auto", budget="auto",
             fused: bool = True) -> Embedder:
    with torch.device("meta"):
        m = ESM2(cfg)
    m.load_state_dict(state, assign=True)
    return Embedder.create(m, EmbedOptions.defaults(precision=precision, packing=packing, attention=attention,
                                                    token_budget=budget, device=str(DEV), fused=fused))


def fair_esm(state, cfg, half: bool):
    import esm

    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    with torch.device(DEV):
        m = esm.model.esm2.ESM2(num_layers=cfg.num_layers, embed_dim=cfg.embed_dim,
                                attention_heads=cfg.attention_heads, alphabet=alphabet, token_dropout=True)
    m.load_state_dict(state, strict=False)
    m = m.eval()
    return (m.half() if half else m), alphabet


def fair_esm_run(model, alphabet, proteins: list[str], toks_per_batch: int) -> np.ndarray:
    """VirNucPro's extract_esm: fair-esm length-sorted batches, mean over residues 1..min(1024, L)."""
    import esm

    ds = esm.data.FastaBatchedDataset([str(i) for i in range(len(proteins))], proteins)
    batches = ds.get_batch_indices(toks_per_batch, extra_toks_per_seq=1)
    conv = alphabet.get_batch_converter()
    out = np.zeros((len(proteins), model.embed_dim), np.float32)
    layer = model.num_layers
    with torch.no_grad():
        for b in batches:
            labels, strs, toks = conv([ds[i] for i in b])
            rep = model(toks.to(DEV, non_blocking=True), repr_layers=[layer])["representations"][layer]
            for i, (lab, s) in enumerate(zip(labels, strs)):
                out[int(lab)] = rep[i, 1 : min(1024, len(s)) + 1].float().mean(0).cpu().numpy()
    return out


def hf_esm(state, cfg):
    from transformers import EsmConfig, EsmModel

    from workloads.published import fair_to_hf_esm

    hc = EsmConfig(vocab_size=33, hidden_size=cfg.embed_dim, num_hidden_layers=cfg.num_layers,
                   num_attention_heads=cfg.attention_heads, intermediate_size=cfg.ffn_dim,
                   position_embedding_type="rotary", token_dropout=True, mask_token_id=32, pad_token_id=1,
                   emb_layer_norm_before=False, layer_norm_eps=1e-5, max_position_embeddings=1026)
    hc._attn_implementation = "sdpa"
    with torch.device(DEV):
        m = EsmModel(hc, add_pooling_layer=False)
    m.load_state_dict(fair_to_hf_esm(state), strict=False)
    return m.half().eval()


def hf_esm_run(model, token_lists: list[np.ndarray], batch_size: int = 192) -> np.ndarray:
    order = np.argsort([-len(t) for t in token_lists], kind="stable")
    out = np.zeros((len(token_lists), model.config.hidden_size), np.float32)
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            lmax = max(len(token_lists[i]) for i in idx)
            toks = torch.full((len(idx), lmax), PAD, dtype=torch.long)
            for r, i in enumerate(idx):
                toks[r, : len(token_lists[i])] = torch.from_numpy(token_lists[i])
            toks = (toks.pin_memory() if CUDA else toks).to(DEV, non_blocking=True)
            mask = toks.ne(PAD)
            h = model(input_ids=toks, attention_mask=mask.long()).last_hidden_state
            lengths = mask.sum(1)
            pos = torch.arange(lmax, device=DEV)[None]
            keep = (pos >= 1) & (pos < 1 + (lengths - 2).clamp(max=1024)[:, None])
            pooled = (h.float() * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
            out[idx] = pooled.cpu().numpy()
    return out


def cos_stats(a: np.ndarray, b: np.ndarray) -> dict:
    c = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"cos_mean": round(float(c.mean()), 6), "cos_min": round(float(c.min()), 6)}


def bench_esm(name: str, proteins: list[str], args, sampler) -> None:
    log(f"\nESM-2 3B, workload {name}: {len(proteins)} proteins")
    state, cfg = esm_master(seed=1)
    tokens = [tokenize(p) for p in proteins]
    n_tok = sum(len(t) for t in tokens)
    slow = max(1, len(proteins) // args.slow_fraction)

    # ours, packed FP16 (the default)
    e = ours_esm(state, cfg, "fp16", True)
    ours_vec = e.embed_tokens(tokens)
    sec, busy, peak = timed(lambda: e.embed_tokens(tokens), args.reps, sampler)
    from virnucflow.engine import EmbedStats

    st = EmbedStats()
    e.embed_tokens(tokens, st)
    record("ESM-2 3B", name, "ours packed", len(tokens), n_tok, sec, busy, peak, precision="fp16",
           attention=e.backend, budget=st.token_budget, packing_eff=round(st.packing_efficiency, 4))
    # the same, as embedding jobs run it: NaN/Inf check of the vectors and progress lines (every
    # second here, 30 times as often as in production, so that their cost shows)
    import virnucflow.planning.progress as progress

    if not args.quick:
        every, progress.EVERY_S = progress.EVERY_S, 1.0
        sec2, busy, peak = timed(lambda: np.isfinite(e.embed_tokens(tokens, progress_label="bench")).all(), args.reps,
                                 sampler)
        progress.EVERY_S = every
        record("ESM-2 3B", name, "ours packed + NaN check + progress", len(tokens), n_tok, sec2, busy, peak,
               precision="fp16", attention=e.backend, cost_vs_ours_packed=f"{100 * (sec2 / sec - 1):+.2f}%")
    del e
    cleanup()

    # the previous default: the unfused kernels (embedding.fused: false)
    e = ours_esm(state, cfg, "fp16", True, fused=False)
    unfused_vec = e.embed_tokens(tokens)
    sec_u, busy, peak = timed(lambda: e.embed_tokens(tokens), args.reps, sampler)
    record("ESM-2 3B", name, "ours packed unfused (fused: false, previous default)", len(tokens), n_tok, sec_u, busy,
           peak, precision="fp16", attention=e.backend, fused_vs_unfused=f"{100 * (sec / sec_u - 1):+.2f}% time",
           **{f"fused_vs_unfused_{k}": v for k, v in cos_stats(ours_vec, unfused_vec).items()})
    del e
    cleanup()

    # the fused path with each of esm2's layer switches the other way: QKV_ROTARY_EPILOGUE (q and k
    # rotated by the q|k|v Triton GEMM, or by a pass after cuBLAS's product) and FOLD_RESIDUAL (the
    # residual adds inside cuBLAS's out_proj and fc2 products, or in the add+LayerNorm passes)
    import virnucflow.models.esm2 as esm2_module

    for flag in ("QKV_ROTARY_EPILOGUE", "FOLD_RESIDUAL"):
        was = getattr(esm2_module, flag)
        setattr(esm2_module, flag, not was)
        e = ours_esm(state, cfg, "fp16", True)
        vec = e.embed_tokens(tokens)
        sec_g, busy, peak = timed(lambda: e.embed_tokens(tokens), args.reps, sampler)
        setattr(esm2_module, flag, was)
        record("ESM-2 3B", name, f"ours packed fused, {flag}={not was}", len(tokens), n_tok, sec_g, busy, peak,
               precision="fp16", attention=e.backend, vs_ours=f"{100 * (sec_g / sec - 1):+.2f}% time",
               **{f"vs_ours_{k}": v for k, v in cos_stats(vec, ours_vec).items()})
        del e
        cleanup()

    # the same with PyTorch's varlen FlashAttention (auto's choice before the Triton kernel)
    e = None if args.quick else ours_esm(state, cfg, "fp16", True, attention="varlen")
    if e is not None and e.backend == "varlen":
        vec = e.embed_tokens(tokens)
        sec_v, busy, peak = timed(lambda: e.embed_tokens(tokens), args.reps, sampler)
        record("ESM-2 3B", name, "ours packed varlen", len(tokens), n_tok, sec_v, busy, peak, precision="fp16",
               attention="varlen", vs_auto=f"{100 * (sec_v / sec - 1):+.2f}% time",
               **{f"vs_auto_{k}": v for k, v in cos_stats(vec, ours_vec).items()})
    del e
    cleanup()

    # ours, packed, FP8 E4M3 matrix products (opt-in; GPUs with FP8 tensor cores)
    import virnucflow.models.fp8 as fp8_module
    from virnucflow.models.fp8 import supported

    if CUDA and supported(DEV) is None:
        e = ours_esm(state, cfg, "fp8", True)
        fp8_vec = e.embed_tokens(tokens)
        sec, busy, peak = timed(lambda: e.embed_tokens(tokens), args.reps, sampler)
        record("ESM-2 3B", name, "ours packed fp8", len(tokens), n_tok, sec, busy, peak, precision="fp8",
               attention=e.backend, **{f"vs_fp16_{k}": v for k, v in cos_stats(fp8_vec, ours_vec).items()})
        del e
        cleanup()
        fast, fp8_module.FAST_ACCUM = fp8_module.FAST_ACCUM, False
        e = ours_esm(state, cfg, "fp8", True)
        vec = e.embed_tokens(tokens)
        sec_f, busy, peak = timed(lambda: e.embed_tokens(tokens), args.reps, sampler)
        fp8_module.FAST_ACCUM = fast
        record("ESM-2 3B", name, "ours packed fp8, FP32 accumulation (previous)", len(tokens), n_tok, sec_f, busy,
               peak, precision="fp8", attention=e.backend, vs_fp8=f"{100 * (sec_f / sec - 1):+.2f}% time",
               **{f"vs_fp16_{k}": v for k, v in cos_stats(vec, ours_vec).items()},
               **{f"vs_fp8_{k}": v for k, v in cos_stats(vec, fp8_vec).items()})
        del e
        cleanup()
        e = ours_esm(state, cfg, "fp8", True, fused=False)
        vec = e.embed_tokens(tokens)
        sec_u, busy, peak = timed(lambda: e.embed_tokens(tokens), args.reps, sampler)
        record("ESM-2 3B", name, "ours packed fp8 unfused (fused: false, previous)", len(tokens), n_tok, sec_u, busy,
               peak, precision="fp8", attention=e.backend, fused_vs_unfused=f"{100 * (sec / sec_u - 1):+.2f}% time",
               **{f"fused_vs_unfused_{k}": v for k, v in cos_stats(fp8_vec, vec).items()})
        del e
        cleanup()

    # ours, padded FP16
    if not args.quick:
        e = ours_esm(state, cfg, "fp16", False, attention="sdpa", budget=st.token_budget)
        pad_vec = e.embed_tokens(tokens)
        sec, busy, peak = timed(lambda: e.embed_tokens(tokens), args.reps, sampler)
        record("ESM-2 3B", name, "ours padded", len(tokens), n_tok, sec, busy, peak, precision="fp16", attention="sdpa",
               **{f"vs_packed_{k}": v for k, v in cos_stats(pad_vec, ours_vec).items()})
        del e
        cleanup()

    # transformers EsmModel FP16 SDPA, padded batches of 192
    m = hf_esm(state, cfg)
    hf_vec = hf_esm_run(m, tokens)
    sec, busy, peak = timed(lambda: hf_esm_run(m, tokens), args.reps, sampler)
    record("ESM-2 3B", name, "hf sdpa fp16", len(tokens), n_tok, sec, busy, peak, precision="fp16", batch=192,
           **{f"vs_ours_{k}": v for k, v in cos_stats(hf_vec, ours_vec).items()})
    del m
    cleanup()

    # fair-esm FP16, large batches
    try:
        import esm  # noqa: F401
    except ImportError:
        log("  fair-esm not installed: skipping the fair-esm peers")
        return
    m, alphabet = fair_esm(state, cfg, half=True)
    sub = proteins[:slow * 4] if len(proteins) > slow * 4 else proteins
    sub_tok = sum(len(p) + 2 for p in sub)
    sec, busy, peak = timed(lambda: fair_esm_run(m, alphabet, sub, 16384), max(1, args.reps - 1), sampler)
    record("ESM-2 3B", name, "fair-esm fp16", len(sub), sub_tok, sec, busy, peak, precision="fp16", batch_tokens=16384)
    del m
    cleanup()

    # the original: fair-esm FP32, 2,048-token batches (one timed run on a prefix)
    m, alphabet = fair_esm(state, cfg, half=False)
    sub = proteins[:slow]
    sub_tok = sum(len(p) + 2 for p in sub)
    orig_vec = fair_esm_run(m, alphabet, sub, 2048)
    sec, busy, peak = timed(lambda: fair_esm_run(m, alphabet, sub, 2048), 1, sampler)
    record("ESM-2 3B", name, "original fp32", len(sub), sub_tok, sec, busy, peak, precision="fp32", batch_tokens=2048,
           **{f"ours_vs_original_{k}": v for k, v in cos_stats(ours_vec[: len(sub)], orig_vec).items()})
    del m
    cleanup()

    if args.quick:
        return
    # FP16 vs FP32 peak memory for the same packed batch (one budget-sized batch)
    one = tokens[: max(1, 16384 // int(np.mean([len(t) for t in tokens])))]
    peaks = {}
    for precision in ("fp16", "fp32"):
        reset_peak()
        e = ours_esm(state, cfg, precision, True, budget=16384)
        e.embed_tokens(one)
        peaks[precision] = peak_gib()
        del e
        cleanup()
    ROWS.append(dict(model="ESM-2 3B", workload=name, method="memory fp16/fp32 (same packed batch)",
                     fp16_peak_gib=round(peaks["fp16"], 2), fp32_peak_gib=round(peaks["fp32"], 2),
                     ratio=round(peaks["fp16"] / peaks["fp32"], 3)))
    log(f"  peak memory, same batch: fp16 {peaks['fp16']:.1f} GiB, fp32 {peaks['fp32']:.1f} GiB, "
        f"ratio {peaks['fp16'] / peaks['fp32']:.3f}")
    del state
    cleanup()


# --------------------------------------------------------------------------- DNABERT-S


def dna_tokenizer():
    from virnucflow.steps.demo import train_dna_tokenizer

    rng = np.random.default_rng(0)
    tok = train_dna_tokenizer(["".join(rng.choice(list("ACGT"), 5000)) for _ in range(400)], vocab_size=4096)
    tok.no_padding()
    tok.no_truncation()
    return tok


def bench_dnabert(name: str, nucleotides: list[str], args, sampler, tok) -> None:
    log(f"\nDNABERT-S, workload {name}: {len(nucleotides)} windows")
    cfg = DNABERTSConfig(vocab_size=4096, **DNABERT_SIZE)
    with torch.device(DEV):
        m = DNABERTS(cfg)
    init_random(m, 2)
    state = {k: v.detach().cpu() for k, v in m.state_dict().items()}
    del m
    cleanup()
    tokens = [np.asarray(e.ids, dtype=np.int64) for e in tok.encode_batch(nucleotides)]
    n_tok = sum(len(t) for t in tokens)
    log(f"  tokens per window: median {int(np.median([len(t) for t in tokens]))}")

    def make(precision, packing, attention, budget="auto"):
        with torch.device("meta"):
            mm = DNABERTS(cfg)
        mm.load_state_dict(state, assign=True)
        mm.tokenizer = SimpleNamespace(pad_id=3)  # tokens come from the benchmark's own tokenizer
        return Embedder.create(mm, EmbedOptions.defaults(precision=precision, packing=packing, attention=attention,
                                                         token_budget=budget, device=str(DEV)))

    e = make("fp16", True, "auto")
    t0 = time.perf_counter()
    ours_vec = e.embed_tokens(tokens)
    log(f"  first packed run (includes FlexAttention compilation): {time.perf_counter() - t0:.1f} s")
    from virnucflow.engine import EmbedStats

    st = EmbedStats()
    e.embed_tokens(tokens, st)
    sec, busy, peak = timed(lambda: e.embed_tokens(tokens), args.reps, sampler)
    record("DNABERT-S", name, "ours packed", len(tokens), n_tok, sec, busy, peak, precision="fp16", attention=e.backend,
           budget=st.token_budget, packing_eff=round(st.packing_efficiency, 4))
    del e
    cleanup()

    if CUDA:  # FlexAttention (auto's choice before the Triton kernel)
        e = make("fp16", True, "flex", budget=st.token_budget)
        t0 = time.perf_counter()
        vec = e.embed_tokens(tokens)
        log(f"  first flex run (includes FlexAttention compilation): {time.perf_counter() - t0:.1f} s")
        sec_f, busy, peak = timed(lambda: e.embed_tokens(tokens), args.reps, sampler)
        record("DNABERT-S", name, "ours packed flex", len(tokens), n_tok, sec_f, busy, peak, precision="fp16",
               attention="flex", vs_auto=f"{100 * (sec_f / sec - 1):+.2f}% time",
               **{f"vs_auto_{k}": v for k, v in cos_stats(vec, ours_vec).items()})
        del e
        cleanup()

    e = make("fp16", True, "sdpa", budget=st.token_budget)
    sec, busy, peak = timed(lambda: e.embed_tokens(tokens), args.reps, sampler)
    record("DNABERT-S", name, "ours packed sdpa", len(tokens), n_tok, sec, busy, peak, precision="fp16", attention="sdpa")
    del e
    cleanup()

    # our reference model, FP16, padded: "auto" is the FP32-softmax math path (exact ALiBi);
    # SDPA (ALiBi bias rounded to FP16) is the fastest padded variant
    for attention in ("auto", "sdpa"):
        e = make("fp16", False, attention, budget=16384)
        pad_vec = e.embed_tokens(tokens)
        sec, busy, peak = timed(lambda: e.embed_tokens(tokens), args.reps, sampler)
        record("DNABERT-S", name, f"ours padded {e.backend}", len(tokens), n_tok, sec, busy, peak, precision="fp16",
               attention=e.backend, **{f"vs_packed_{k}": v for k, v in cos_stats(pad_vec, ours_vec).items()})
        del e
        cleanup()

    # the original: one sequence at a time in FP32
    e = make("fp32", False, "math", budget=1)
    sub = tokens[: max(1, len(tokens) // args.slow_fraction)]
    orig_vec = e.embed_tokens(sub)
    sec, busy, peak = timed(lambda: e.embed_tokens(sub), 1, sampler)
    record("DNABERT-S", name, "original fp32 1-by-1", len(sub), sum(len(t) for t in sub), sec, busy, peak,
           precision="fp32", **{f"ours_vs_original_{k}": v for k, v in cos_stats(ours_vec[: len(sub)], orig_vec).items()})
    del e, state
    cleanup()


# --------------------------------------------------------------------------- the whole job


def bench_job(args, sampler, tok) -> None:
    """``virnucflow embed`` on a >= 100,000-frame shard, files written and read as in the workflow."""
    from virnucflow.steps.demo import random_dnabert, random_esm2, save_dnabert_dir, save_fair_esm
    from virnucflow.steps.embed import embed_shard
    from virnucflow.models.manifest import check_models
    from virnucflow.steps.shard import SHARD_HEADER

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    log(f"\nWhole embedding job: {args.job_frames} frames of 500 bp windows")
    nts, aas = virnucpro_frames(args.job_frames, seed=7)
    with open(work / "shard.tsv", "w") as f:
        f.write(SHARD_HEADER)
        for i, (nt, aa) in enumerate(zip(nts, aas)):
            f.write(f"{i}\tw{i}_chunk_1F1\t{nt}\t{aa}\n")
    esm_path, dn_path = work / "esm2_t36_3B_random.pt", work / "dnabert_s_random"
    if not esm_path.exists() and "esm2" in args.job_models:
        with torch.device(DEV):
            m = random_esm2(KNOWN_CONFIGS[ESM_SIZE], 5).half()  # the published file is FP16
        m = m.cpu()
        save_fair_esm(m, esm_path)
        del m
        cleanup()
    if not dn_path.exists():
        save_dnabert_dir(random_dnabert(DNABERTSConfig(vocab_size=tok.get_vocab_size(), **DNABERT_SIZE), 6), dn_path, tok)
    from virnucflow.steps.demo import random_classifier, save_original_classifier

    width = KNOWN_CONFIGS[ESM_SIZE].embed_dim + DNABERTSConfig(**DNABERT_SIZE).hidden_size
    save_original_classifier(random_classifier(width, 512, 0), work / "clf.pth")
    if not esm_path.exists():  # DNABERT-S only: a small ESM-2 stands in for the manifest
        save_fair_esm(random_esm2(KNOWN_CONFIGS["esm2_t6_8M_UR50D"], 5), esm_path)
        width = KNOWN_CONFIGS["esm2_t6_8M_UR50D"].embed_dim + DNABERTSConfig(**DNABERT_SIZE).hidden_size
        save_original_classifier(random_classifier(width, 512, 0), work / "clf.pth")
    check_models({"esm2": str(esm_path), "dnabert_s": str(dn_path), "classifier": str(work / "clf.pth")}, work / "models.json")
    for kind in args.job_models.split(","):
        t0 = time.monotonic()
        stats = embed_shard(kind, work / "models.json", work / "shard.tsv", work / f"{kind}.h5",
                            EmbedOptions.defaults(device=str(DEV)))
        t1 = time.monotonic()
        load = round(stats.seconds_load, 2)
        # NVML utilisation over everything after the model is on the GPU: planning,
        # batches, the copy back, the NaN/Inf check and writing the HDF5 file.
        busy_after_load = sampler.mean(t0 + stats.seconds_load, t1)
        row = dict(model=kind, workload=f"job {args.job_frames} frames", method="virnucflow embed (whole job)",
                   sequences=stats.sequences, unique=stats.unique_sequences, tokens=stats.tokens,
                   wall_s=round(t1 - t0, 1), compute_s=round(stats.seconds_compute, 1),
                   after_load_s=round(t1 - t0 - stats.seconds_load, 1),
                   tokens_per_s_compute=round(stats.tokens_per_second), tokens_per_s_wall=round(stats.tokens / (t1 - t0)),
                   gpu_busy_after_load=round(busy_after_load, 3), packing_eff=round(stats.packing_efficiency, 4),
                   dedup_saving=round(stats.dedup_saving, 4), load_s=load)
        ROWS.append(row)
        log(f"  {kind}: {row}")


# --------------------------------------------------------------------------- main


class _NoSampler:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def mean(self, t0, t1):
        return float("nan")


def write_report(out: Path, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    gpu = meta["gpu"].replace(" ", "_")
    stem = out / f"embed_throughput_{gpu}_{meta['date']}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": ROWS}, indent=1) + "\n")
    lines = [f"# Embedding throughput, {meta['gpu']}, {meta['date']}", "",
             f"torch {meta['torch']}, CUDA {meta['cuda']}, transformers {meta.get('transformers')}, "
             f"fair-esm {meta.get('fair_esm')}, python {meta['python']}", "",
             "| model | workload | method | tokens/s | seqs/s | peak GiB | GPU busy | notes |", "|---|---|---|---|---|---|---|---|"]
    skip = {"model", "workload", "method", "tokens_per_s", "seqs_per_s", "peak_gib", "gpu_busy", "seconds", "sequences", "tokens"}
    for r in ROWS:
        notes = ", ".join(f"{k}={v}" for k, v in r.items() if k not in skip)
        lines.append(f"| {r['model']} | {r['workload']} | {r['method']} | {r.get('tokens_per_s', '')} | "
                     f"{r.get('seqs_per_s', '')} | {r.get('peak_gib', '')} | {r.get('gpu_busy', '')} | {notes} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    log("\n" + "\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--models", default="esm2,dnabert")
    p.add_argument("--workloads", default="500bp,mixed")
    p.add_argument("--n-esm", type=int, default=3000, help="proteins per ESM-2 workload")
    p.add_argument("--n-dnabert", type=int, default=20000, help="windows per DNABERT-S workload")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--slow-fraction", type=int, default=10, help="slow peers run on 1/N of the sequences")
    p.add_argument("--job", action="store_true", help="also time the whole embedding job")
    p.add_argument("--job-frames", type=int, default=100_000)
    p.add_argument("--job-models", default="esm2,dnabert_s")
    p.add_argument("--workdir", default="/tmp/virnucflow_bench")
    p.add_argument("--tiny", action="store_true", help="small models and inputs: a smoke test of this script (CPU ok)")
    p.add_argument("--quick", action="store_true", help="ESM-2: ours (fused, unfused, FP8 both) and the peers only "
                   "(no NaN-check, varlen, padded and memory rows)")
    args = p.parse_args()
    if args.tiny:
        global ESM_SIZE, DNABERT_SIZE
        ESM_SIZE = "esm2_t6_8M_UR50D"
        DNABERT_SIZE.update(hidden_size=96, num_hidden_layers=2, intermediate_size=192)
        args.n_esm, args.n_dnabert, args.reps, args.job_frames = 60, 200, 1, 300
    meta = dict(gpu=torch.cuda.get_device_name() if CUDA else "cpu", date=dt.date.today().isoformat(), torch=torch.__version__,
                cuda=torch.version.cuda, python=platform.python_version(), args=vars(args))
    for mod, key in (("transformers", "transformers"), ("esm", "fair_esm")):
        try:
            meta[key] = getattr(__import__(mod), "__version__", "installed")
        except ImportError:
            meta[key] = None
    log(json.dumps(meta))
    with (UtilizationSampler() if CUDA else _NoSampler()) as sampler:
        tok = dna_tokenizer() if ("dnabert" in args.models or args.job) else None
        for w in args.workloads.split(","):
            if "esm2" in args.models:
                _, aas = (virnucpro_frames(args.n_esm, seed=1) if w == "500bp" else mixed_frames(args.n_esm, seed=1))
                bench_esm(w, aas, args, sampler)
            if "dnabert" in args.models:
                nts, _ = (virnucpro_frames(args.n_dnabert, seed=2) if w == "500bp" else mixed_frames(args.n_dnabert, seed=2))
                bench_dnabert(w, nts, args, sampler, tok)
        if args.job:
            bench_job(args, sampler, tok)
    write_report(Path(args.out), meta)


if __name__ == "__main__":
    main()
