#!/usr/bin/env bash
# One device-machine session's checks, in order of value, each under its own time limit so that
# a hang or failure in one still leaves the others' results: environment, `convbench check
# --device cuda` (verify + time vs cuDNN/cuFFT; CACHE=cold or both adds cold-L2 timing), the
# CUDA test module on the real GPU, and a CUDA calibration of the auto cost model. Logs and
# CSVs go to $OUT (default ./gpu-out).
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
# device_site/sitecustomize.py: the np.row_stack alias numba-cuda 0.30.4 needs under NumPy 2.5
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/tools/device_site:$PWD
PY=${PYTHON:-python3}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  $PY -c "import sys, numpy, numba, scipy, torch; from numba import cuda; \
print(sys.version.split()[0], 'numpy', numpy.__version__, 'numba', numba.__version__, \
'scipy', scipy.__version__, 'torch', torch.__version__, 'cudnn', torch.backends.cudnn.version()); \
import importlib.metadata as m; print('numba-cuda', m.version('numba-cuda')); \
print(cuda.get_current_device().name, cuda.get_current_device().compute_capability)"
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
echo "== check"
timeout "${CHECK_S:-200}" $PY -m convbench check --device cuda --cache "${CACHE:-warm}" --out "$OUT" \
  >"$OUT/check.log" 2>&1
echo "check rc=$?"
echo "== pytest tests/cuda"
timeout "${PYTEST_S:-100}" $PY -m pytest -q -p no:cacheprovider tests/cuda >"$OUT/pytest_cuda.log" 2>&1
echo "pytest rc=$?"; tail -n 15 "$OUT/pytest_cuda.log"
echo "== calibrate cuda"
timeout "${CALIBRATE_S:-90}" $PY -m convbench calibrate --device cuda --layers "${LAYERS:-40}" \
  --out "$OUT/calibration_cuda.json" >"$OUT/calibrate.log" 2>&1
echo "calibrate rc=$?"; tail -n 4 "$OUT/calibrate.log"
echo "== per-call overhead"
timeout "${OVERHEAD_S:-60}" $PY tools/gpu_overhead.py "$OUT" >"$OUT/overhead.log" 2>&1
echo "overhead rc=$?"; grep "per call" "$OUT/overhead.log"
echo "== check (tail)"
tail -n 70 "$OUT/check.log"
