# hesd: `make test` (what CI runs) and `make demo`. Everything runs from .venv, created on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test check lint format typecheck pytest demo mosquitto bench clean

test: $(STAMP) mosquitto check

# The same checks developers run before a commit.
check: lint typecheck pytest

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	@touch $@

# The MQTT integration tests need a real Mosquitto broker (tests start their own on a free port).
mosquitto:
	@if command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing the Mosquitto broker (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	else \
		echo "make test needs the Mosquitto broker: run 'sudo apt-get install mosquitto' and retry" >&2; \
		exit 1; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

# hesd on its embedded defaults, with an example inventory, answering hesctl.
demo: $(STAMP)
	$(BIN)/python -m hesd.demo

bench: $(STAMP)
	$(BIN)/python bench/store_commit.py
	$(BIN)/python bench/codec.py
	$(BIN)/python bench/sim.py
	$(BIN)/python bench/sessions.py
	$(BIN)/python bench/uplink.py
	$(BIN)/python bench/uplink_stages.py
	$(BIN)/python bench/bulk.py
	$(BIN)/python bench/alerts.py
	$(BIN)/python bench/firmware.py
	$(BIN)/python bench/api.py

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache .hypothesis
