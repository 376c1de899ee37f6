# Every target creates/updates the local .venv first, so each command works on a fresh checkout.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TIL_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: venv run test lint bench results
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@
venv: $(BIN)/.installed

run: venv  ## train BPR-MF on Gowalla (quick budget, ~10 min on 2 CPU cores)
	$(BIN)/python -m experiments.main --config=configs/gowalla_mf.py:quick --workdir=runs/gowalla_mf_quick

lint: venv
	$(BIN)/ruff check .

test: venv lint  ## lint + the whole test suite (< 10 min on 2 cores)
	$(BIN)/python -m pytest tests

bench: venv
	$(BIN)/python -m benchmarks.run --suite=quick --out=benchmarks/quick.json

results: venv  ## every converged table and figure in results/ from the finished cells (trains nothing)
	$(BIN)/python -m experiments.report
