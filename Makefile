# Vigil — `make run` to use it, `make test` to prove it. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
VENDOR := static/vendor

# Embedded default: SQLite and kombu's filesystem broker. Set DATABASE_URL / REDIS_URL to override.
export DJANGO_SETTINGS_MODULE := clinic.settings

.PHONY: help setup run test lint fmt seed migrate check-deploy clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Front-end files are copied from npm packages; nothing third-party is committed.
$(VENDOR)/.copied: node_modules/.installed Makefile
	rm -rf $(VENDOR) && mkdir -p $(VENDOR)/bootstrap $(VENDOR)/bootstrap-icons $(VENDOR)/htmx $(VENDOR)/chartjs
	cp node_modules/bootstrap/dist/css/bootstrap.min.css node_modules/bootstrap/dist/css/bootstrap.min.css.map $(VENDOR)/bootstrap/
	cp node_modules/bootstrap/dist/js/bootstrap.bundle.min.js node_modules/bootstrap/dist/js/bootstrap.bundle.min.js.map $(VENDOR)/bootstrap/
	cp -r node_modules/bootstrap-icons/font/bootstrap-icons.min.css node_modules/bootstrap-icons/font/fonts $(VENDOR)/bootstrap-icons/
	cp node_modules/htmx.org/dist/htmx.min.js $(VENDOR)/htmx/
	cp node_modules/chart.js/dist/chart.umd.min.js node_modules/chart.js/dist/chart.umd.min.js.map $(VENDOR)/chartjs/
	touch $@

setup: $(VENV)/.installed $(VENDOR)/.copied ## install Python and npm packages, copy front-end files

migrate: setup ## apply database migrations
	$(PY) manage.py migrate --noinput

seed: migrate ## load demo data (idempotent; refuses when DJANGO_DEBUG=0)
	$(PY) manage.py seed_demo

run: migrate ## serve http://127.0.0.1:8000 with the Celery worker and beat (Ctrl-C stops all)
	$(PY) manage.py seed_demo --if-empty
	mkdir -p var/celery
	$(VENV)/bin/honcho start -f Procfile

test: setup ## run the whole suite (uses DATABASE_URL when set)
	mkdir -p var
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(PY) manage.py makemigrations --check --dry-run
	$(VENV)/bin/pytest -n auto

lint: setup ## ruff lint and format check
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

fmt: setup ## format the code
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

check-deploy: setup ## Django's deployment checks with production-like settings
	DJANGO_DEBUG=0 DJANGO_SECRET_KEY=$$($(PY) -c 'import secrets;print(secrets.token_urlsafe(64))') \
	DJANGO_ALLOWED_HOSTS=vigil.example $(PY) manage.py check --deploy --fail-level WARNING

clean: ## remove the virtualenv, node packages, copied static files and local state
	rm -rf $(VENV) node_modules $(VENDOR) staticfiles var db.sqlite3
