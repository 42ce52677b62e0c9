// Shared helpers for the torch-free kernels in kernels/.
//
// Kernels take a plain Params struct whose pointers carry shape comments; they assume their
// inputs were validated by the op layer (csrc/ops) and check only internal invariants.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ts::kern {

// Internal invariant (not user input): a failure here is a bug in tinyseek.
#define TS_KERNEL_ASSERT(cond)                                                                            \
  do {                                                                                                    \
    if (!(cond))                                                                                          \
      throw std::logic_error(std::string("tinyseek internal error: ") + #cond + " at " + __FILE__ + ":" + \
                             std::to_string(__LINE__));                                                   \
  } while (0)

inline int num_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Runs f(i) for i in [0, n), spread over threads; f must be safe to run concurrently for
// different i. Work below `grain` items stays on the calling thread.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
#if defined(_OPENMP)
  if (n > grain && num_threads() > 1) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) f(i);
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace ts::kern
