# `make demo` and `make test` set everything up on a fresh machine (Python 3.11, Java 17).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv chromium demo up down test lint bench movielens lock clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

## Three days of the daily DAG through the Airflow scheduler (one backfill), then the URLs, login, tables and models; the services stay up (make down).
demo: venv
	$(BIN)/distillery demo

## Airflow on http://127.0.0.1:8080 (login admin, password printed and in .airflow/credentials.txt)
## and the MLflow UI on http://127.0.0.1:5000; `make down` stops exactly those processes.
up: venv
	$(BIN)/distillery up

down: venv
	$(BIN)/distillery down

## Debian's chromium, which the UI tests drive headless (Playwright); installed once per machine.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

chromium: $(CHROMIUM)

## Lint, then the whole test suite (slow end-to-end tests and UI screenshots included).
test: venv chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

## Benchmarks: events/s of the data steps at 1e5 and 1e6 events/day; then the teacher
## (FM vs small models alone, continual vs frozen, seconds per day, throughput and MFU);
## then knowledge generation (Spark vs a plain PyTorch loop, 1 and 2 cores).
bench: venv
	$(BIN)/distillery bench data
	$(BIN)/distillery bench teacher
	$(BIN)/distillery bench knowledge

## Fetch the recbole 1.2.1 wheel (it ships MovieLens-100k) into .cache/recbole, once per machine.
movielens: venv
	$(BIN)/python -c "from pathlib import Path; from infra.sources.movielens import fetch_recbole_wheel; print(fetch_recbole_wheel(Path('.cache/recbole')))"

## Re-pin every package after a change to pyproject.toml's dependencies.
lock: venv
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//' > requirements.lock

clean:
	test ! -x $(BIN)/distillery || $(BIN)/distillery down
	rm -rf lake mlruns mlruns.db .airflow reports/*.tmp
