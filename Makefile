# The README's two commands: `make run` and `make test`. Both set up what they need first
# (.venv, Python packages, the front end, the database) and are quick when nothing changed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed-stamp
FRONTEND_STAMP := static/build/.stamp
NODE_STAMP := frontend/node_modules/.installed-stamp
NODE_DEPS := $(wildcard frontend/package.json frontend/package-lock.json)
FRONTEND_SRC := $(shell find frontend/src frontend/public frontend/index.html frontend/vite.config.* frontend/tsconfig*.json -type f 2>/dev/null)

.PHONY: run test setup frontend browser pgvector nginx lint bench clean

setup: $(STAMP) frontend

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

frontend: $(FRONTEND_STAMP)

# Packages are installed again only when package.json or the lock file changed; a source
# change only rebuilds. With no front end yet, the stamp just records that.
ifneq ($(wildcard frontend/package.json),)
$(NODE_STAMP): $(NODE_DEPS)
	cd frontend && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; \
		else npm install --no-audit --no-fund --loglevel=error; fi
	@touch $@

$(FRONTEND_STAMP): $(NODE_STAMP) $(FRONTEND_SRC)
	cd frontend && npm run build
	@mkdir -p static/build && touch $@
else
$(FRONTEND_STAMP):
	@mkdir -p static/build && touch $@
endif

# Debian's Chromium for the Playwright tests (no browser downloads are possible here), and a
# CJK font so Chinese text in pages and screenshots renders as text, not boxes.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -e /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-zenhei >/dev/null) \
			|| echo "could not install chromium and fonts-wqy-zenhei"; \
		else echo "chromium or a CJK font missing: run 'sudo apt-get install chromium fonts-wqy-zenhei'"; fi; \
	fi

# Debian's nginx, for tests/test_deploy_files.py: `nginx -t` on the shipped configuration and
# nginx in front of the live stack. Installed when missing and root, never started as a service
# (the tests run their own nginx on free ports); otherwise it says what to run.
nginx:
	@if [ ! -x /usr/sbin/nginx ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null) \
			|| echo "could not install nginx"; \
		else echo "nginx missing: run 'sudo apt-get install nginx'"; fi; \
	fi

# pgvector (the knowledge bases' vector store) in a PostgreSQL on this machine: installed and
# enabled in template1 and the app's database when DATABASE_URL points at localhost and we
# are root; otherwise it says what to run. Nothing to do on the embedded default (SQLite).
pgvector:
	@bash platform/install-pgvector.sh --if-local

# serve --prepare: migrate, collectstatic and seed_demo (prints the demo login), then serve.
run: setup pgvector
	exec $(PY) manage.py serve --prepare --host $(HOST) --port $(PORT)

test: setup browser pgvector nginx
	$(PY) -m ruff check .
	cd frontend && npm test --silent
	$(PY) -m mypy
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: setup
	$(PY) manage.py bench_stream

clean:
	rm -rf $(VENV) var static/build frontend/node_modules
