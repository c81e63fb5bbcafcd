"""Files in and out: inputs as they come, and the workflow's own tables and embedding files.

- ``opening``: a path opened whatever its compression (from its first bytes);
- ``fasta``, ``reads``, ``alignments``: FASTA, FASTQ (single and paired) and SAM/BAM/CRAM records;
- ``samples``: the sample sheet;
- ``tables``: TSV files as the original writes them; ``atomic``: outputs written whole or not at all;
- ``features``: embedding files (HDF5), the per-sample feature table and the original's ``_merged.pt``.
"""
