# ComputeNet: two commands get you going.
#   make up     create the venv, install, start a node with a local gateway (SQLite store)
#   make test   install test tools and run every test (PostgreSQL tests need a server:
#               scripts/pg-up.sh starts one; CI installs it with COMPUTENET_INSTALL_PG=1;
#               Slurm, Ray and a second node are started by scripts/ and the tests)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
UP_ARGS ?=
DEMO_ARGS ?=

.PHONY: up test lint fmt bench bench-backends bench-load bench-ledger bench-federation bench-console demo \
	screenshots fuzz clean

$(BIN)/python:
	@scripts/make-venv.sh "$(PYTHON)" "$(VENV)"

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e .
	@$(BIN)/python -c 'from computenet.sched.fastround import warm_up; warm_up()'  # compile the scheduler's loop once
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@$(BIN)/python -c 'from computenet.sched.fastround import warm_up; warm_up()'  # compile the scheduler's loop once
	@touch $@ $(VENV)/.installed

# Byte-compiled once here: a gateway starts a Python runner per task, and where Python may
# not write bytecode itself (PYTHONDONTWRITEBYTECODE, a read-only tree) each runner would
# compile its modules again (about 50 ms of CPU per task). Only changed files are redone.
BYTECODE = @$(BIN)/python -m compileall -q src >/dev/null

up: $(VENV)/.installed
	@scripts/up-prereqs.sh
	$(BYTECODE)
	$(BIN)/computenet up $(UP_ARGS)

test: $(VENV)/.installed-dev
	@scripts/run-tests.sh

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/deptry src

fmt: $(VENV)/.installed-dev
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/submit.py

bench-backends: $(VENV)/.installed-dev
	$(BYTECODE)
	$(BIN)/python bench/backend_overhead.py

bench-load: $(VENV)/.installed-dev
	$(BIN)/python bench/load.py

bench-ledger: $(VENV)/.installed-dev
	$(BIN)/python bench/ledger.py

bench-federation: $(VENV)/.installed-dev
	$(BYTECODE)
	$(BIN)/python bench/federation.py

# A national, two regional (Shanghai, Guizhou) and an industry node on loopback, each with a
# local gateway, on free ports (kept for the next run); data in ./federation-demo. Ctrl-C
# stops them. Choose ports with: make demo DEMO_ARGS="--base-port 9760"
demo: $(VENV)/.installed
	$(BYTECODE)
	$(BIN)/computenet demo $(DEMO_ARGS)

bench-console: $(VENV)/.installed-dev
	$(BIN)/python bench/console.py

# Re-take docs/screenshots/*.png by running the console's browser test (needs Chromium).
screenshots: $(VENV)/.installed-dev
	COMPUTENET_SCREENSHOTS=$(CURDIR)/docs/screenshots $(BIN)/python -m pytest -q "tests/console/test_console_pages.py::test_every_page_for_every_role_and_screen[admin]"

fuzz: $(VENV)/.installed-dev
	$(BIN)/python bench/fuzz.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
