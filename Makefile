# OpenTrail: every task goes through this file. `make demo` and `make test` do all set-up.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
TOOLS_VENV ?= .venv-tools
TOOLS_STAMP := $(TOOLS_VENV)/.installed
CDK := node_modules/.bin/cdk

export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_CLI_TELEMETRY := true
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install demo test lint format typecheck unit synth deploy destroy bench e2e-deployed clean

install: $(STAMP) $(NODE_STAMP) $(TOOLS_STAMP)

# The venv is rebuilt from the pinned requirements whenever they change.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# Tools that read CloudTrail logs (trailscraper) or call CloudTrail APIs (the AWS CLI v1), in their own venv:
# the tests run them on our output and against `opentrail local`.
$(TOOLS_STAMP): requirements-tools.txt
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-tools.txt
	touch $@

# The CDK CLI, pinned in package.json/package-lock.json, installed locally (never globally).
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: install
	$(VENV)/bin/opentrail demo $(ARGS)

test: install lint typecheck synth
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

unit: install
	$(PY) -m pytest tests/unit -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

synth: install
	$(CDK) synth --quiet

deploy: install
	$(CDK) deploy --require-approval never $(ARGS)

destroy: install
	$(CDK) destroy $(ARGS)

# Every benchmark, each printing its figures (recorded in docs/benchmarks.md). BENCH_ARGS=--quick for a fast check.
bench: install
	$(PY) benchmarks/run.py $(BENCH_ARGS)
	PYTHONPATH=. $(PY) -m benchmarks.history_bench $(BENCH_ARGS)
	PYTHONPATH=. $(PY) -m benchmarks.validate_bench
	PYTHONPATH=. $(PY) -m benchmarks.insights_eval $(BENCH_ARGS)
	PYTHONPATH=. $(PY) -m benchmarks.audited_bench $(BENCH_ARGS)

# Opt-in: end-to-end tests against a deployed stack (see docs/deploy.md).
e2e-deployed: install
	$(PY) -m pytest tests/e2e -m deployed -v

clean:
	rm -rf $(VENV) $(TOOLS_VENV) node_modules cdk.out .pytest_cache .mypy_cache .ruff_cache
