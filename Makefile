# lifecycle-triggers: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check -c requirements/constraints.txt
STAMP := $(VENV)/.installed
# The quix-streams peer of the throughput bench has a virtualenv of its own (see pyproject's
# extra 'bench'): quixstreams needs an older confluent-kafka than the dev tools.
QUIX_VENV ?= .venv-quix
QUIX_STAMP := $(QUIX_VENV)/.installed

.PHONY: help install system-deps demo dev test test-unit test-integration lint format typecheck check check-dashboards bench soak constraints clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

system-deps: ## install Debian's redis-server, prometheus (promtool) and curl if this machine lacks them
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    --no-install-recommends $$missing >/dev/null; \
	fi

# The example trigger plugin (examples/complaint_triggers) is installed too: the tests exercise
# it through its entry point, as a deployment would.
EXAMPLE_PLUGIN := examples/complaint_triggers

$(STAMP): pyproject.toml requirements/constraints.txt $(EXAMPLE_PLUGIN)/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[dev,local]'
	$(PIP_INSTALL) --no-deps -e $(EXAMPLE_PLUGIN)
	@touch $(STAMP)

install: system-deps $(STAMP) ## create .venv with the project, dev tools and the Tansu broker

$(QUIX_STAMP): pyproject.toml requirements/constraints-quix.txt
	$(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/pip install --quiet --disable-pip-version-check -c requirements/constraints-quix.txt '.[bench]'
	@touch $(QUIX_STAMP)

bench: $(QUIX_STAMP)  # the quix-streams peer of bench/throughput_bench.py

demo: install ## simulated customers with planted scenarios through the dev stack; ends with a summary
	$(BIN)/lifecycle-triggers demo

dev: install ## start the dev stack and a worker (no sample events)
	$(BIN)/lifecycle-triggers dev

# Two runs, so that a person watching sees where it is: the unit tests (fast, one progress line
# per file), then the integration tests with -v, which names each test as it starts (some run
# for a minute or more with nothing else to print). --durations lists the slowest.
test: install ## every test: unit (1-2 min), then integration on a real broker and redis-server (~10 min on 2 cores)
	@echo "== make test 1/2: unit tests and the example plugin's own tests (1 to 2 minutes on 2 cores)"
	$(BIN)/pytest tests/unit examples --durations=5
	@echo "== make test 2/2: integration tests, real workers on a real broker and redis-server (about 10 minutes on 2 cores)"
	$(BIN)/pytest tests/integration -v --durations=10

test-unit: install ## run the pure unit tests (and the example plugin's) only
	$(BIN)/pytest tests/unit examples

test-integration: install ## run the integration tests only
	$(BIN)/pytest tests/integration -v --durations=10

lint: install ## ruff lint and format check
	$(BIN)/ruff check streams tests bench
	$(BIN)/ruff format --check streams tests bench

format: install ## apply ruff's formatting and import order
	$(BIN)/ruff check --fix --select I streams tests bench
	$(BIN)/ruff format streams tests bench

typecheck: install ## mypy on streams/
	$(BIN)/mypy

check: lint typecheck test ## what CI runs

check-dashboards: install ## every dashboard query and alert expression on a real Prometheus scraping a worker under traffic (about 2 minutes)
	$(BIN)/python deploy/check_expressions.py

bench: install ## run the benchmarks in bench/ (prints ratios against a baseline from the same run)
	@for script in bench/*_bench.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

soak: install ## stream through one worker for 10 minutes; prints throughput, lag, RSS, fds each minute
	$(BIN)/python bench/soak.py

constraints: ## re-pin requirements/constraints.txt from the current .venv
	@{ echo "# Exact versions for every install (README, .ci/run, Dockerfile): pip install -c requirements/constraints.txt ..."; \
	   echo "# Regenerate after changing dependencies: make constraints"; \
	   echo "# (The extra 'bench', quixstreams, is pinned in constraints-quix.txt: it needs an older confluent-kafka.)"; \
	   $(BIN)/pip freeze --exclude-editable | grep -v '^-e'; } > requirements/constraints.txt
	@if [ -x $(QUIX_VENV)/bin/pip ]; then \
	  { sed -n '1,3p' requirements/constraints-quix.txt; \
	    $(QUIX_VENV)/bin/pip freeze --exclude-editable | grep -v '^-e' | grep -iv '^lifecycle-triggers'; \
	  } > requirements/constraints-quix.txt.new && mv requirements/constraints-quix.txt.new requirements/constraints-quix.txt; \
	fi

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) $(QUIX_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
