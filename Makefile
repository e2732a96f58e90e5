# Two entry points: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: the CPU wheel. An unpinned torch would pull GBs of CUDA packages.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/vrprobe eval --model zoo:llava --data easy-vqa:test --limit 500 --out runs/demo-llava --overwrite
	$(BIN)/vrprobe eval --model zoo:paligemma --data easy-vqa:test --limit 500 --out runs/demo-paligemma --overwrite
	$(BIN)/vrprobe eval --model zoo:qwen2vl --data easy-vqa:test --limit 500 --out runs/demo-qwen2vl --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs
