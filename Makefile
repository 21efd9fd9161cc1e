# Two entry points (see README): `make reproduce` and `make test`. Both create the environment if needed.
# Inside an activated conda env (GPU box: `conda env create -f environment.yml`) the env's python is used;
# otherwise a local .venv is created with the exact pins of pyproject.toml.
PROFILE ?= tiny
ARGS ?=
SYSTEM_PYTHON ?= python3
VENV := .venv
ifdef CONDA_PREFIX
PY := python
ENV_READY :=
else
PY := $(VENV)/bin/python
ENV_READY := $(VENV)/.installed
endif
# Hub access: offline for the tiny profile (everything it needs ships in medkit/configs/) and for
# tests (.ci/run exports it too); other profiles (PROFILE=paper) let the metric packages fetch their
# weights on first use. A value already in the environment wins.
ifeq ($(PROFILE),tiny)
export HF_HUB_OFFLINE ?= 1
endif
test: export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: env reproduce test clean-runs

env: $(ENV_READY)

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(SYSTEM_PYTHON) -m venv $(VENV)
	# torch first and exactly pinned, so no later resolver step can pull a CUDA build here
	$(VENV)/bin/python -m pip install -q torch==2.13.0
	# the metrics extra too (20-40 s, ~330 MB), so the report-metric backends' tests always run
	$(VENV)/bin/python -m pip install -q -e '.[dev,nb,metrics]'
	# DeepSpeed's CPU communication op is a g++ build (~30 s): once here, not in the first training notebook
	$(VENV)/bin/python -m medkit.training.deepspeed_setup --build-cpu-ops
	# strip notebook outputs on commit in this clone (see .gitattributes)
	if [ -d .git ]; then $(VENV)/bin/python -m nbstripout --install; fi
	touch $@

# every notebook in order through papermill; executed copies and a summary in runs/<run id>/.
# Stamps carry the commit's date (SOURCE_DATE_EPOCH), so rerunning one commit gives byte-identical outputs.
reproduce: $(ENV_READY)
	SOURCE_DATE_EPOCH=$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null)} \
	$(PY) -m medkit notebooks --profile $(PROFILE) $(ARGS)

test: $(ENV_READY)
	$(PY) -m pytest $(ARGS)

clean-runs:
	rm -rf runs/
