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

# The installer. uv (from PyPI, into the venv) unpacks torch's ~6 GB of wheels in parallel: the
# environment takes 41.5 s where pip took ~2.5 min (benchmarks/results/make_study.txt). It is given
# the package indexes pip is configured with, and picks the best version across them as pip does.
# `make INSTALLER=pip study` installs with pip alone.
INSTALLER ?= uv
PIP_INDEX     := $(shell $(PYTHON) -m pip config get global.index-url 2>/dev/null)
PIP_EXTRA     := $(shell $(PYTHON) -m pip config get global.extra-index-url 2>/dev/null)
UV_INDEXES    := $(if $(PIP_INDEX),--index-url $(PIP_INDEX)) $(foreach u,$(PIP_EXTRA),--extra-index-url $(u))
UV            := $(VENV)/bin/uv pip install --quiet --python $(PY) --index-strategy unsafe-best-match $(UV_INDEXES)

# Neither installer byte-compiles here: Python writes each module's bytecode the first time it is
# imported, once and only for what is used (importing torch, torchvision, scikit-learn, pandas and
# scipy.stats: 13.5 s without bytecode, 5.8 s with), where compiling everything at install took ~50 s. So the recipes below write bytecode even where PYTHONDONTWRITEBYTECODE is set; without
# it every process would recompile torch as it starts.
unexport PYTHONDONTWRITEBYTECODE

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
ifeq ($(INSTALLER),uv)
	$(PY) -m pip install --quiet uv
	$(UV) $(TORCH_SPEC) -e '.[notebook,dev]'
else
	$(PY) -m pip install --quiet --no-compile $(TORCH_SPEC)
	$(PY) -m pip install --quiet --no-compile -e '.[notebook,dev]'
endif
	touch $@

study: setup
	$(PY) -m ptqlib run $(PRESET)

smoke: setup
	$(PY) -m ptqlib run params/smoke.yaml

test: setup
	$(PY) -m pytest -q

clean-reports:
	rm -rf reports/*/
