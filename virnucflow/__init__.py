"""VirNucFlow: VirNucPro's viral short-sequence identification as a Snakemake workflow."""

__version__ = "0.9.0"
