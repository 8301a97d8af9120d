#!/bin/bash
# The GPU check: on a CUDA machine with one GPU (the two-device layout then puts both towers on cuda:0), in one
# run, bench.py's GPU rows, the torch.compile rows, the CUDA tests, the tests that start processes, prepare and
# train.py end to end, the LRN, convolution and max-pool kernels alone, a profile of a training step and the GPU
# data path. Each stage's log goes to $OUT (default /tmp/gpu_check) as gpu_check_logs.tgz, refreshed after every
# stage so a run stopped early keeps what it measured; a summary is printed last and kept in $OUT/summary.txt.
#   bash tools/gpu_check.sh                          # from the repository root, every stage (about 12 minutes)
#   STAGES="bench cuda-tests" bash tools/gpu_check.sh   # some stages, in the order named:
#                                                    # bench compile cuda-tests suite e2e lrn conv pool profile decode
#   ROWS=merged-bf16,torchvision-bf16 STAGES=bench bash tools/gpu_check.sh   # other rows; see each stage's variables
# With pytest-xdist importable (tools/stage_gpu_extras.sh unpacks it into .gpu_extras/ for a machine without
# pip), the test stages run 8 files at a time. Check the script's syntax anywhere: bash -n tools/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
[ -d .gpu_extras ] && PYTHONPATH=$PYTHONPATH:$PWD/.gpu_extras  # pytest-xdist, unpacked (stage_gpu_extras.sh)
FINAL=${OUT:-/tmp/gpu_check}; OUT=$(mktemp -d); mkdir -p "$FINAL"  # logs gathered into one archive
ROWS=${ROWS:-merged,two-device,torchvision,merged-bf16,torchvision-bf16,train-loop,merged-graphs,two-device-graphs,merged-bf16-graphs,torchvision-bf16-graphs,train-loop-graphs}
COMPILE_ROWS=${COMPILE_ROWS:-merged-bf16-compile,torchvision-bf16-compile}
BATCH=${BATCH:-256}
XDIST=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8 --dist loadfile")  # a file per worker: its fixtures run once
STAGES=${STAGES:-bench compile cuda-tests suite e2e lrn conv pool profile decode}
S=$(date +%s)
stage() {
  tar czf "$FINAL/gpu_check_logs.tgz" -C "$OUT" .
  echo "== $1 at +$(( $(date +%s) - S ))s" | tee -a "$OUT/stages.log"
}
touch "$OUT/pytest-cuda.log" "$OUT/pytest-all.log" "$OUT/bench.txt" "$OUT/bench-compile.txt" "$OUT/lrn.txt" \
  "$OUT/e2e.txt" "$OUT/conv.txt" "$OUT/pool.txt"

stage "environment"
{ nvidia-smi -L; nproc; python3 -c "import torch, torchvision, triton; print('torch', torch.__version__, 'torchvision',
  torchvision.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"; } 2>&1 | tee "$OUT/env.log"

# Each stage is a function; they run in the order STAGES names them, so a short call puts first what matters most.
# Two bench runs: compiling takes 30-60 s a row, and a run stopped by its timeout prints nothing.
run_bench() {
  stage "bench.py --device cuda, batch $BATCH, training: eager rows"
  timeout ${BENCH_SECONDS:-200} python3 bench.py --device cuda --batch-sizes "$BATCH" --mode train --rows "$ROWS" \
    --json "$OUT/bench.json" > "$OUT/bench.txt" 2> "$OUT/bench.err"; echo "bench exit $?"
}
run_compile() {
  stage "bench.py --device cuda, batch $BATCH, training: torch.compile rows"
  timeout ${COMPILE_SECONDS:-240} python3 bench.py --device cuda --batch-sizes "$BATCH" --mode train \
    --rows "$COMPILE_ROWS" --json "$OUT/bench-compile.json" > "$OUT/bench-compile.txt" 2> "$OUT/bench-compile.err"
  echo "bench exit $?"
}
run_cuda-tests() {
  stage "CUDA tests (kernels, parity with the float64 oracle, compiled, CUDA graphs, NaN check)"
  timeout ${CUDA_TESTS_SECONDS:-240} python3 -m pytest -q -rf -p no:cacheprovider $XDIST ${CUDA_TESTS:-tests/ops \
    tests/model tests/train/test_cuda_graphs.py tests/train/test_train_loop.py tests/data/test_gpu_decode.py} \
    > "$OUT/pytest-cuda.log" 2>&1
  tail -4 "$OUT/pytest-cuda.log"
}
run_suite() {
  stage "the tests that start processes, with CUDA visible (TESTS=tests for the whole suite)"
  timeout -s INT ${SUITE_SECONDS:-70} python3 -m pytest -q -rf -p no:cacheprovider $XDIST ${TESTS:-tests/train/test_train.py \
    tests/train/test_train_torchrun.py tests/distributed/test_torchrun.py} > "$OUT/pytest-all.log" 2>&1
  tail -6 "$OUT/pytest-all.log"
}
run_e2e() {
  stage "prepare on all cores, then train.py end to end on the prepared data (--decode auto)"
  local args E2E
  for args in "${E2E_ARGS:-}" ${E2E_ARGS2:+"$E2E_ARGS2"}; do  # E2E_ARGS2: a second run, e.g. "--decode cpu"
    E2E=$(mktemp -d)/e2e
    timeout ${E2E_SECONDS:-240} python3 tools/e2e_check.py --out "$E2E" $args >> "$OUT/e2e.txt" 2>> "$OUT/e2e.err"
    echo "e2e check ($args) exit $?"
    cp "$E2E/train.log" "$OUT/e2e-train$(echo $args | tr -c 'a-z0-9\n' '_').log" 2>/dev/null; rm -rf "$E2E"
  done
  cat "$OUT/e2e.txt"
}
run_lrn() {
  stage "the LRN kernels alone: backward forms, tiles, warps"
  timeout 100 python3 tools/lrn_microbench.py ${LRN_ARGS:-} > "$OUT/lrn.txt" 2> "$OUT/lrn.err"
}
run_conv() {
  stage "the five convolutions alone: grouped, per-tower dense, torchvision; conv1 as space-to-depth"
  local dt
  for dt in ${CONV_DTYPES:-bf16 fp32}; do
    timeout 60 python3 tools/conv_microbench.py --dtype $dt >> "$OUT/conv.txt" 2>> "$OUT/conv.err"
  done
}
run_pool() {
  stage "the max-pool kernels alone: ATen against Triton, tiles, warps"
  timeout ${POOL_SECONDS:-100} python3 tools/pool_microbench.py ${POOL_ARGS:-} > "$OUT/pool.txt" 2> "$OUT/pool.err"
}
run_profile() {
  stage "profile of one training step"
  local row
  for row in ${PROFILE_ROWS:-merged-bf16 torchvision-bf16 merged-bf16-graphs}; do
    timeout 90 python3 tools/profile_step.py --row $row --batch-size "$BATCH" --out "$OUT" --top 18 > /dev/null \
      2>> "$OUT/profile.err"
  done
}
run_decode() {
  stage "GPU data path (nvJPEG decode, crops, loader)"
  timeout 90 python3 tools/gpu_decode_check.py --budget 70 --out "$OUT" > "$OUT/decode.txt" 2> "$OUT/decode.err"
  echo "decode check exit $?"
}
for name in $STAGES; do
  if declare -F "run_$name" > /dev/null; then "run_$name"; else echo "gpu_check: no stage named $name"; fi
done

stage "done"
{
echo; echo "================ summary ($(head -1 "$OUT/env.log"))"
tail -1 "$OUT/env.log"
echo "-- CUDA tests:"; tail -1 "$OUT/pytest-cuda.log"
echo "-- tests that start processes:"; grep -E "passed|failed|error" "$OUT/pytest-all.log" | tail -1
grep -E "^(FAILED|ERROR)" "$OUT/pytest-all.log" "$OUT/pytest-cuda.log" | head -12
echo "-- LRN kernels alone (us per call, batch 256):"; cat "$OUT/lrn.txt"; tail -3 "$OUT/lrn.err" 2>/dev/null
echo "-- convolutions alone (us per call: GPU forward, fwd+bwd; host to launch them):"; grep -E "^(batch|[a-z-]+ +(all|conv1) )" "$OUT/conv.txt"; tail -2 "$OUT/conv.err" 2>/dev/null
echo "-- max-pool kernels alone (us per call, batch 256):"; cat "$OUT/pool.txt"; tail -3 "$OUT/pool.err" 2>/dev/null
echo "-- profiles (kernels, python hotspots: in the logs):"; head -q -n 16 "$OUT"/profile-*.txt 2>/dev/null
echo "-- GPU data path:"; cat "$OUT/decode.txt" 2>/dev/null | head -20; tail -2 "$OUT/decode.err" 2>/dev/null
echo "-- prepare and train.py end to end:"; cat "$OUT/e2e.txt" 2>/dev/null; tail -3 "$OUT/e2e.err" 2>/dev/null
echo "-- bench:"; cat "$OUT/bench.txt" "$OUT/bench-compile.txt"; tail -3 "$OUT/bench.err" "$OUT/bench-compile.err" 2>/dev/null
} | tee "$FINAL/summary.txt"
cp "$OUT/bench.json" "$OUT/bench-compile.json" "$FINAL/" 2>/dev/null
tar czf "$FINAL/gpu_check_logs.tgz" -C "$OUT" .
