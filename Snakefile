# The workflow is workflow/Snakefile (the layout the Snakemake Workflow Catalog reads); this file lets
# `snakemake` run from the checkout's top folder.
include: "workflow/Snakefile"


# Snakemake's include: resets the default target the included file set: set it again.
workflow.default_target = "all"
