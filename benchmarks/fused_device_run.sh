#!/usr/bin/env bash
# Device calls for issue #26 (run from the project root on the GPU machine; wheels in $WHL, results to $OUT).
#   bash benchmarks/fused_device_run.sh measure   # GEMM/tile probe, embed_throughput (ESM-2 3B, 500 bp) with the
#                                                 # peers, fused/unfused accuracy against FP32 (~7 min)
#   bash benchmarks/fused_device_run.sh tests     # the GPU tests (~9 min)
# Each step runs under what is left of $BUDGET_S.
set -u
WHL=${WHL:-.whl}; OUT=${OUT:-/tmp/out}; BUDGET_S=${BUDGET_S:-580}
START=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - START) - ${1:-0} )); }
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHL"/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 VIRNUCFLOW_SHARED=${VIRNUCFLOW_SHARED:-$PWD/.shared}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.limit --format=csv,noheader
if [ "${1:-measure}" = tests ]; then
  timeout "$(left 5)" python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_kernels.py \
    tests/test_models.py tests/test_engine.py > "$OUT/gpu_tests.log" 2>&1
  echo "GPU tests rc=$?: $(tail -1 "$OUT/gpu_tests.log") ($(( $(date +%s) - START )) s)"
  grep -E "^(FAILED|ERROR)" "$OUT/gpu_tests.log" | head -20
  exit 0
fi
PROBE=${PROBE:-esm2_gemm_probe}  # or esm2_epilogue_gemm_probe, or none
[ "$PROBE" = none ] || timeout "${PROBE_S:-120}" python3 "benchmarks/$PROBE.py" --reps 20 > "$OUT/$PROBE.md" 2>&1
echo "probe rc=$? ($(( $(date +%s) - START )) s)"
timeout "${THROUGHPUT_S:-230}" python3 benchmarks/embed_throughput.py --quick --models esm2 --workloads 500bp \
  --n-esm "${N_ESM:-1560}" --out "$OUT" > "$OUT/throughput.log" 2>&1
echo "throughput rc=$? ($(( $(date +%s) - START )) s)"
timeout "$(left 3)" python3 benchmarks/esm2_fused_accuracy.py --n "${N_FRAMES:-1000}" --token-frames 200 --out "$OUT" \
  > "$OUT/accuracy.log" 2>&1; echo "accuracy rc=$? ($(( $(date +%s) - START )) s)"
rm -f "$OUT"/embed_throughput_*.json  # the .md holds the same rows
[ "$PROBE" = none ] || cut -c1-150 "$OUT/$PROBE.md"
grep -E "tok/s" "$OUT/throughput.log" | cut -c1-130
grep -E "^\| fp" "$OUT/accuracy.log" | cut -c1-170
