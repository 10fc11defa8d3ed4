# Everything a fresh machine needs is installed by these targets, idempotently.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: install dataset test demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.txt requirements-dev.txt requirements-build.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-build.txt -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package.
dataset:
	@if [ ! -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	fi

test: install dataset
	$(PY) -m pytest $(PYTEST_ARGS)

demo: install dataset
	$(VENV)/bin/hermetic demo

bench: install dataset
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) out .hermetic .pytest_cache
