# One Makefile so the README stays two commands long. Every target does its own set-up
# and is quick when the set-up is already done (stamp files).

PYTHON ?= $(shell pyenv which python3.13 2>/dev/null || command -v python3.13)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
HOST   ?= 127.0.0.1
PORT   ?= 8000
DEVICES ?= 50

ENGINE_SRC := $(shell find engine -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.py' -o -name '*.pyi' -o -name 'CMakeLists.txt' -o -name 'pyproject.toml' \) -not -path 'engine/build/*' -not -path 'engine/tests/*' 2>/dev/null)

.PHONY: run test setup lint imports format migrate demo bench clean sanitize

run: setup
	$(PY) -m walle_web.devserver --host $(HOST) --port $(PORT) --devices $(DEVICES)

test: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) scripts/imports.py
	WALLE_DEBUG=1 $(PY) manage.py check --fail-level WARNING
	WALLE_DEBUG=1 $(PY) manage.py makemigrations --check --dry-run
	$(PY) -m pytest
	bash scripts/sanitize.sh

# The engine under ASan + UBSan: hostile-model tests and bounded fuzz runs (FUZZ_SECONDS per
# target, default 15). The sanitized build lives in engine/build/sanitize (incremental).
sanitize: setup
	bash scripts/sanitize.sh

setup: $(VENV)/.deps $(VENV)/.engine $(VENV)/.browser

$(VENV)/.deps: pyproject.toml
	@test -n "$(PYTHON)" || (echo "python3.13 not found: install Python 3.13 (pyenv install 3.13.0)" && exit 1)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[dev]'
	touch $@

$(VENV)/.engine: $(VENV)/.deps $(ENGINE_SRC)
	@if [ -f engine/pyproject.toml ]; then $(PY) scripts/build-engine.py; fi
	touch $@

$(VENV)/.browser: scripts/ensure-browser.sh
	bash scripts/ensure-browser.sh
	touch $@

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) scripts/imports.py

# Every import between packages, and the layers they must respect.
imports:
	$(PY) scripts/imports.py --list

format:
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: setup
	$(PY) bench/delivery.py

clean:
	rm -rf $(VENV) var engine/build
