# The README's commands. `make study` sets everything up and runs the default study;
# `make test` runs the test suite (this is what .ci/run calls).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The torch build to install; override for another platform, e.g.
#   make TORCH_SPEC="torch==2.9.1 torchvision==0.24.1" study
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PRESET ?= params/default.yaml

.PHONY: setup study smoke test clean-reports

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[notebook,dev]'
	touch $@

study: setup
	$(PY) -m ptqlib run $(PRESET)

smoke: setup
	$(PY) -m ptqlib run params/smoke.yaml

test: setup
	$(PY) -m pytest -q

clean-reports:
	rm -rf reports/*/
