# Two commands do all the set-up: `make demo` and `make test` (each creates .venv when missing).
PY := .venv/bin/python
FRESH ?= 0
CLASSES ?= 1
PYTEST_ARGS ?=
# See ops/__init__.py: two OpenMP runtimes (torch, Numba) must not spin-wait against each other.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: env oracle-env demo test bench gpu-check clean

env:
	@bash tools/setup_env.sh

oracle-env:
	@bash tools/setup_env.sh oracle

demo: env
	@$(PY) tools/demo.py $(if $(filter 1,$(FRESH)),--fresh,) --classes $(CLASSES)

test: env
	@$(PY) -m pytest $(PYTEST_ARGS)

# CUDA-vs-CPU kernel equality, 30 demo training steps (fp32 + AMP) with exact resume, Waymo
# throughput; JSON report in work_dirs/gpu_check/report.json; exit 2 without a GPU (docs/gpu_check.md).
gpu-check: env
	@$(PY) tools/gpu_check.py

bench: env
	@for s in tools/benchmarks/bench_*.py; do echo "== $$s"; $(PY) $$s || exit 1; done

clean:
	rm -rf work_dirs .pytest_cache
