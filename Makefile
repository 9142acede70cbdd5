# seqrl: `make demo` and `make test` bootstrap .venv on first use (Python 3.11).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest workers: compiles are single-threaded, so two workers use both cores
WORKERS ?= 2

.PHONY: help install demo test mutants lint format bench bench-quick bench-ppo meta-point meta-cheetah-vel meta-ml1-reach clean

help:
	@echo "make demo       create .venv, install, train S5-PPO on a memory task, print results"
	@echo "make test       create .venv if needed, install, run the whole test suite"
	@echo "make mutants    break core behaviours one at a time; the suite must fail on each"
	@echo "make lint       ruff check + format check"
	@echo "make bench      every benchmark suite, regenerates docs/benchmarks.md and docs/benchmarks/"
	@echo "make bench-quick the same suites with smoke-test budgets, into runs/bench/ (a few minutes)"
	@echo "make bench-ppo  seqrl vs rejax vs Stable-Baselines3 PPO on CartPole (docs/benchmarks.md)"
	@echo "make meta-point the offline meta-RL pipeline on PointRobot (docs/results.md)"
	@echo "make meta-cheetah-vel / meta-ml1-reach  the same pipeline on Cheetah-Vel / Meta-World ML1 reach"

# bytecode compiled on all cores after the install (pip compiles one file at a time: 60 s in
# all against 26 + 25 s here); compiled up front, not on import, since PYTHONDONTWRITEBYTECODE
# may be set (it is on this project's machines). Left out: the packages' own test suites and
# what nothing here imports (OpenGL, pip, setuptools): 15 s instead of 24 s
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -e ".[dev]"
	$(BIN)/python -m compileall -q -j 0 -x 'site-packages/(.*/tests?/|(OpenGL|pip|setuptools)/)' "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" > /dev/null
	@touch $(STAMP)

install: $(STAMP)

# the flagship job: S5-PPO on a memory task (CartPole without velocities), ~2 minutes
demo: $(STAMP)
	$(BIN)/seqrl train configs/ppo/popgym/stateless_cartpole_s5.yaml

# loadgroup: each test on its own, but a module that builds an expensive fixture once keeps
# its tests on one worker (pytest.mark.xdist_group); the slowest 15 tests are listed at the end
test: $(STAMP)
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup -q --durations=15

# deliberate breakages, one at a time (tests/mutants.py; results in docs/testing/); MUTANTS="a b"
mutants: $(STAMP)
	$(BIN)/python tests/mutants.py $(MUTANTS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# SUITES="backbones num_envs" runs a subset (see python -m benchmarks run --help)
bench: $(STAMP)
	$(BIN)/python -m benchmarks run $(SUITES)

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks run --quick $(SUITES)

bench-ppo: $(STAMP)
	$(BIN)/python -m benchmarks.ppo_cartpole

# data -> world model -> agents -> evaluation -> results table (docs/results.md)
meta-point: $(STAMP)
	$(BIN)/python -m benchmarks.meta_point

meta-cheetah-vel: $(STAMP)
	$(BIN)/python -m benchmarks.meta_pipeline cheetah-vel

meta-ml1-reach: $(STAMP)
	$(BIN)/python -m benchmarks.meta_pipeline ml1-reach

clean:
	rm -rf $(VENV) .venv-* runs .pytest_cache
