#!/usr/bin/env bash
# Builds the torch-free kernels, schedules and their tests with AddressSanitizer and
# UndefinedBehaviorSanitizer (CMake: TINYSEEK_KERNELS_ONLY=ON TINYSEEK_SANITIZE=ON, no CUDA) into
# BUILD_DIR and runs them; any sanitizer report fails. `make test` runs it through ctest.
#   scripts/sanitize.sh [BUILD_DIR]      (default: build/sanitize)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$here/build/sanitize}"
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake -S "$here" -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTINYSEEK_KERNELS_ONLY=ON \
  -DTINYSEEK_SANITIZE=ON -DTINYSEEK_CUDA=OFF "${launcher[@]}" >/dev/null
cmake --build "$out" -j "$(nproc)"
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
"$out/tinyseek_kernel_tests" --gtest_brief=1
"$out/tinyseek_schedule_tests" --gtest_brief=1
echo "sanitize: kernel and schedule tests passed under AddressSanitizer + UBSan"
