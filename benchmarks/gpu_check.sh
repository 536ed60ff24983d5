#!/usr/bin/env bash
# One prepared GPU check, for a machine without network: the scale benchmark's LIAR rows (time, peak
# memory, pruned speed) and recovery rows (tokens/s, MFU, the memory estimate against the measured peak,
# and FSDP in one process), then the test suite on CUDA. Everything lands in $OUT.
# Prepare here: ../shared/tools/device-wheels.sh (fills .whl/), then run on the GPU machine from the
# project root, carrying .whl:  BENCH_COMMIT=<commit> bash benchmarks/gpu_check.sh
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
S=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$S" .whl/*.whl || exit 1
export PYTHONPATH=$S:$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' | tee -a "$OUT/gpu.txt"
python3 benchmarks/scale.py --shapes "${SHAPES:-llama-3.1-8b,llama-3.2-1b,qwen2.5-7b,llama-3.1-70b-4}" \
  --rows "${ROWS:-forward,liar-20,recovery,recovery-fsdp,liar-20-m64,liar-50}" --budget-s "${BENCH_S:-200}" --out "$OUT" --name "${NAME:-scale_gpu}" \
  2>&1 | grep -v Warning | tee "$OUT/scale.log"
# One thread per worker: with 16 workers each using torch's default threads, the suite was only 86%
# done after 385 s on an H200 machine (2 CPU cores here take about 3.5 min), most likely from
# oversubscribed cores (not verified). -v prints each result as it lands, so a run cut short still
# names its failures (that run's five failures went unnamed).
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 timeout "${TEST_S:-200}" python3 -m pytest -n "${WORKERS:-12}" -v -rfE --timeout 150 \
  -p no:cacheprovider -p no:benchmark tests > "$OUT/tests.log" 2>&1
echo "tests rc=$?" | tee -a "$OUT/tests.log"
grep -E "FAILED|ERROR" "$OUT/tests.log" | head -30
tail -3 "$OUT/tests.log"
