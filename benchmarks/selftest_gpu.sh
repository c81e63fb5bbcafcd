#!/usr/bin/env bash
# `virnucflow selftest` on a GPU machine (the device; wheels in .whl/ from ../shared/tools/device-wheels.sh): full-size random-weight models, a reference made from them by fair-esm
# (ESM-2, FP32) and the FP32 reference attention (DNABERT-S); the production path (FP16) and FP32.
set -u
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl > /dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > $OUT/env.txt
python3 -c "import torch, esm; print('torch', torch.__version__, 'cuda', torch.version.cuda)" >> $OUT/env.txt
W=/tmp/st; mkdir -p $W
printf "sample\tfasta\ns1\t$PWD/resources/demo/lambda_contigs.fa\n" > $W/samples.tsv
models="models: {esm2: $W/models/esm2_t36_3B_random.pt, dnabert_s: $W/models/dnabert_s_random, classifier: $W/models/classifier_random.pth, classifier_chunk_length: 500, download: false}"
printf "samples: $W/samples.tsv\nchunk_length: 500\n$models\n" > $W/fp16.yaml
printf "samples: $W/samples.tsv\nchunk_length: 500\n$models\nembedding: {precision: fp32}\n" > $W/fp32.yaml
{
  /usr/bin/time -v python3 -m tests.make_reference --models $W/models --out $W/ref --device cuda --full-size 2>&1 | grep -v "^\s" | tail -3
  for p in fp16 fp32; do
    echo "== selftest --reference (full-size random models), config $p"
    /usr/bin/time -f "wall %e s, max rss %M kB" python3 -m virnucflow selftest --configfile $W/$p.yaml --reference $W/ref --out $OUT/selftest_$p.tsv 2> $W/$p.err
    echo "rc=$?"; grep -v " INFO " $W/$p.err | tail -3
  done
  echo "== selftest, bundled reference (the published models' outputs), full-size random models"
  python3 -m virnucflow selftest --configfile $W/fp16.yaml --out $OUT/selftest_bundled.tsv 2> $W/b.err | tail -4
  echo "rc=${PIPESTATUS[0]}"; tail -1 $W/b.err
} > $OUT/selftest.txt 2>&1
cat $OUT/selftest.txt | cut -c1-400
