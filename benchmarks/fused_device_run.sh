#!/usr/bin/env bash
# One device call for issue #26 (run from the project root on the GPU machine, wheels in $WHL):
# GPU kernel tests, the layer profile (unfused and fused), embed_throughput (ESM-2, 500 bp) with the peers;
# with STEP=accuracy instead: the fused/unfused accuracy against FP32 and the demo's fp32_compare.
set -u
WHL=${WHL:-../.whl}
OUT=${OUT:-/tmp/out}
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHL"/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu --format=csv,noheader
if [ "${STEP:-speed}" = speed ]; then
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py 2>&1 | tail -15 > "$OUT/gpu_kernel_tests.log"
  tail -3 "$OUT/gpu_kernel_tests.log"
  timeout 150 python3 benchmarks/profile_esm2_layer.py --out "$OUT" --reps 20 > "$OUT/profile.log" 2>&1
  tail -5 "$OUT/profile.log"
  timeout 60 python3 benchmarks/esm2_gemm_probe.py > "$OUT/gemm_probe.md" 2>&1
  timeout "${THROUGHPUT_S:-300}" python3 benchmarks/embed_throughput.py --models esm2 --workloads 500bp \
    --n-esm "${N_ESM:-2000}" --out "$OUT" 2>&1 | tee "$OUT/throughput.log" | grep -E "tok/s|Error|error" | cut -c1-150
else
  timeout "${ACCURACY_S:-420}" python3 benchmarks/esm2_fused_accuracy.py --n "${N_FRAMES:-10000}" --out "$OUT" \
    > "$OUT/accuracy.log" 2>&1; echo "accuracy rc=$?"
  tail -30 "$OUT/accuracy.log"
  if [ "${DEMO:-1}" = 1 ]; then
    timeout "${DEMO_S:-150}" python3 -m snakemake fp32_compare -s "$PWD/Snakefile" -d "$PWD" --configfile config/demo.yaml \
      --cores 8 --resources gpu=1 > "$OUT/demo_fp32_compare.log" 2>&1; echo "demo fp32_compare rc=$?"
    cat results/demo_*/qc/fp32_compare/summary.tsv 2>/dev/null | tee "$OUT/demo_fp32_compare_summary.tsv"
    tail -5 "$OUT/demo_fp32_compare.log"
  fi
fi
