#!/usr/bin/env bash
# One command for the GPU device machine (H200, torch 2.11 + CUDA 13, no Debian packages, no
# network). Builds for sm_90a against the torch already there, runs the CUDA-vs-CPU tests and the
# kernel benchmarks, and prints a table last. Designed to finish within 8 minutes.
#
#   here:    scripts/fetch-deps.sh          (unpacks the Debian build deps into .deps/)
#   device:  scripts/gpu-check.sh           (carry .deps; results land in $OUT or gpu-check/)
#
# Without a GPU (`--cpu-only`, or no nvidia-smi) it runs the same steps with the CPU twins only,
# which is what a machine without a device can check.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
OUTDIR=${OUT:-gpu-check}
mkdir -p "$OUTDIR"
CPU_ONLY=0
[ "${1:-}" = "--cpu-only" ] && CPU_ONLY=1
command -v nvidia-smi >/dev/null 2>&1 || CPU_ONLY=1

PY=${TINYSEEK_PYTHON:-}
for cand in "$PY" .venv/bin/python python3 python; do
  [ -n "$cand" ] && "$cand" -c "import torch" 2>/dev/null && { PY=$(command -v "$cand" || echo "$cand"); break; }
done
echo "gpu-check: python $PY, torch $("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)')"
[ "$CPU_ONLY" = 1 ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

PREFIX=""
if [ -d .deps/root/usr ]; then
  PREFIX="-DCMAKE_PREFIX_PATH=$(pwd)/.deps/root/usr;$(pwd)/.deps/root/usr/lib/x86_64-linux-gnu/cmake;$(pwd)/.deps/root/usr/share"
  export CPATH="$(pwd)/.deps/root/usr/include:$(pwd)/.deps/root/usr/include/eigen3${CPATH:+:$CPATH}"
  export LD_LIBRARY_PATH="$(pwd)/.deps/root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
ARCHS="90a"
[ "$CPU_ONLY" = 1 ] && ARCHS="90a;80"
BUILD=build-gpu
cmake -S . -B $BUILD -G Ninja -DCMAKE_BUILD_TYPE=Release -DTINYSEEK_PYTHON="$PY" -DTINYSEEK_CUDA_ARCHS="$ARCHS" \
  ${PREFIX:+"$PREFIX"} > "$OUTDIR/configure.log" 2>&1 || { tail -30 "$OUTDIR/configure.log"; exit 1; }
cmake --build $BUILD -j "$(nproc)" > "$OUTDIR/build.log" 2>&1 || { grep -E "error|FAILED" "$OUTDIR/build.log" | head -40; exit 1; }
echo "gpu-check: built in $(( $(date +%s) - START )) s"

# CUDA-vs-CPU tests (they skip themselves without a device), then everything else quickly.
FILTER='*Cuda*:*CUDA*:*Gpu*'
[ "$CPU_ONLY" = 1 ] && FILTER='*'
declare -A RESULT
for t in tinyseek_kernel_tests tinyseek_tests; do
  timeout 240 ./$BUILD/$t --gtest_filter="$FILTER" --gtest_brief=1 > "$OUTDIR/$t.log" 2>&1
  RESULT[$t]="rc=$? $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$OUTDIR/$t.log" | tr '\n' ' ')"
done
TINYSEEK_LIBRARY=$(pwd)/$BUILD/libtinyseek.so timeout 240 "$PY" -m pytest -q tests/python -k "cuda or gpu or opcheck" \
  > "$OUTDIR/pytest.log" 2>&1
RESULT[pytest]="rc=$? $(tail -1 "$OUTDIR/pytest.log")"

# Device benchmarks (python/tinyseek/gpu_bench.py): FP8 GEMM TFLOP/s, MoE permute bandwidth vs a
# device copy, grouped GEMM, mla_decode vs decompress+SDPA, rms_norm; each against its baseline.
GPU_BENCH_ARGS="--json $OUTDIR/gpu_bench.json"
[ "$CPU_ONLY" = 1 ] && GPU_BENCH_ARGS="$GPU_BENCH_ARGS --device cpu --quick --iters 3"
PYTHONPATH=$(pwd)/python TINYSEEK_LIBRARY=$(pwd)/$BUILD/libtinyseek.so timeout 240 "$PY" -m tinyseek.gpu_bench \
  $GPU_BENCH_ARGS > "$OUTDIR/gpu_bench.log" 2>&1
RESULT[gpu_bench]="rc=$? (tables in gpu_bench.log)"

# Kernel benchmarks: each against its baseline (the speedup table is the last block of the output).
BENCH_FILTER='cuda|rms_norm'
[ "$CPU_ONLY" = 1 ] && BENCH_FILTER='rms_norm'
timeout 200 ./$BUILD/tinyseek_bench --benchmark_filter="$BENCH_FILTER" --benchmark_min_time=0.1 \
  --benchmark_format=console > "$OUTDIR/bench.log" 2>&1
BRC=$?

echo
echo "== gpu-check summary ($( [ "$CPU_ONLY" = 1 ] && echo 'CPU only: no GPU here' || echo GPU ), $(( $(date +%s) - START )) s) =="
printf "%-24s %s\n" "step" "result"
for k in tinyseek_kernel_tests tinyseek_tests pytest gpu_bench; do printf "%-24s %s\n" "$k" "${RESULT[$k]}"; done
printf "%-24s rc=%s\n" "tinyseek_bench" "$BRC"
echo
sed -n '/^group /,$p' "$OUTDIR/bench.log"
echo
sed -n '/^| op /,$p' "$OUTDIR/gpu_bench.log"
