# Two entry points: `make demo` and `make test`. Each sets up .venv first (idempotent, quick when done).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch and torchvision are pinned to the releases this project is tested with (CPU use; the
# wheels are the standard ones). Override e.g. `make TORCH_SPEC="torch==2.9.1 torchvision==0.24.1"`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.modprune-installed
DEPS := pyproject.toml plugins/tokenc3-lsnet/pyproject.toml Makefile
PYTEST_ARGS ?=

.PHONY: setup demo demo-quick test test-fast test-long bench results clean

setup: $(STAMP)

$(STAMP): $(DEPS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check $(TORCH_SPEC)
	$(PIP) install -q --disable-pip-version-check -e ".[ultralytics,data,plots,onnx,search,dev]" -e plugins/tokenc3-lsnet
	touch $(STAMP)

demo: setup
	$(VENV)/bin/modprune demo

demo-quick: setup
	$(VENV)/bin/modprune demo --quick

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# The long tests the default suite leaves out: every public architecture of tests/zoo (it runs three of
# them) and docs/getting-started.md executed as written: 30-50 min on 2 cores.
test-long: setup
	MODPRUNE_LONG_TESTS=1 $(PY) -m pytest tests/zoo tests/docs/test_getting_started.py $(PYTEST_ARGS)

bench: setup
	$(PY) -m pytest benchmarks --benchmark-only -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
