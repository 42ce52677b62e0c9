// Meta and CPU registration of the backend kernels (the list: backend_kernels.h).
#include "csrc/ops/backend_kernels.h"

TORCH_LIBRARY_IMPL(tinyseek, Meta, m) { ts::ops::register_kernels<ts::ops::MetaKernels>(m); }
TORCH_LIBRARY_IMPL(tinyseek, CPU, m) { ts::ops::register_kernels<ts::ops::CpuKernels>(m); }
