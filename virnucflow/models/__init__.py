"""Model code: ESM-2 and DNABERT-S in plain PyTorch, and what both share.

- ``esm2``, ``dnabert``: one module per model (reference padded forward and the
  packed fast path);
- ``packing``: token-budget packing and batch layouts (packed and padded);
- ``attention``: the attention backends (varlen FlashAttention, flash-attn,
  FlexAttention, SDPA, plain math);
- ``precision``: dtype and device policy;
- ``pooling``: the original VirNucPro's mean pooling for each model;
- ``kernels``: fused Triton kernels (rotary, GEGLU, add+LayerNorm) with their
  PyTorch references;
- ``random_weights``: deterministic random weights for demos, tests, benchmarks;
- ``checkpoints``: reading fair-esm and Hugging Face files, strict loading;
- ``acquire``: resolving model names to files, downloads, validation.
"""
