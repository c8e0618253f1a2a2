# Two entry points, each from nothing: `make demo` and `make test`.
# Both build .venv first (a fresh virtual environment with every extra).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -c constraints/cpu.txt -e ".[all,dev]"
	touch $(STAMP)

# torch-cnn on the embedded emulator: 5-minute checkpoints, 6 preemptions per hour of uptime, half of
# them SIGKILL without notice. K = 60: each real second stands for a simulated minute, so the whole
# run takes about a minute.
demo: $(STAMP)
	$(VENV)/bin/spotsim run --workload torch-cnn --interval 5m --preempt-rate 6 --kill mixed:0.5 \
		--grace 30s --restart-delay 2m --time-scale 60 --seed 3 --max-preemptions 4 --out spotsim-run

test: $(STAMP)
	$(VENV)/bin/python -m pytest

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/storage_throughput.py
	$(VENV)/bin/python benchmarks/checkpoint_overhead.py
	$(VENV)/bin/python benchmarks/harness_overhead.py

clean:
	rm -rf $(VENV)
