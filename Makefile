# Two entry points: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: the CPU wheel. An unpinned torch would pull GBs of CUDA packages.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The main job on the built-in default: the study over the three zoo models, clean and shifted (Gaussian pixel noise),
# on a documented 1,000-question type-stratified subset of easy-VQA test so that it finishes in a few minutes on 2 cores.
DEMO_LIMIT ?= 1000
demo: $(STAMP)
	$(BIN)/vrprobe study --models zoo:llava,zoo:paligemma,zoo:qwen2vl \
		--data "easy-vqa:test,easy-vqa:test?noise=0.3" --limit $(DEMO_LIMIT) --out runs/demo --overwrite

# The report test opens report.html in a real headless browser: Debian's chromium, installed when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test: $(STAMP) chromium
	VRPROBE_ARTIFACTS=runs/artifacts $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs
