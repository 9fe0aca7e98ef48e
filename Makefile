# make run  — a throw-away demo server on high ports (./var/demo)
# make test — installs what the tests need (Debian packages, Python packages) and runs lint, types and tests
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run test venv deps lint check-types unit bench clean

$(BIN)/.synced: pyproject.toml uv.lock
	@test -x $(BIN)/python || python3 -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv sync --locked --quiet
	@touch $@

venv: $(BIN)/.synced

run: venv
	$(BIN)/kinmail demo

deps:
	bash scripts/install-deps.sh

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

check-types: venv
	$(BIN)/mypy

test: venv deps lint check-types
	$(BIN)/pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
