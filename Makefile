# The two commands: `make demo` (set up + run the month-end close) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install up down status demo test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	# OPA's evaluator: the wheel declares Python >=3.14 but is a ctypes wrapper that works on 3.11
	$(BIN)/python -m pip install -q --no-deps --ignore-requires-python 'opa-golib-python-bindings==0.4.4'
	touch $(STAMP)

install: $(STAMP)

up: install            ## start the local stack (Temporal dev server + Web UI, model server)
	$(BIN)/python temporal-dev/stack.py up

down:                  ## stop the local stack
	@if [ -x $(BIN)/python ]; then $(BIN)/python temporal-dev/stack.py down; else echo "nothing to stop"; fi

status:
	$(BIN)/python temporal-dev/stack.py status

demo: up               ## run the month-end close end to end and show the result
	$(BIN)/baton demo

test: install          ## run the tests (starts its own Temporal dev server on a free port)
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy workflows activities

bench: install         ## performance table (see README)
	$(BIN)/python bench/finance_close_bench.py

clean: down
	rm -rf .baton
