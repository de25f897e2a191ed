# The two commands of the README: `make demo` and `make test`. Each builds
# .venv when it is missing (Python 3.11+), so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint bench mutation venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=77" wheel
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

# Start the local stack with its workers, run the main job (the demo's story,
# which plays every part itself), deploy the flows and the escalation
# automations, then the crisis drill: a corrupted batch, a poisoned retrain and
# a crashing primary injected into the running stack, which now responds on its
# own; each incident's timeline is printed.
# The stack stops whatever happened; `make demo KEEP=1` leaves it up (Prefect UI,
# MLflow UI) and prints where to look.
DRILL ?= corrupted-batch poisoned-retrain primary-raising
demo: $(STAMP)
	$(BIN)/crisis up --worker
	$(BIN)/crisis demo && $(BIN)/crisis deploy && $(BIN)/crisis drill $(DRILL) --timelines; status=$$?; \
	if [ -n "$(KEEP)" ]; then $(BIN)/crisis status; echo "the stack stays up: open the URLs above; '$(BIN)/crisis down' stops it"; \
	else $(BIN)/crisis down; fi; exit $$status

# Three workers on two cores (the end-to-end tests mostly wait on servers): each of the three end-to-end groups
# (the stack commands, the closed loop, the docs' blocks) one test after another in one worker, the modules of the
# unit and flow tests around them (tests/conftest.py, unit_of_work); the slowest 20 are listed at the end.
test: lint
	$(BIN)/python -m pytest -n 3 --durations=20

# ruff (lint, import order, format) and mypy against its baseline (.ci/typecheck): part of make test.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python .ci/typecheck

# Unit tests only: no servers started.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not e2e" tests/unit

# Figures side by side with the peers (pandera, MLflow's defaults, Evidently);
# several minutes. Not part of make test.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/bench_validation.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_diagnostics.py
	$(BIN)/python benchmarks/false_alarms.py
	$(BIN)/python benchmarks/bench_serving.py
	$(BIN)/python benchmarks/bench_inference_log.py
	$(BIN)/python benchmarks/bench_escalation.py
	$(BIN)/python benchmarks/bench_drill.py --iterations 20 --silent
	$(BIN)/python benchmarks/mutation.py --max-children 2 --json benchmarks/results/mutation.json --fail-under 0.9

# mutmut over the decision modules in a scratch copy of the tree (about 14 min on 2 cores; part of make bench, not of make test).
mutation: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/mutation.py --max-children 2 --json benchmarks/results/mutation.json --fail-under 0.9

clean:
	rm -rf $(VENV) .crisis .pytest_cache .hypothesis .mypy_cache .ruff_cache mutants
