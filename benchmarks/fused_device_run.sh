#!/usr/bin/env bash
# One device call for issue #26 (run from the project root on the GPU machine; wheels in $WHL), each step
# under what is left of $BUDGET_S: GPU kernel tests, embed_throughput (ESM-2 3B, 500 bp) with the peers,
# the layer profile (unfused and fused), the fused/unfused accuracy against FP32, the demo's fp32_compare.
set -u
WHL=${WHL:-../.whl}; OUT=${OUT:-/tmp/out}; BUDGET_S=${BUDGET_S:-570}
START=$(date +%s)
left() { echo $(( BUDGET_S - ($(date +%s) - START) - ${1:-0} )); }
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHL"/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
mkdir -p /tmp/shared/reference/virnucpro_original && export VIRNUCFLOW_SHARED=/tmp/shared  # (test_kernels needs none)
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu --format=csv,noheader
timeout 45 python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py > "$OUT/gpu_kernel_tests.log" 2>&1
echo "kernel tests: $(tail -1 "$OUT/gpu_kernel_tests.log") ($(( $(date +%s) - START )) s)"
timeout "${THROUGHPUT_S:-150}" python3 benchmarks/embed_throughput.py --quick --models esm2 --workloads 500bp \
  --n-esm "${N_ESM:-1000}" --out "$OUT" > "$OUT/throughput.log" 2>&1
echo "throughput done ($(( $(date +%s) - START )) s)"
timeout "$(left 120)" python3 benchmarks/profile_esm2_layer.py --out "$OUT" --reps 20 > "$OUT/profile.log" 2>&1
echo "profile done ($(( $(date +%s) - START )) s)"
timeout "$(left 35)" python3 benchmarks/esm2_fused_accuracy.py --n "${N_FRAMES:-1000}" --token-frames 200 --out "$OUT" \
  > "$OUT/accuracy.log" 2>&1; echo "accuracy rc=$? ($(( $(date +%s) - START )) s)"
timeout "$(left 3)" python3 -m snakemake fp32_compare -s "$PWD/Snakefile" -d "$PWD" --configfile config/demo.yaml \
  --cores 8 --resources gpu=1 > "$OUT/demo_fp32_compare.log" 2>&1; echo "demo fp32_compare rc=$? ($(( $(date +%s) - START )) s)"
for f in results/demo_*/qc/fp32_compare/summary.tsv; do echo "== $f"; cat "$f"; done >> "$OUT/demo_fp32_compare.log" 2>&1
rm -f "$OUT"/embed_throughput_*.json  # at most 8 files come back: the .md holds the same rows
grep -E "^\| fp" "$OUT/profile.log" | grep -E "whole|GELU|rotary|attention|quantise" | cut -c1-100
grep -E "tok/s" "$OUT/throughput.log" | cut -c1-110
grep -E "\| all \|" "$OUT/accuracy.log" | cut -c1-170
grep -E "esm2" "$OUT/demo_fp32_compare.log" | tail -6 | cut -c1-160
