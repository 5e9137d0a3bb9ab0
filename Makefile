# Two commands matter: `make demo` and `make test`. Everything else supports them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed
TOOLS ?= .tools

.PHONY: install demo test lint typecheck unit integration e2e bench lock localstack checkov web chromium clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check uv
	@# bytecode compiled once here: a batch step is a fresh process, and without .pyc files each
	@# one compiles numpy, pyarrow and pydantic again (PYTHONDONTWRITEBYTECODE keeps it from caching)
	@$(UV) pip sync -q --compile-bytecode --python $(PY) requirements.lock
	@$(UV) pip install -q --python $(PY) --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

# LocalStack needs its own environment (its pins clash with ours); see ENVIRONMENT notes in README.
localstack: $(TOOLS)/localstack/.installed
$(TOOLS)/localstack/.installed:
	@mkdir -p $(TOOLS)
	@$(PYTHON) -m venv $(TOOLS)/localstack
	@$(TOOLS)/localstack/bin/pip install -q --disable-pip-version-check uv
	@$(TOOLS)/localstack/bin/uv pip install -q --python $(TOOLS)/localstack/bin/python \
		"localstack-core[runtime]==4.9.2" "cbor2<6" service-identity
	@touch $@

# checkov in its own environment too (it clashes with python-hcl2); pinned so results are stable.
checkov: $(TOOLS)/checkov/.installed
$(TOOLS)/checkov/.installed:
	@mkdir -p $(TOOLS)
	@$(PYTHON) -m venv $(TOOLS)/checkov
	@$(TOOLS)/checkov/bin/pip install -q --disable-pip-version-check uv
	@$(TOOLS)/checkov/bin/uv pip install -q --python $(TOOLS)/checkov/bin/python "checkov==3.3.30"
	@touch $@

# The chart page's library comes from npm at build time (never committed): api/web.
WEB_LIB := api/web/node_modules/lightweight-charts/package.json
web: $(WEB_LIB)
$(WEB_LIB): api/web/package.json api/web/package-lock.json
	cd api/web && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The chart's browser test runs Debian's chromium headless; install it when missing (root).
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# The demo needs only Python: without npm it runs, and /chart/{symbol} says how to build its library.
demo: $(STAMP)
	@if command -v npm >/dev/null 2>&1; then $(MAKE) -s web; \
	else echo "[demo] npm not found: the API runs, /chart pages answer 503 until 'make web'"; fi
	$(PY) -m api.demo $(if $(ONCE),--once --port 0,)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP) localstack checkov web chromium lint typecheck
	@# A base directory of this run's own: pytest prunes old pytest-of-<user> folders, which would
	@# pull the embedded servers' data away from under a concurrent run on the same machine.
	LOCALSTACK_VENV=$(abspath $(TOOLS)/localstack) $(PY) -m pytest -p no:cacheprovider \
		--basetemp="$$(mktemp -d "$${TMPDIR:-/tmp}/condvest-test.XXXXXX")" tests

unit: $(STAMP)
	$(PY) -m pytest -m unit tests

bench: $(STAMP)
	$(PY) -m benchmarks

lock:
	$(UV) pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) $(TOOLS) data .mypy_cache .ruff_cache api/web/node_modules
