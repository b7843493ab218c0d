# bsstudy: `make test` and `make study` install what they need into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
SWEEP ?=
# The torch build to install; the default is the one this project is tested with. On Linux, PyPI's torch wheel
# brings the CUDA libraries (a 6.0 GB .venv); `make install-cpu` takes PyTorch's CPU-only build of the same version.
TORCH ?= torch==2.14.1 torchvision==0.29.1
TORCH_CPU := torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 16

.PHONY: help install install-cpu test test-fast wheel-check study lr-scaling gradsum sharpness speed report publish wandb-report report-check bench gpu-check lint clean

install: $(VENV)/.installed  ## create .venv with the tested torch build and bsstudy (editable, with the dev tools)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install-cpu:  ## the same .venv with PyTorch's CPU-only torch (no CUDA libraries), for a machine without a GPU
	$(MAKE) install TORCH="$(TORCH_CPU)"

test: install  ## the whole test suite (needs Chromium for the report check, else that test is skipped)
	$(BIN)/python -m pytest -q

test-fast: install  ## the tests that neither train a model nor start the CLI (markers slow, cli; tests/conftest.py)
	$(BIN)/python -m pytest -q -m "not slow and not cli"

WHEEL_VENV ?= /tmp/bsstudy-wheel-venv
wheel-check: install  ## build the wheel, install it (not editable) in a fresh venv, run 1-epoch sweeps (one packed) from another folder
	rm -rf build dist $(WHEEL_VENV) && $(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w dist .
	$(PYTHON) -m venv $(WHEEL_VENV) && $(WHEEL_VENV)/bin/pip install -q --no-deps dist/bsstudy-*.whl
	@# the dependencies (torch alone is GBs) come from .venv; bsstudy itself only from the wheel
	$(BIN)/python -c "import sysconfig; print(sysconfig.get_path('purelib'))" \
		> $$($(WHEEL_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_path('purelib'))")/deps-from-dev-venv.pth
	cd $(WHEEL_VENV) && WANDB_MODE=offline bin/bsstudy -m data=synthetic data.batch_size=8,32 trainer.max_epochs=1 \
		trainer.progress_bar=false hydra.sweep.dir=$(WHEEL_VENV)/sweep
	test -f $(WHEEL_VENV)/sweep/report/report.html && test -f $(WHEEL_VENV)/sweep/1/summary.json
	cd $(WHEEL_VENV) && WANDB_MODE=offline bin/bsstudy -m hydra/launcher=packed data=synthetic seed=0,1 \
		trainer.max_epochs=1 trainer.progress_bar=false hydra.sweep.dir=$(WHEEL_VENV)/packed
	grep -q '"size": 2' $(WHEEL_VENV)/packed/1/summary.json
	cd $(WHEEL_VENV) && bin/python -c "import bsstudy; assert '$(WHEEL_VENV)' in bsstudy.__file__, bsstudy.__file__"
	cd $(WHEEL_VENV) && bin/python -c "import hydra_plugins.bsstudy_packed.packed_launcher as m; \
		assert '$(WHEEL_VENV)' in m.__file__, m.__file__"

study: install  ## the reference sweep, B = 64, 256, 1024, 2 for 30 epochs; offline e.g. make study ARGS="data=fashion_mnist data.root=../shared/data data.download=false"
	$(BIN)/python -m bsstudy -m experiment=generalization $(ARGS)

lr-scaling: install  ## the reference sweep with lr proportional to B
	$(BIN)/python -m bsstudy -m experiment=lr_scaling $(ARGS)

gradsum: install  ## the gradient-sum-norm experiment as Shen 2018 ran it: B=1024 for 30 epochs; after epochs 2 and 30, 1024/B SGD steps per trial
	$(BIN)/python -m bsstudy experiment=gradsum $(ARGS)

sharpness: install  ## the reference sweep with sharpness, landscapes, Hessian and the small-vs-large interpolation
	$(BIN)/python -m bsstudy -m experiment=sharpness $(ARGS)

speed: install  ## speed and memory per batch size (15 ... 1024), table and power-of-two answer at the end
	$(BIN)/python -m bsstudy -m experiment=speed $(ARGS)

report: install  ## the report of a sweep: make report SWEEP=multirun/<date>/<time> [ARGS="--target-acc 0.85"]
	$(BIN)/python -m bsstudy.analysis.report $(SWEEP) $(ARGS)

publish: install  ## publish a sweep's report: make publish SWEEP=multirun/<date>/<time> STUDY=reference -> docs/results/reference/
	$(BIN)/python -m bsstudy.analysis.report $(SWEEP) --publish docs/results/$(STUDY) $(ARGS)

wandb-report: install  ## W&B report of a sweep's group (offline: <sweep>/report/wandb_report.json + sync commands)
	$(BIN)/python -m bsstudy.analysis.report.wandb_report $(SWEEP) $(ARGS)

report-check: install  ## render <sweep>/report/report.html in headless Chromium: no broken figure, screenshot
	$(BIN)/python -m bsstudy.analysis.report.check $(SWEEP) --screenshot $(SWEEP)/report/screenshot.png

bench: install  ## the training loop and evaluation against plain PyTorch loops; a parallel vs sequential sweep
	$(BIN)/python -m bsstudy.tools.bench $(ARGS)
	$(BIN)/python -m bsstudy.tools.bench_sweep

gpu-check: install  ## on one GPU, < 5 min: fast vs autograd step per B, speed probe, parallel launcher, reference-study estimate; ARGS=--cpu: dry run
	$(BIN)/python -m bsstudy.tools.gpu_check $(ARGS)

lint: install  ## ruff check + ruff format --check + the import contracts (pyproject.toml [tool.importlinter])
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

clean:  ## remove run outputs and caches (not .venv)
	rm -rf outputs multirun .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
