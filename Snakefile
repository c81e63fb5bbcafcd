# The workflow is workflow/Snakefile (the layout the Snakemake Workflow Catalog reads); this file lets
# `snakemake` run from the checkout's top folder.
include: "workflow/Snakefile"
