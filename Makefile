# bsstudy: `make test` and `make study` install what they need into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
# The torch build to install; the default is the one this project is tested with (CPU or CUDA wheels alike).
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install test study lr-scaling gradsum bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

test: install  ## the whole test suite (about 3 minutes on 2 CPU cores)
	$(BIN)/python -m pytest -q

study: install  ## the reference sweep, B = 64, 256, 1024, 2 for 30 epochs; e.g. make study ARGS="data=fashion_mnist"
	$(BIN)/python -m bsstudy -m experiment=generalization $(ARGS)

lr-scaling: install  ## the reference sweep with lr proportional to B
	$(BIN)/python -m bsstudy -m experiment=lr_scaling $(ARGS)

gradsum: install  ## the gradient-sum-norm experiment: B=1024 for 30 epochs, measured after epochs 2 and 30
	$(BIN)/python -m bsstudy experiment=gradsum $(ARGS)

bench: install  ## speed of the training loop and the evaluation against plain PyTorch loops
	$(BIN)/python -m bsstudy.bench $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:  ## remove run outputs and caches (not .venv)
	rm -rf outputs multirun .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
