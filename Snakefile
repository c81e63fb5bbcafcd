# VirNucFlow: VirNucPro's viral short-sequence identification as a Snakemake workflow.
# Run:  snakemake --cores N            (local; config/config.yaml)
#       snakemake --profile slurm       (SLURM; once: virnucflow install-profile slurm)
# See README.md and config/README.md.
from snakemake.utils import min_version

min_version("9.20")


configfile: workflow.source_path("config/config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/qc.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/selftest.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
