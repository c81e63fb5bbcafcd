"""Planning and running the workflow, without torch (the Snakefile imports these).

- ``config``: the config schema (the one place of its defaults), loading and the embedding options;
- ``checks``: start-up checks of the config (one line per mistake);
- ``inputs``, ``batches``: each input's size, hash and frames; which samples share embedding jobs;
- ``resources``: each rule's memory, time, CPUs and GPU;
- ``profiles``, ``gpu``: the SLURM profile; claiming a GPU on a workstation;
- ``step``: the error boundary of every rule script and CLI command;
- ``progress``, ``status``: progress lines of long jobs, and ``virnucflow status``.
"""
