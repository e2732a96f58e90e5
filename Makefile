# Two entry points: `make demo` and `make test`. Both create .venv when it is missing.
# `make test-compat`: the model tests against the newest transformers pyproject.toml admits, in .venv-compat.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-easy test test-numerics test-compat test-polygraph lint clean chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: the CPU wheel. An unpinned torch would pull GBs of CUDA packages. constraints.txt fixes the
# transformers this venv tests (the one the zoo and every measured figure used); pyproject.toml declares the range.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev,ray]"
	touch $(STAMP)

# The main job on the built-in default: the study over the three scenes zoo models on scenes test, its lures and its
# test with Gaussian pixel noise, on a documented type-stratified subset (DEMO_LIMIT questions per split, DEMO_TRACE
# traced per model, the probe trained on DEMO_PROBE scenes:train questions) so that it finishes in a few minutes on
# 2 cores. `make demo-easy`: the easy-VQA study of the first zoo (the README's earlier figures).
DEMO_LIMIT ?= 400
DEMO_TRACE ?= 40
DEMO_PROBE ?= 400
demo: $(STAMP)
	$(BIN)/vrprobe study --models zoo:llava-scenes,zoo:paligemma-scenes,zoo:qwen2vl-scenes \
		--data "scenes:test,scenes:lures,scenes:test?noise=0.3" --limit $(DEMO_LIMIT) --trace-limit $(DEMO_TRACE) \
		--probe-limit $(DEMO_PROBE) --out runs/demo --overwrite

EASY_LIMIT ?= 1000
demo-easy: $(STAMP)
	$(BIN)/vrprobe study --models zoo:llava,zoo:paligemma,zoo:qwen2vl \
		--data "easy-vqa:test,easy-vqa:test?noise=0.3" --limit $(EASY_LIMIT) --out runs/demo-easy --overwrite

# The report test opens report.html in a real headless browser: Debian's chromium, installed when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# Two pytest workers, one torch thread each: the suite's many small forwards run faster side by side than with two
# threads fighting over each one (serial, two threads: 9 min 21 s on a clean clone of 2 cores).
TEST_WORKERS ?= 2
test: $(STAMP) chromium
	OMP_NUM_THREADS=1 VRPROBE_ARTIFACTS=runs/artifacts $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

# The numeric tests the way other machines run them: torch's deterministic algorithms, at 1 and at 2 torch threads
# (another thread count sums in another order, as another CPU's BLAS does). Each tolerance comes from tests/numerics.py.
NUMERIC_TESTS ?= tests/test_attribution.py tests/test_tracing.py tests/test_interventions.py tests/test_exact_work.py \
	tests/test_precision.py
test-numerics: $(STAMP)
	for threads in 1 2; do \
		OMP_NUM_THREADS=$$threads VRPROBE_TORCH_THREADS=$$threads VRPROBE_DETERMINISTIC=1 \
			$(BIN)/python -m pytest -q $(NUMERIC_TESTS) || exit 1; \
	done

# Layer replay (vrprobe.tracing) calls transformers' decoder layers directly, so it depends on how they are called.
# This runs the tests that load models against the newest supported transformers, in a venv of its own so that
# `make test` keeps .venv as it is. Its stamp names the version: another COMPAT_TRANSFORMERS reinstalls.
# FutureWarning is an error here: an argument transformers deprecates (as 5.24 did `past_key_values`) fails early.
COMPAT_TRANSFORMERS ?= 5.24.0
COMPAT_VENV := .venv-compat
COMPAT_BIN := $(COMPAT_VENV)/bin
COMPAT_STAMP := $(COMPAT_VENV)/.installed-$(COMPAT_TRANSFORMERS)
COMPAT_TESTS ?= tests/test_models.py tests/test_tracing.py tests/test_interventions.py

$(COMPAT_BIN)/python:
	$(PYTHON) -m venv $(COMPAT_VENV)

$(COMPAT_STAMP): $(COMPAT_BIN)/python pyproject.toml
	$(COMPAT_BIN)/pip install --quiet --upgrade pip
	$(COMPAT_BIN)/pip install --quiet torch==2.13.0
	$(COMPAT_BIN)/pip install --quiet -e ".[dev]" "transformers==$(COMPAT_TRANSFORMERS)"
	rm -f $(COMPAT_VENV)/.installed-*
	touch $(COMPAT_STAMP)

test-compat: $(COMPAT_STAMP)
	$(COMPAT_BIN)/python -c 'import transformers; print("transformers", transformers.__version__)'
	$(COMPAT_BIN)/python -m pytest -q -W error::FutureWarning $(COMPAT_TESTS)

# lm-polygraph's estimators against vrprobe's uncertainty baselines (tests/polygraph/), in a venv of its own so that the
# default install never carries it: lm-polygraph 0.7.0 declares ~35 heavy dependencies (spacy, openai, bitsandbytes,
# fschat, ...). It goes in with --no-deps, then only what `import lm_polygraph.estimators.*` needs (its package
# __init__ imports every model wrapper and calculator): POLYGRAPH_IMPORTS, found by importing until nothing failed.
# `make test` skips tests/polygraph/ (the tests skip themselves where lm_polygraph does not import).
POLYGRAPH_VERSION ?= 0.7.0
POLYGRAPH_VENV := .venv-polygraph
POLYGRAPH_BIN := $(POLYGRAPH_VENV)/bin
POLYGRAPH_STAMP := $(POLYGRAPH_VENV)/.installed-$(POLYGRAPH_VERSION)
POLYGRAPH_IMPORTS := openai requests nltk sentence-transformers diskcache spacy boostedprob rouge-score sacrebleu \
	bert-score omegaconf

$(POLYGRAPH_BIN)/python:
	$(PYTHON) -m venv $(POLYGRAPH_VENV)

$(POLYGRAPH_STAMP): $(POLYGRAPH_BIN)/python pyproject.toml constraints.txt
	$(POLYGRAPH_BIN)/pip install --quiet --upgrade pip
	$(POLYGRAPH_BIN)/pip install --quiet torch==2.13.0
	$(POLYGRAPH_BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	$(POLYGRAPH_BIN)/pip install --quiet --no-deps "lm-polygraph==$(POLYGRAPH_VERSION)"
	$(POLYGRAPH_BIN)/pip install --quiet -c constraints.txt $(POLYGRAPH_IMPORTS)
	rm -f $(POLYGRAPH_VENV)/.installed-*
	touch $(POLYGRAPH_STAMP)

test-polygraph: $(POLYGRAPH_STAMP)
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(POLYGRAPH_BIN)/python -m pytest -q tests/polygraph

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(COMPAT_VENV) $(POLYGRAPH_VENV) runs
