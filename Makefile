# Two commands do all the set-up:
#   make demo   create the environment, run the whole workflow on the bundled demo
#   make test   create the environment, run the tests
VENV   ?= .venv
PYTHON ?= python3
# The CPU build of PyTorch already on these machines; override on GPU hosts,
# e.g. make TORCH_SPEC='torch>=2.10' test
TORCH_SPEC ?= torch==2.13.0
CORES  ?= 2
BIN     = $(VENV)/bin

.PHONY: env demo test test-long lint report clean-demo

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test,slurm]"
	touch $@

demo: env
	$(BIN)/snakemake --configfile config/demo.yaml --cores $(CORES) --printshellcmds
	@$(BIN)/virnucflow outputs results

test: env
	$(BIN)/python -m pytest -q

# the long cases (the workflow killed at 11 points and resumed; a plain pip install running the demo; the
# workflow used as a module from another directory), ~20 min on 2 cores
test-long: env
	$(BIN)/python -m pytest -q -m long

lint: env
	$(BIN)/snakemake --lint --configfile config/demo.yaml

# with the fp32_compare QC when `snakemake --configfile config/demo.yaml fp32_compare` has run
report: env
	$(BIN)/snakemake --configfile config/demo.yaml --report results/report.html all \
	    $$(test -e results/demo_lambda/qc/fp32_compare/summary.tsv -a -e results/demo_controls/qc/fp32_compare/summary.tsv && echo fp32_compare)

clean-demo:
	rm -rf results/demo_* logs resources/demo_models
