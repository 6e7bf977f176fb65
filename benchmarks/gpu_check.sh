#!/usr/bin/env bash
# The suite's GPU check (benchmarks/gpu_check.py says what it measures), then the tests that only
# run on a GPU. `benchmarks/gpu_check.sh --device cpu` runs it at small sizes, without the tests.
# Any other option goes to gpu_check.py (--out DIR, --all-methods, --budget-s S).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CUDA_DEVICE_ORDER="${CUDA_DEVICE_ORDER:-PCI_BUS_ID}"  # torch and NVML number GPUs alike
status=0
python3 benchmarks/gpu_check.py "$@" || status=$?
case " $* " in
  *" --device cpu "*|*" --device=cpu "*) ;;
  *) python3 -m pytest -q -p no:cacheprovider -m "not slow" -k "cuda or gpu" tests || status=$? ;;
esac
exit $status
