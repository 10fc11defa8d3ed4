# Everything a fresh machine needs is installed by these targets, idempotently: a Debian
# or Ubuntu machine with Python 3.11+ and make is enough (see README.md). Nothing here
# calls sudo: as root the missing Debian packages (python3.X-venv, dataset-fashion-mnist)
# are installed with apt-get; otherwise the command to run as root is printed.
SHELL := /bin/bash
# python3 when it is 3.11 or newer, else the newest python3.1x on PATH (Amazon Linux 2023's
# python3 is 3.9); scripts/find-python.sh says what to install when there is none.
PYTHON ?= $(shell scripts/find-python.sh 2>/dev/null)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist
# torch's CPU build comes from here (scripts/install-torch.sh: a local +cpu wheel first);
# TORCH_INDEX= (empty) takes torch from pip's default index instead.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=
# make demo DEMO_ARGS=--audit adds the empirical audit of the recipe to the report.
DEMO_ARGS ?=

.PHONY: install dataset browser lint test demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.txt requirements-dev.txt requirements-build.txt
	@PYTHON="$(PYTHON)" scripts/make-venv.sh $(VENV)
	@TORCH_INDEX="$(TORCH_INDEX)" scripts/install-torch.sh $(PY)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-build.txt -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package.
dataset:
	@test -f $(FMNIST)/train-images-idx3-ubyte.gz || \
		scripts/apt-install.sh "Fashion-MNIST ($(FMNIST))" dataset-fashion-mnist

# Headless Chromium renders the compliance report in its screenshot test
# (tests/parent/report/test_screenshot.py), from Debian's chromium-headless-shell.
browser:
	@command -v chromium-headless-shell >/dev/null 2>&1 || \
		scripts/apt-install.sh "headless Chromium (report screenshot test)" chromium-headless-shell

# The gates: lint and import order, types (strict for the measured enclave), import boundaries.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

test: install dataset browser lint
	$(PY) -m pytest $(PYTEST_ARGS)

demo: install dataset
	$(VENV)/bin/hermetic demo $(DEMO_ARGS)

bench: install dataset
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .venv-checkov out .hermetic .pytest_cache .mypy_cache .ruff_cache .import_linter_cache

# --- Deployment: KMS key policies from the EIF's measurements, checkov for terraform/ ---
# make policies OWNER_ARN=... MODEL_OWNER_ARN=... PARENT_ROLE_ARN=... LEDGER_BUCKET=...
# renders kms-policies/*.template.json (two key policies and the budget ledger's bucket
# policy) into $(POLICY_OUT); terraform/ reads them there.
POLICY_MEASUREMENTS ?= eif/measurements.json
POLICY_OUT ?= kms-policies/rendered
OWNER_ARN ?=
MODEL_OWNER_ARN ?=
PARENT_ROLE_ARN ?=
LEDGER_BUCKET ?=
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
CHECKOV_CONSTRAINTS := tests/terraform/checkov-constraints.txt

.PHONY: policies checkov

policies: install
	@if [ ! -f "$(POLICY_MEASUREMENTS)" ]; then \
		echo "make policies: $(POLICY_MEASUREMENTS) not found; build the image first with 'make eif' (needs Docker and nitro-cli) or set POLICY_MEASUREMENTS=<nitro-cli describe-eif output>" >&2; \
		exit 1; \
	fi
	@missing=""; \
	[ -n "$(OWNER_ARN)" ] || missing="$$missing OWNER_ARN"; \
	[ -n "$(MODEL_OWNER_ARN)" ] || missing="$$missing MODEL_OWNER_ARN"; \
	[ -n "$(PARENT_ROLE_ARN)" ] || missing="$$missing PARENT_ROLE_ARN"; \
	[ -n "$(LEDGER_BUCKET)" ] || missing="$$missing LEDGER_BUCKET"; \
	if [ -n "$$missing" ]; then echo "make policies: set$$missing (IAM ARNs and the ledger bucket name; see docs/DEPLOY.md)" >&2; exit 1; fi
	@mkdir -p "$(POLICY_OUT)"
	$(VENV)/bin/hermetic policy render --template data-owner --measurements "$(POLICY_MEASUREMENTS)" \
		--owner-arn "$(OWNER_ARN)" --parent-role-arn "$(PARENT_ROLE_ARN)" --out "$(POLICY_OUT)/data-owner.json"
	$(VENV)/bin/hermetic policy render --template model-owner --measurements "$(POLICY_MEASUREMENTS)" \
		--model-owner-arn "$(MODEL_OWNER_ARN)" --parent-role-arn "$(PARENT_ROLE_ARN)" --out "$(POLICY_OUT)/model-owner.json"
	$(VENV)/bin/hermetic policy render --template ledger-bucket --measurements "$(POLICY_MEASUREMENTS)" \
		--ledger-bucket "$(LEDGER_BUCKET)" --parent-role-arn "$(PARENT_ROLE_ARN)" --owner-arn "$(OWNER_ARN)" \
		--out "$(POLICY_OUT)/ledger-bucket.json"

# checkov pins boto3/botocore below the runtime pins, so it lives in its own venv;
# tests/terraform runs it from there.
checkov: $(CHECKOV_STAMP)

$(CHECKOV_STAMP): $(CHECKOV_CONSTRAINTS)
	@PYTHON="$(PYTHON)" scripts/make-venv.sh $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --disable-pip-version-check -c $(CHECKOV_CONSTRAINTS) checkov
	@touch $@

test: checkov

# ---- Nitro Enclaves: reproducible EIF and run scripts (eif/README.md) ----
EIF ?= eif/hermetic.eif
CPUS ?= 2
MEMORY_MIB ?= 8192
CID ?= 16
SOURCE_DATE_EPOCH ?= 1767225600
AWS_REGION ?= us-east-1
SIGNING_CERT ?=
SIGNING_KEY ?=
DEBUG_MODE ?= 0
RELAY ?= 1

.PHONY: eif run-enclave stop-enclave

# Docker image (pinned base, hashed wheels, fixed SOURCE_DATE_EPOCH) -> nitro-cli
# build-enclave -> $(EIF) and eif/measurements.json, cross-checked with measure-eif.
eif: install
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) AWS_REGION=$(AWS_REGION) \
	SIGNING_CERT="$(SIGNING_CERT)" SIGNING_KEY="$(SIGNING_KEY)" \
	EIF_OUT=$(EIF) HERMETIC=$(VENV)/bin/hermetic scripts/eif-build.sh

run-enclave:
	CPUS=$(CPUS) MEMORY_MIB=$(MEMORY_MIB) CID=$(CID) EIF=$(EIF) AWS_REGION=$(AWS_REGION) \
	DEBUG_MODE=$(DEBUG_MODE) RELAY=$(RELAY) HERMETIC=$(VENV)/bin/hermetic scripts/run-enclave.sh

stop-enclave:
	scripts/stop-enclave.sh

# Accuracy against epsilon on Fashion-MNIST in the mock enclave (long: not in CI).
# requirements-bench.txt (plotnine, for the diamonds CSV it ships) goes into the same venv,
# here only, so `make install` and CI stay as they are.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-bench.txt
	@touch $@

.PHONY: bench-utility
bench-utility: install dataset $(BENCH_STAMP)
	$(PY) -m bench.utility

# ---- The enclave image, reproducibly, on any Linux machine (eif/README.md) ----
# Builds the image twice from the committed tree (mmdebstrap from pinned Debian
# packages, hashed wheels, buildah), requires one digest, checks it runs, and measures
# stand-in EIFs of it with measure-eif. Root; installs mmdebstrap and buildah if missing.
.PHONY: eif-check
eif-check: install
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) AWS_REGION=$(AWS_REGION) \
	PYTHON=$(CURDIR)/$(PY) HERMETIC=$(CURDIR)/$(VENV)/bin/hermetic scripts/eif-check.sh
