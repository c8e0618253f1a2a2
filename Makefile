# Two entry points, each from nothing: `make demo` and `make test`.
# Both build .venv first (a fresh virtual environment with every extra).
# `make check` is the fast test tier for while you edit (under a minute); `make test` runs the linters
# and every test, as CI does.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test check lint bench clean

$(STAMP): pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -c constraints/cpu.txt -e ".[all,dev]"
	touch $(STAMP)

# torch-cnn on the embedded emulator, standing for 24 h of training (the default --work): 5-minute
# checkpoints, 0.5 preemptions per hour of VM uptime, half of them SIGKILL without notice, a 2-minute
# restart delay. Only compute is compressed (K is chosen from the measured step time); start-up,
# checkpoint blocking and exits count at their real duration. About two minutes.
demo: $(STAMP)
	$(VENV)/bin/spotsim run --workload torch-cnn --interval 5m --preempt-rate 0.5 --kill mixed:0.5 \
		--grace 30s --restart-delay 2m --seed 3 --out spotsim-run

test: $(STAMP) lint
	$(VENV)/bin/python -m pytest --durations=30

# The fast tier: tests marked neither live nor slow (tests/conftest.py marks them and defines --fast).
check: $(STAMP)
	$(VENV)/bin/python -m pytest -q --fast

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy spotsim

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/storage_throughput.py
	$(VENV)/bin/python benchmarks/checkpoint_overhead.py
	$(VENV)/bin/python benchmarks/harness_overhead.py

clean:
	rm -rf $(VENV)
