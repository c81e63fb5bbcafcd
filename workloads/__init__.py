"""Synthetic inputs and published model sizes shared by the tests and the benchmarks (not shipped).

- ``frames``: the frames VirNucPro feeds its models (``virnucpro_frames``) and mixed-length ones;
- ``readsets``: read sets for whole-workflow runs (``unique``: no duplicate frames);
- ``published``: the published ESM-2 sizes, and fair-esm -> Hugging Face names for writing HF files.
"""
