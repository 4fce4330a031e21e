# mailsync: local development, tests and the demo stack.
# Needs: python3.11, Java 17+, Maven (the Kafka broker comes from Maven Central), Debian's
# postgresql package (installed automatically when running as root), npm (axe-core for the browser tests).
# See deploy/local/stack.py.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
STACK  := $(PY) deploy/local/stack.py
PYTEST_ARGS ?=

.PHONY: all venv browser k8s test run up down lint bench clean distclean

all: test

venv: $(STAMP)

# Re-installs when either pyproject.toml changes. A venv without pip (Debian without python3-venv) is rebuilt.
# Two distributions: mailsync (the production package) and ./sandbox (the sandbox and the demo, dev tools).
$(STAMP): pyproject.toml sandbox/pyproject.toml
	@if ! $(PY) -m pip --version >/dev/null 2>&1; then \
		rm -rf $(VENV); \
		if ! $(PYTHON) -m venv $(VENV); then \
			if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
				echo "venv: installing python3-venv (apt-get)"; \
				DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
				DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && \
				rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); \
			else exit 1; fi; \
		fi; \
	fi
	$(PY) -m pip install -q -e '.[dev]' -e ./sandbox
	@touch $@

# The browser test drives Debian's Chromium (no browser download); installed here when missing.
# certutil (libnss3-tools) lets the test's Chromium profile trust the local CA, never skip verification.
browser:
	@{ command -v chromium >/dev/null 2>&1 && command -v certutil >/dev/null 2>&1; } || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "browser: installing Debian's chromium and libnss3-tools (apt-get)"; \
			DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium libnss3-tools >/dev/null; \
		else echo "browser: install Debian's chromium and libnss3-tools packages" >&2; exit 1; fi; }

# axe-core (accessibility rules for the browser tests) from npm, pinned, unpacked into .cache/axe-core/.
AXE_VERSION := 4.10.3
AXE_JS      := .cache/axe-core/axe.min.js
$(AXE_JS):
	@mkdir -p .cache/axe-core
	@cd .cache/axe-core && npm pack --silent axe-core@$(AXE_VERSION) >/dev/null && \
		tar -xzf axe-core-$(AXE_VERSION).tgz package/axe.min.js && mv package/axe.min.js axe.min.js && \
		rmdir package && rm -f axe-core-$(AXE_VERSION).tgz

test: venv browser $(AXE_JS)
	$(STACK) infra-exec -- $(VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

run: venv
	$(STACK) run

up: venv
	$(STACK) up

down:
	@if [ -x $(PY) ]; then $(STACK) down; else python3 deploy/local/stack.py down; fi

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict deploy/local/*.py

# Render every kustomize overlay and validate it (builds kustomize into .cache/bin on first use; needs Go >= 1.26).
k8s: venv
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/k8s

bench: venv
	$(STACK) infra-exec -- $(PY) -m tests.bench

clean: down
	rm -rf .cache/run .cache/logs .mailsync .pytest_cache .mypy_cache .ruff_cache build tests/artifacts
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +

# Also drops the virtualenv and the cached Kafka jars (fetched again by the next run).
distclean: clean
	rm -rf $(VENV) .cache *.egg-info
