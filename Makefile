# Two entry points for a fresh clone: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# Fashion-MNIST's four files, as nextscale/data/fashion.py names them (gzipped, or unpacked without .gz)
FASHION_SYSTEM_DIR := /usr/share/datasets/fashion-mnist
FASHION_FILES := train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz

.PHONY: setup fashion-mnist demo test test-fast lint format bench golden

setup: $(VENV)/.installed fashion-mnist

# `--data fashion-mnist`: Debian's dataset-fashion-mnist where apt-get can run (root, or sudo without a password),
# else one line saying what to do. Never fails: only Fashion-MNIST's commands and tests need it. A file test when
# the files are already there (in the system folder or $NEXTSCALE_DATA/fashion-mnist).
fashion-mnist:
	@has() { for f in $(FASHION_FILES); do [ -f "$$1/$$f" ] || [ -f "$$1/$${f%.gz}" ] || return 1; done; }; \
	if has "$(FASHION_SYSTEM_DIR)" || { [ -n "$$NEXTSCALE_DATA" ] && has "$$NEXTSCALE_DATA/fashion-mnist"; }; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then sudo=no; \
	elif [ "$$(id -u)" -eq 0 ]; then sudo=; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else sudo=no; fi; \
	hint="apt-get install dataset-fashion-mnist, or put its 4 files in \$$NEXTSCALE_DATA/fashion-mnist"; \
	if [ "$$sudo" = no ]; then echo "Fashion-MNIST not installed (needed for --data fashion-mnist): $$hint"; exit 0; fi; \
	echo "installing Debian's dataset-fashion-mnist (Fashion-MNIST, for --data fashion-mnist)"; \
	get() { $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; }; \
	get || { $$sudo apt-get update -qq && get; } \
	  || echo "Fashion-MNIST could not be installed (needed for --data fashion-mnist): $$hint"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,web,finetune,plots]'
	touch $@

demo: setup
	$(BIN)/nextscale demo

test: setup lint
	$(BIN)/python -m pytest -q

# The quick loop while working: everything not marked slow (distributed and browser tests are slow too).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

format: setup
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

golden: setup
	$(BIN)/python -m nextscale.golden ../shared/golden/*.safetensors
