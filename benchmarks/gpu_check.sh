#!/usr/bin/env bash
# GPU check (a few minutes on a fresh machine with Python and an NVIDIA GPU):
#   1. a virtual environment with torch (the default wheel, a CUDA build on Linux x86_64)
#      and this package with its test, pykan and nfn extras -- nothing heavier than .ci/run;
#   2. every CUDA instance of the test suite: tests parametrised with the `device`
#      fixture get a `[cuda...]` id, so `-k cuda` selects them (plus tests named *cuda*/*gpu*);
#   3. benchmarks/convert.py on cuda and, for the ratio, on cpu.
# Outputs go to $OUT (default benchmarks/out/gpu): env.txt, nvidia-smi.txt, pytest-cuda.txt/.xml,
# convert_cuda.{txt,json}, convert_cpu.{txt,json}, status.txt. Exits non-zero if a step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/out/gpu}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
VENV="${VENV:-.venv-gpu}"
status=0
step() { echo "== $*" | tee -a "$OUT/status.txt"; }

step "venv + install"
if [ ! -x "$VENV/bin/python" ]; then "$PY" -m venv "$VENV" || exit 1; fi
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q torch || { echo "pip install torch failed" | tee -a "$OUT/status.txt"; exit 1; }
python -m pip install -q -e '.[test,pykan,nfn]' || { echo "pip install -e failed" | tee -a "$OUT/status.txt"; exit 1; }

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
python - <<'PYEOF' 2>&1 | tee "$OUT/env.txt"
import sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda build", torch.version.cuda)
print("cuda available:", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device:", torch.cuda.get_device_name(0))
PYEOF
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "CUDA is not available: nothing to check" | tee -a "$OUT/status.txt"; exit 1; }

step "pytest -k cuda (whole suite)"
timeout "${PYTEST_TIMEOUT:-420}" python -m pytest tests -q -k "cuda or gpu" -p no:cacheprovider \
    --junitxml="$OUT/pytest-cuda.xml" 2>&1 | tee "$OUT/pytest-cuda.txt"
rc=${PIPESTATUS[0]}; echo "pytest exit $rc" | tee -a "$OUT/status.txt"; [ "$rc" -eq 0 ] || status=1

step "benchmarks/convert.py --device cuda"
timeout 300 python benchmarks/convert.py --device cuda --out "$OUT/convert_cuda.json" 2>&1 | tee "$OUT/convert_cuda.txt"
rc=${PIPESTATUS[0]}; echo "convert cuda exit $rc" | tee -a "$OUT/status.txt"; [ "$rc" -eq 0 ] || status=1

step "benchmarks/convert.py --device cpu"
timeout 300 python benchmarks/convert.py --device cpu --loop-models 20 --repeats 3 --out "$OUT/convert_cpu.json" 2>&1 | tee "$OUT/convert_cpu.txt"
rc=${PIPESTATUS[0]}; echo "convert cpu exit $rc" | tee -a "$OUT/status.txt"; [ "$rc" -eq 0 ] || status=1

echo "overall status $status" | tee -a "$OUT/status.txt"
exit "$status"
