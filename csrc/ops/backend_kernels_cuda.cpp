// CUDA registration of the backend kernels (the list: backend_kernels.h).
#include "csrc/ops/backend_kernels.h"

TORCH_LIBRARY_IMPL(tinyseek, CUDA, m) { ts::ops::register_kernels<ts::ops::CudaKernels>(m); }
