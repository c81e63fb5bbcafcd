"""The pipeline's steps, one module each, in the order a run makes them.

``preprocess`` (windows, six frames, stop-codon filter: the original's bytes) -> ``shard`` (token-balanced
shard plans) -> ``embed`` (the embedding job of a shard, over ``virnucflow.engine``) -> ``nan_gate`` ->
``score`` (each shard through the classifier) -> ``predict`` (a sample's calls, with ``calling`` and
``tracks``) -> ``report``. Beside them: ``fp32_compare`` (FP16 against FP32 on a sample's frames),
``selftest`` (an installation against the original's outputs) and ``demo`` (the tiny random demo models).
"""
