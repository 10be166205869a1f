# The two commands of the quick start: `make run` and `make test`. Both set everything up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint bench bench-console bench-notifications install migrate clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

migrate: install
	$(BIN)/python manage.py migrate --noinput

run: migrate
	$(BIN)/python manage.py bootstrap_demo
	$(BIN)/python manage.py serve --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# SQLite first (everything but the PostgreSQL-only tests), then the engine and the
# PostgreSQL + Redis tests against throwaway servers started by tests/servers.py.
test: lint
	$(BIN)/pytest -m "not pg" -q
	$(BIN)/python -m tests.servers $(BIN)/pytest -m "pg or engine" -q

# Figures and ratios against DBOS, LangGraph, raw Celery and a plain INSERT+COMMIT, on a
# throwaway PostgreSQL with fsync on and a Redis. `make bench BENCH_ARGS=--quick` is smaller.
bench: install
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m tests.servers --durable $(BIN)/python bench/engine.py $(BENCH_ARGS)

# The console on 100,000 runs: the runs list and its admin changelist under 20 signed-in
# clients, step-to-browser latency with a real worker, 1 vs 1,000 WebSocket viewers.
# `make bench-console BENCH_ARGS=--quick` is smaller (about two minutes).
bench-console: install
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m tests.servers --durable $(BIN)/python bench/console.py $(BENCH_ARGS)

# 10,000 milestone events for one person within one minute: messages per channel, duplicates.
bench-notifications: install
	$(BIN)/python bench/notifications.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var
