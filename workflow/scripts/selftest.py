"""Rule selftest: this installation against the original VirNucPro's outputs (virnucflow.steps.selftest)."""
import logging

from virnucflow.planning.gpu import use_compile_cache
from virnucflow.steps.selftest import check_verdict, lines, selftest
from virnucflow.planning.step import rule_step

with rule_step(snakemake):
    use_compile_cache(snakemake.params.compile_cache)
    table = selftest(snakemake.params.config, snakemake.input.models, snakemake.output.table, threads=snakemake.threads)
    for line in lines(table):
        logging.getLogger("virnucflow").info("%s", line)
    check_verdict(table, snakemake.log[0])
