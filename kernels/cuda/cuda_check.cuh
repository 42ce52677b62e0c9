// Error checking for the CUDA launchers in kernels/cuda. Launchers take a stream, check their
// shape assumptions, launch, and check the launch.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#define TS_CUDA_CHECK(expr)                                                                  \
  do {                                                                                       \
    cudaError_t ts_err_ = (expr);                                                            \
    if (ts_err_ != cudaSuccess)                                                              \
      throw std::runtime_error(std::string("CUDA error: ") + cudaGetErrorString(ts_err_) +   \
                               " in " #expr " at " __FILE__ ":" + std::to_string(__LINE__)); \
  } while (0)

#define TS_CUDA_CHECK_LAUNCH() TS_CUDA_CHECK(cudaGetLastError())
