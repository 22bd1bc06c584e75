# One entry point for people and CI. `make test` installs everything it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
REALPEER := tests/realpeer
REALPEER_STAMP := $(REALPEER)/node_modules/.installed

.PHONY: setup realpeer test lint demo bench migrations-check clean

# pip's output goes to .venv/install.log and is shown only when the install fails.
$(STAMP): pyproject.toml
	@echo "setting up $(VENV) (Python packages from PyPI; log in $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@{ $(BIN)/pip install --upgrade pip && $(BIN)/pip install -e '.[dev]'; } \
		> $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

setup: $(STAMP)

# The real-peer tests' peer: the real @ikenxuan/amagi server, pinned by tests/realpeer/package-lock.json
# (npm ci), with Node and npm from Debian packages when missing. Log shown only on failure.
$(REALPEER_STAMP): $(REALPEER)/package.json $(REALPEER)/package-lock.json $(REALPEER)/install.sh
	@echo "setting up $(REALPEER)/node_modules (@ikenxuan/amagi from npm; log in $(REALPEER)/install.log)"
	@bash $(REALPEER)/install.sh > $(REALPEER)/install.log 2>&1 \
		|| { cat $(REALPEER)/install.log; exit 1; }
	@touch $(REALPEER_STAMP)

realpeer: $(REALPEER_STAMP)

test: $(STAMP) $(REALPEER_STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check pipeline tests bench migrations
	$(BIN)/ruff format --check pipeline tests bench migrations
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/ingest demo

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(REALPEER)/node_modules
