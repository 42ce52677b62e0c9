// ProcessGroupNCCL for GPU runs (compiled only when CUDA is on; the symbols live in
// libtorch_cuda.so, nccl.h comes with the CUDA toolkit).
#include <c10/cuda/CUDAFunctions.h>

#include "csrc/parallel/process_group.h"

#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

namespace ts::parallel::detail {

bool nccl_available() { return true; }

c10::intrusive_ptr<c10d::Backend> make_nccl(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                            std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
}

void set_cuda_device(int index) { c10::cuda::set_device(static_cast<c10::DeviceIndex>(index)); }

}  // namespace ts::parallel::detail
