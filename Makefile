# The two commands: `make demo` (set up + run every process) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch's CPU build comes from this index when set (users online: the Makefile comment below);
# empty = pip's configured indexes (on the project's machines a local CPU wheel).
TORCH_INDEX_URL ?=
STAMP  := $(VENV)/.installed

.PHONY: install up down status demo test lint docs bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch before the package that needs it (sentence-transformers), and the CPU build only:
	# from plain PyPI on Linux `torch==2.13.0` is the CUDA build, so users online run
	# `make install TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu`.
	$(BIN)/python -m pip install -q 'torch==2.13.0' $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/python -m pip install -q -e '.[dev]'
	# refuse a CUDA build that slipped in through another resolver run
	$(BIN)/python -c "import torch, sys; sys.exit(f'torch {torch.__version__} is a CUDA build; reinstall the CPU one (docs/operations/local-stack.md, Installing torch CPU-only)' if torch.version.cuda else 0)"
	# OPA's evaluator: the wheel declares Python >=3.14 but is a ctypes wrapper that works on 3.11
	$(BIN)/python -m pip install -q --no-deps --ignore-requires-python 'opa-golib-python-bindings==0.4.4'
	touch $(STAMP)

install: $(STAMP)

up: install            ## start the local stack (Temporal dev server + Web UI, model server, approver inbox)
	$(BIN)/python temporal-dev/stack.py up

down:                  ## stop the local stack
	@if [ -x $(BIN)/python ]; then $(BIN)/python temporal-dev/stack.py down; else echo "nothing to stop"; fi

status:
	$(BIN)/python temporal-dev/stack.py status

demo: up               ## run every process end to end (close, auction, HR, customer, support)
	$(BIN)/baton demo

test: install          ## run the tests (starts its own Temporal dev server on a free port)
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy workflows activities
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet -d .baton/site

docs: install          ## build the documentation site (mkdocs.yml) into .baton/site, strictly
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d .baton/site

bench: install         ## performance table (see docs/operations/performance.md)
	$(BIN)/python bench/finance_close_bench.py
	$(BIN)/python bench/knowledge_bench.py
	$(BIN)/python bench/policy_bench.py

clean: down
	rm -rf .baton
