// dlunits — the pooling ops, written once for every backend.
//
// Each op checks its arguments (shape_checks.h), lays its tensors out for the
// kernels and allocates its result in torch's memory format (that of the
// tensor pooled). A backend (csrc/cpu/pool2d.cpp, csrc/cuda/pool2d.cu) supplies
// only four kernels, which see 4-D tensors contiguous in NCHW or, when
// channels_last is set, in NHWC, and never an empty one:
//
//   Kernels::max_forward(x, y, indices, g, channels_last)    indices undefined unless kept
//   Kernels::max_backward(dy, x, dx, g, channels_last)       dx uninitialised
//   Kernels::avg_forward(x, y, g, divisor, channels_last)
//   Kernels::avg_backward(dy, dx, g, divisor, channels_last) dx uninitialised
//
// The max kernels recompute each window's argmax in the backward pass from the
// saved input instead of saving indices: that reads H·W elements of x where
// saved indices would cost 8 bytes per output, written and read back.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "shape_checks.h"

namespace dlunits {

// avg pooling divides each window's sum by: divisor_override when given (non-zero), else the
// window's extent including padding (count_include_pad), else the number of taps inside the input.
struct AvgDivisor {
  bool count_include_pad;
  int64_t override_value;  // 0: none

  static AvgDivisor from(bool count_include_pad, std::optional<int64_t> divisor_override) {
    return {count_include_pad, divisor_override.value_or(0)};
  }
};

namespace pool2d_detail {

inline bool is_channels_last(at::MemoryFormat format) { return format == at::MemoryFormat::ChannelsLast; }

// t as the 4-D tensor, contiguous in `format`, that the kernels read.
inline at::Tensor kernel_view(const at::Tensor& t, at::MemoryFormat format) {
  const at::Tensor t4 = t.dim() == 3 ? t.unsqueeze(0) : t;
  return t4.contiguous(format);
}

inline at::Tensor empty_result(at::IntArrayRef sizes, const at::Tensor& like, at::MemoryFormat format,
                               c10::ScalarType dtype) {
  return at::empty(sizes, like.options().dtype(dtype).memory_format(format));
}

inline at::Tensor as_4d(const at::Tensor& t) { return t.dim() == 3 ? t.unsqueeze(0) : t; }

inline bool empty_problem(const Pool2dGeometry& g) {
  return g.planes() == 0 || g.h.out == 0 || g.w.out == 0;
}

template <class Kernels>
std::tuple<at::Tensor, at::Tensor> max_pool(const at::Tensor& input, const Pool2dGeometry& g, bool keep_indices) {
  const auto format = pool2d_memory_format(input);
  at::Tensor output = empty_result(g.output_sizes(), input, format, input.scalar_type());
  at::Tensor indices;
  if (keep_indices) indices = empty_result(g.output_sizes(), input, format, at::kLong);
  if (!empty_problem(g)) {
    at::Tensor indices4 = keep_indices ? as_4d(indices) : at::Tensor();
    Kernels::max_forward(kernel_view(input, format), as_4d(output), indices4, g, is_channels_last(format));
  }
  return {output, indices};
}

template <class Kernels>
at::Tensor max_pool_backward(const at::Tensor& grad_output, const at::Tensor& input, const Pool2dGeometry& g) {
  const auto format = pool2d_memory_format(input);
  at::Tensor grad_input = empty_result(g.input_sizes(), input, format, input.scalar_type());
  if (grad_input.numel() == 0) return grad_input;
  if (empty_problem(g)) return grad_input.zero_();
  Kernels::max_backward(kernel_view(grad_output, format), kernel_view(input, format), as_4d(grad_input), g,
                        is_channels_last(format));
  return grad_input;
}

template <class Kernels>
at::Tensor avg_pool(const at::Tensor& input, const Pool2dGeometry& g, const AvgDivisor& divisor) {
  const auto format = pool2d_memory_format(input);
  at::Tensor output = empty_result(g.output_sizes(), input, format, input.scalar_type());
  if (!empty_problem(g)) {
    Kernels::avg_forward(kernel_view(input, format), as_4d(output), g, divisor, is_channels_last(format));
  }
  return output;
}

template <class Kernels>
at::Tensor avg_pool_backward(const at::Tensor& grad_output, const Pool2dGeometry& g, const AvgDivisor& divisor) {
  const auto format = pool2d_memory_format(grad_output);
  at::Tensor grad_input = empty_result(g.input_sizes(), grad_output, format, grad_output.scalar_type());
  if (grad_input.numel() == 0) return grad_input;
  if (empty_problem(g)) return grad_input.zero_();
  Kernels::avg_backward(kernel_view(grad_output, format), as_4d(grad_input), g, divisor, is_channels_last(format));
  return grad_input;
}

}  // namespace pool2d_detail

// Registers every pooling op of csrc/ops.cpp with Kernels as its backend's kernels.
template <class Kernels>
void register_pool2d_ops(torch::Library& m) {
  using namespace pool2d_detail;
  m.impl("max_pool2d", [](const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                          at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
    const auto g = check_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode);
    return std::get<0>(max_pool<Kernels>(input, g, false));
  });
  m.impl("max_pool2d_with_indices", [](const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                       at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
    const auto g = check_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode);
    return max_pool<Kernels>(input, g, true);
  });
  m.impl("max_pool2d_backward", [](const at::Tensor& grad_output, const at::Tensor& input,
                                   at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                   at::IntArrayRef dilation, bool ceil_mode) {
    const auto g = check_max_pool2d_backward(grad_output, input, kernel_size, stride, padding, dilation, ceil_mode);
    return max_pool_backward<Kernels>(grad_output, input, g);
  });
  m.impl("adaptive_max_pool2d", [](const at::Tensor& input, at::IntArrayRef output_size) {
    return std::get<0>(max_pool<Kernels>(input, check_adaptive_max_pool2d(input, output_size), false));
  });
  m.impl("adaptive_max_pool2d_with_indices", [](const at::Tensor& input, at::IntArrayRef output_size) {
    return max_pool<Kernels>(input, check_adaptive_max_pool2d(input, output_size), true);
  });
  m.impl("adaptive_max_pool2d_backward", [](const at::Tensor& grad_output, const at::Tensor& input) {
    return max_pool_backward<Kernels>(grad_output, input, check_adaptive_max_pool2d_backward(grad_output, input));
  });
  m.impl("avg_pool2d", [](const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                          at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                          std::optional<int64_t> divisor_override) {
    const auto g = check_avg_pool2d(input, kernel_size, stride, padding, ceil_mode, divisor_override);
    return avg_pool<Kernels>(input, g, AvgDivisor::from(count_include_pad, divisor_override));
  });
  m.impl("avg_pool2d_backward", [](const at::Tensor& grad_output, c10::SymIntArrayRef input_size,
                                   at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                   bool ceil_mode, bool count_include_pad, std::optional<int64_t> divisor_override) {
    const auto g = check_avg_pool2d_backward(grad_output, concrete_sizes(input_size), kernel_size, stride, padding,
                                             ceil_mode, divisor_override);
    return avg_pool_backward<Kernels>(grad_output, g, AvgDivisor::from(count_include_pad, divisor_override));
  });
  m.impl("adaptive_avg_pool2d", [](const at::Tensor& input, at::IntArrayRef output_size) {
    return avg_pool<Kernels>(input, check_adaptive_avg_pool2d(input, output_size), AvgDivisor{false, 0});
  });
  m.impl("adaptive_avg_pool2d_backward", [](const at::Tensor& grad_output, c10::SymIntArrayRef input_size) {
    const auto g = check_adaptive_avg_pool2d_backward(grad_output, concrete_sizes(input_size));
    return avg_pool_backward<Kernels>(grad_output, g, AvgDivisor{false, 0});
  });
}

}  // namespace dlunits
