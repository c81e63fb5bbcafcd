"""Model code: the models in plain PyTorch, what they share, and the registry of models.

- ``registry``: the one list of embedding models (name, what each reads, its loader, tokens, known names,
  demo model, the original's file) and of the published classifiers; a third model registers here;
- ``interface``: the protocol every embedding model satisfies for the engine (``virnucflow.engine``);
- ``esm2``, ``dnabert_s``: one module per model (reference padded forward and the packed fast path);
- ``classifier``: VirNucPro's MLP and the loading of the original's ``.pth`` files;
- ``packing``: token-budget packing and batch layouts (packed and padded);
- ``attention``: the attention backends (Triton, varlen FlashAttention, flash-attn, FlexAttention, SDPA, math);
- ``kernels``: fused Triton kernels (rotary, GEGLU, add+LayerNorm, packed attention) beside their PyTorch
  references; ``fp8``: E4M3 linears for ``precision: fp8``; ``precision``: dtype and device policy;
- ``pooling``: the original VirNucPro's mean pooling for each model;
- ``checkpoints``: reading fair-esm and Hugging Face files, strict loading; ``random_weights``: deterministic
  random weights for demos, tests and benchmarks;
- ``acquire``: model names to files, downloads; ``manifest``: each model's check and manifest.
"""
