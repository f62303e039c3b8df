// dlunits — reflect / replicate / circular padding on CUDA (Conv2d's padding_mode).
//
// forward   y[p, oh, ow] = x[p, src_h(oh), src_w(ow)]: one thread per output element.
// backward  dx[p, ih, iw] = Σ dy[p, oh, ow] over the padded positions that read
//           (ih, iw) (pad2d_index.h): one thread per input element, a gather,
//           so no atomics and a fixed summation order.
// Cost: no FLOPs to speak of; bytes: x and y once each. Indices are int64.
// Build: part of dlunits._C (setup.py with DLUNITS_CUDA=1); run: make gpu-check.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "../pad2d_index.h"
#include "../shape_checks.h"
#include "launch.cuh"

namespace dlunits {
namespace {


template <typename scalar_t>
__global__ void pad2d_forward_kernel(const scalar_t* x, scalar_t* y, const Pad2dGeometry g, int64_t numel) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < numel;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t ow = i % g.out_w, oh = (i / g.out_w) % g.out_h, plane = i / (g.out_w * g.out_h);
    const int64_t ih = pad_source_index(oh, g.pad_top, g.in_h, g.mode);
    const int64_t iw = pad_source_index(ow, g.pad_left, g.in_w, g.mode);
    y[i] = x[(plane * g.in_h + ih) * g.in_w + iw];
  }
}

template <typename scalar_t>
__global__ void pad2d_backward_kernel(const scalar_t* dy, scalar_t* dx, const Pad2dGeometry g, int64_t numel) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < numel;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t iw = i % g.in_w, ih = (i / g.in_w) % g.in_h, plane = i / (g.in_w * g.in_h);
    const PadReaderRanges rows = pad_reader_ranges(ih, g.pad_top, g.pad_bottom, g.in_h, g.mode);
    const PadReaderRanges cols = pad_reader_ranges(iw, g.pad_left, g.pad_right, g.in_w, g.mode);
    const scalar_t* plane_dy = dy + plane * g.out_h * g.out_w;
    acc_t sum = 0;
    for (int a = 0; a < rows.count; ++a)
      for (int64_t oh = rows.begin[a]; oh < rows.end[a]; ++oh)
        for (int b = 0; b < cols.count; ++b)
          for (int64_t ow = cols.begin[b]; ow < cols.end[b]; ++ow)
            sum += static_cast<acc_t>(plane_dy[oh * g.out_w + ow]);
    dx[i] = static_cast<scalar_t>(sum);
  }
}

at::Tensor pad2d_cuda(const at::Tensor& input, at::IntArrayRef padding, c10::string_view mode) {
  const Pad2dGeometry g = check_pad2d(input, padding, mode);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const at::Tensor x = input.contiguous();
  at::Tensor y = at::empty(pad2d_output_sizes(x.sizes(), g), x.options());
  if (y.numel() == 0) return y.contiguous(pad2d_memory_format(input, mode));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dlunits_pad2d_cuda", [&] {
    launch_elementwise(pad2d_forward_kernel<scalar_t>, y.numel(), x.const_data_ptr<scalar_t>(),
                       y.mutable_data_ptr<scalar_t>(), g);
  });
  return y.contiguous(pad2d_memory_format(input, mode));
}

at::Tensor pad2d_backward_cuda(const at::Tensor& grad_output, at::IntArrayRef padding, c10::string_view mode) {
  const Pad2dGeometry g = check_pad2d_backward(grad_output, padding, mode);
  const c10::cuda::CUDAGuard device_guard(grad_output.device());
  const at::Tensor dy = grad_output.contiguous();
  at::Tensor dx = at::empty(pad2d_input_sizes(dy, g), dy.options());
  if (dx.numel() == 0) return dx.contiguous(pad2d_memory_format(grad_output, mode));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "dlunits_pad2d_backward_cuda", [&] {
    launch_elementwise(pad2d_backward_kernel<scalar_t>, dx.numel(), dy.const_data_ptr<scalar_t>(),
                       dx.mutable_data_ptr<scalar_t>(), g);
  });
  return dx.contiguous(pad2d_memory_format(grad_output, mode));
}

}  // namespace
}  // namespace dlunits

TORCH_LIBRARY_IMPL(dlunits, CUDA, m) {
  m.impl("pad2d", &dlunits::pad2d_cuda);
  m.impl("pad2d_backward", &dlunits::pad2d_backward_cuda);
}
