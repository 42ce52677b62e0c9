// C++ entry point of torch.ops.tinyseek.swiglu: h = silu(gate) * up, fused (kernel contract:
// kernels/swiglu.h), differentiable in gate and up through tinyseek.swiglu_bwd.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace ts::ops {

// gate and up: the same shape [..., F], dtype and device. Each may be a strided view whose rows
// are contiguous (the two halves of a [R, 2F] buffer); the result is contiguous, shaped like gate.
at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up);

// silu(gate) * up of gate_up [..., 2F] = [gate | up] along the last dim: [..., F], contiguous.
// Its gradient is one contiguous [..., 2F] tensor.
at::Tensor swiglu_packed(const at::Tensor& gate_up);

// Shared checks of every backend: gate and up alike; the backward's grad_out too.
void check_swiglu_args(const char* op, const at::Tensor& gate, const at::Tensor& up);
void check_swiglu_bwd_args(const at::Tensor& grad_out, const at::Tensor& gate, const at::Tensor& up);
void check_swiglu_packed_args(const char* op, const at::Tensor& gate_up);
void check_swiglu_packed_bwd_args(const at::Tensor& grad_out, const at::Tensor& gate_up);
// gate_up's leading sizes with its last dim halved: the shape of the result.
std::vector<c10::SymInt> swiglu_packed_shape(const at::Tensor& gate_up);

// x as rows of width x.size(-1) with one row stride: x itself when its rows are evenly spaced
// and each contiguous (contiguous, or 2-D with unit column stride), else a contiguous copy.
struct Rows {
  at::Tensor t;
  int64_t ld = 0;
};
Rows as_rows(const at::Tensor& x);

}  // namespace ts::ops
