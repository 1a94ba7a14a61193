# Two entry points, each sets itself up: `make demo` (the main job) and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The CPU torch wheel where there is no GPU: an unpinned torch would pull a multi-GB CUDA build.
TORCH := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch" || echo "torch==2.13.0")

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

.PHONY: demo test bench
demo: $(STAMP)
	$(VENV)/bin/cubestream demo

test: $(STAMP)
	$(PY) -m pytest -q -ra --durations=25

bench: $(STAMP)
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done
