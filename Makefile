# One virtualenv, .venv in the repository root, serves every target.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1:8000
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install install-test demo serve test test-unit lint format browser frontend bench migrate clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python requirements.txt
	$(PY) -m pip install -r requirements.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install -r requirements-test.txt
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

migrate: install
	$(PY) manage.py migrate --noinput

## README command 1: install, generate the demo's stimuli, create the demo study, serve it.
demo: migrate
	$(PY) manage.py demo --base-url http://$(HOST)
	$(PY) manage.py runserver $(HOST) --noreload

serve: migrate
	$(PY) manage.py runserver $(HOST) --noreload

## Debian's chromium for the browser tests (Playwright drives it; it never downloads a browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; }

## README command 2: install what the suite needs and run all of it.
test: install-test browser
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install-test
	$(PY) -m pytest -m "not postgres and not redis and not browser and not slow" $(PYTEST_ARGS)

## Lint (ruff's rules in pyproject.toml) and the format of the files already in it; .ci/run runs this first.
lint: install-test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

## The safe fixes (import order, unused imports, pyupgrade's rewrites) and the formatter, on the files
## [tool.ruff.format] does not exclude.
format: install-test
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

## Rebuild the jsPsych files under studyapp/static/vendor (committed, so Node is needed only here).
frontend:
	cd frontend && npm ci && npm run build

## Benchmarks print their figures; the answer path's need PostgreSQL on 127.0.0.1:5432.
bench: install-test
	$(PY) bench/bench_stimuli.py
	$(PY) bench/bench_sobol.py
	$(PY) bench/bench_stimuli_numerics.py
	$(PY) bench/bench_decisions.py
	$(PY) bench/bench_featurevis.py
	$(PY) bench/bench_analysis.py
	$(PY) bench/bench_analysis.py --scale
	$(PY) bench/profile_answer.py --top 0
	$(PY) bench/profile_arrival.py --top 0
	$(PY) bench/bench_load.py --calibrate
	$(PY) bench/bench_load.py
	$(PY) bench/bench_burst.py

clean:
	rm -rf var
