# One entry point for people and CI. `make test` installs everything it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test lint demo bench migrations-check clean

# pip's output goes to .venv/install.log and is shown only when the install fails.
$(STAMP): pyproject.toml
	@echo "setting up $(VENV) (Python packages from PyPI; log in $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@{ $(BIN)/pip install --upgrade pip && $(BIN)/pip install -e '.[dev]'; } \
		> $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

setup: $(STAMP)

test: $(STAMP)
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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
