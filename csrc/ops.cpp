// dlunits — every op's schema, in one place.
//
// Kernels are registered per backend in csrc/cpu/*.cpp and csrc/cuda/*.cu
// (TORCH_LIBRARY_IMPL), the forward ops' autocast kernels in csrc/autocast.cpp;
// fake kernels and autograd are registered from Python (dlunits/ops.py), except the
// recurrent units' autograd, which is C++ (csrc/recurrent_autograd.cpp: a cell is called
// once per time step, and its fixed cost per call matters). The Python module dlunits._C
// exposes the shared shape checks of shape_checks.h so that the fake kernels validate
// exactly as the real ones.
//
// Conventions:
//   padding is always [top, bottom, left, right], so that padding='same' with an
//   even kernel needs no copy of the input;
//   every backward op is differentiable itself (dlunits/ops.py), so double
//   backward works.
#include <torch/extension.h>
#include <torch/library.h>

#include "recurrent_checks.h"
#include "linear_checks.h"
#include "shape_checks.h"

TORCH_LIBRARY(dlunits, m) {
  // y[n, o] = bias[o] + Σ_{c in group(o), kh, kw} weight[o, c, kh, kw] · x[n, c, oh·s - pad + kh·d, ow·s - pad + kw·d]
  m.def("conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[4] padding, int[2] dilation, "
        "int groups) -> Tensor");
  m.def("conv2d_backward_input(Tensor grad_output, Tensor weight, SymInt[4] input_size, int[2] stride, "
        "int[4] padding, int[2] dilation, int groups) -> Tensor");
  m.def("conv2d_backward_weight(Tensor grad_output, Tensor input, SymInt[4] weight_size, int[2] stride, "
        "int[4] padding, int[2] dilation, int groups) -> Tensor");
  m.def("conv2d_backward_bias(Tensor grad_output) -> Tensor");
  // Conv2d's padding_mode: mode is 'reflect', 'replicate' or 'circular'.
  m.def("pad2d(Tensor input, int[4] padding, str mode) -> Tensor");
  m.def("pad2d_backward(Tensor grad_output, int[4] padding, str mode) -> Tensor");

  // 2-D pooling of (N, C, H, W) or (C, H, W) input, torch's windows and rules (csrc/pool2d_windows.h).
  // y[n, c, oh, ow] = max of x[n, c, oh·s - pad + kh·d, ow·s - pad + kw·d] over the taps inside the input;
  // indices are torch's: ih·W + iw of each max, so max_unpool2d takes them.
  m.def("max_pool2d(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, int[2] dilation, "
        "bool ceil_mode) -> Tensor");
  m.def("max_pool2d_with_indices(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, "
        "int[2] dilation, bool ceil_mode) -> (Tensor, Tensor)");
  m.def("max_pool2d_backward(Tensor grad_output, Tensor input, int[2] kernel_size, int[2] stride, "
        "int[2] padding, int[2] dilation, bool ceil_mode) -> Tensor");
  // y = Σ x over the window / divisor: divisor_override, else the window's size with padding
  // (count_include_pad), else the number of its taps inside the input.
  m.def("avg_pool2d(Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, bool ceil_mode, "
        "bool count_include_pad, int? divisor_override) -> Tensor");
  m.def("avg_pool2d_backward(Tensor grad_output, SymInt[] input_size, int[2] kernel_size, int[2] stride, "
        "int[2] padding, bool ceil_mode, bool count_include_pad, int? divisor_override) -> Tensor");
  // Adaptive windows: output o pools [floor(o·in/out), ceil((o+1)·in/out)) along each axis.
  m.def("adaptive_max_pool2d(Tensor input, int[2] output_size) -> Tensor");
  m.def("adaptive_max_pool2d_with_indices(Tensor input, int[2] output_size) -> (Tensor, Tensor)");
  m.def("adaptive_max_pool2d_backward(Tensor grad_output, Tensor input) -> Tensor");
  m.def("adaptive_avg_pool2d(Tensor input, int[2] output_size) -> Tensor");
  m.def("adaptive_avg_pool2d_backward(Tensor grad_output, SymInt[] input_size) -> Tensor");
  // Recurrent units (csrc/recurrent_driver.h). A layer op runs one layer and direction over a sequence in
  // the packed layout: input [N, I], the rows of step t at Σ_{s<t} batch_sizes[s], batch_sizes
  // non-increasing; a padded [T, B, I] sequence is batch_sizes = [B] * T, or [] (T = N / B, B = h0's rows:
  // no size in the arguments, so a dynamic batch or length stays symbolic when traced). Gates in torch's
  // order (i, f, g, o); gates and cells are the LSTM's saved activations; lstm_layer's save=False (no
  // backward will follow) returns them with no rows. grad_bias is the gradient of bias_ih and of bias_hh
  // ([0] without a bias), grad_weight_hr is [0] without a projection. A backward op's output_mask, as
  // ATen's, says which gradients to compute: (the input's, the weights' and biases'); the others come
  // back with no rows.
  // The backward ops have no derivative.
  m.def("rnn_cell(Tensor input, Tensor hx, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, Tensor? bias_hh, "
        "str nonlinearity) -> Tensor");
  m.def("rnn_cell_backward(Tensor grad_hy, Tensor input, Tensor hx, Tensor weight_ih, Tensor weight_hh, Tensor hy, "
        "str nonlinearity, bool has_bias, bool[2] output_mask=[True, True]) -> (Tensor grad_input, Tensor grad_hx, "
        "Tensor grad_weight_ih, Tensor grad_weight_hh, Tensor grad_bias)");
  m.def("lstm_cell(Tensor input, Tensor hx, Tensor cx, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, "
        "Tensor? bias_hh) -> (Tensor hy, Tensor cy, Tensor gates, Tensor cells)");
  m.def("lstm_cell_backward(Tensor grad_hy, Tensor grad_cy, Tensor input, Tensor hx, Tensor cx, Tensor weight_ih, "
        "Tensor weight_hh, Tensor cy, Tensor gates, bool has_bias, bool[2] output_mask=[True, True]) -> "
        "(Tensor grad_input, Tensor grad_hx, Tensor grad_cx, Tensor grad_weight_ih, Tensor grad_weight_hh, "
        "Tensor grad_bias)");
  m.def("rnn_layer(Tensor input, Tensor h0, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, Tensor? bias_hh, "
        "int[] batch_sizes, bool reverse, str nonlinearity) -> (Tensor output, Tensor h_n)");
  m.def("rnn_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor input, Tensor h0, Tensor weight_ih, "
        "Tensor weight_hh, Tensor output, int[] batch_sizes, bool reverse, str nonlinearity, bool has_bias, "
        "bool[2] output_mask=[True, True]) -> (Tensor grad_input, Tensor grad_h0, Tensor grad_weight_ih, "
        "Tensor grad_weight_hh, Tensor grad_bias)");
  m.def("lstm_layer(Tensor input, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, "
        "Tensor? bias_hh, Tensor? weight_hr, int[] batch_sizes, bool reverse, bool save=True) -> "
        "(Tensor output, Tensor h_n, Tensor c_n, Tensor gates, Tensor cells)");
  m.def("lstm_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor input, Tensor h0, "
        "Tensor c0, Tensor weight_ih, Tensor weight_hh, Tensor? weight_hr, Tensor output, Tensor gates, "
        "Tensor cells, int[] batch_sizes, bool reverse, bool has_bias, bool[2] output_mask=[True, True]) -> "
        "(Tensor grad_input, Tensor grad_h0, Tensor grad_c0, Tensor grad_weight_ih, Tensor grad_weight_hh, "
        "Tensor grad_bias, Tensor grad_weight_hr)");
  // The dense unit: y[*, o] = act(bias[o] + Σ_i input[*, i] · weight[o, i]), act one of
  // 'none', 'relu', 'sigmoid', 'tanh' (the fused epilogue).
  m.def("linear(Tensor input, Tensor weight, Tensor? bias, str activation=\"none\") -> Tensor");
  // grad_output · act'(output): the epilogue's backward, from the forward's output.
  m.def("linear_activation_backward(Tensor grad_output, Tensor output, str activation) -> Tensor");
  m.def("linear_backward_input(Tensor grad_output, Tensor weight) -> Tensor");
  m.def("linear_backward_weight(Tensor grad_output, Tensor input) -> Tensor");
  m.def("linear_backward_bias(Tensor grad_output) -> Tensor");
}

namespace {

std::vector<int64_t> conv2d_output_size(const at::Tensor& input, const at::Tensor& weight,
                                        const std::optional<at::Tensor>& bias, std::vector<int64_t> stride,
                                        std::vector<int64_t> padding, std::vector<int64_t> dilation,
                                        int64_t groups) {
  return dlunits::check_conv2d(input, weight, bias, stride, padding, dilation, groups).output_sizes();
}

bool conv2d_output_channels_last(const at::Tensor& input, const at::Tensor& weight) {
  return dlunits::conv2d_output_memory_format(input, weight) == at::MemoryFormat::ChannelsLast;
}

bool suggests_channels_last(const at::Tensor& t) {
  return t.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
}

void check_conv2d_backward_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                 std::vector<int64_t> input_size, std::vector<int64_t> stride,
                                 std::vector<int64_t> padding, std::vector<int64_t> dilation, int64_t groups) {
  dlunits::check_conv2d_backward_input(grad_output, weight, c10::fromIntArrayRefSlow(input_size), stride,
                                       padding, dilation, groups);
}

void check_conv2d_backward_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                  std::vector<int64_t> weight_size, std::vector<int64_t> stride,
                                  std::vector<int64_t> padding, std::vector<int64_t> dilation, int64_t groups) {
  dlunits::check_conv2d_backward_weight(grad_output, input, c10::fromIntArrayRefSlow(weight_size), stride,
                                        padding, dilation, groups);
}

void check_conv2d_backward_bias(const at::Tensor& grad_output) {
  dlunits::check_conv2d_backward_bias(grad_output);
}

bool pad2d_channels_last(const at::Tensor& t, const std::string& mode) {
  return dlunits::pad2d_memory_format(t, mode) == at::MemoryFormat::ChannelsLast;
}

std::vector<int64_t> pad2d_output_size(const at::Tensor& input, std::vector<int64_t> padding,
                                       const std::string& mode) {
  const auto g = dlunits::check_pad2d(input, padding, mode);
  return dlunits::pad2d_output_sizes(dlunits::concrete_sizes(input), g);
}

std::vector<int64_t> pad2d_backward_size(const at::Tensor& grad_output, std::vector<int64_t> padding,
                                         const std::string& mode) {
  const auto g = dlunits::check_pad2d_backward(grad_output, padding, mode);
  return dlunits::pad2d_input_sizes(grad_output, g);
}

// The pooling checks, as the fake kernels call them: each returns its op's result size.
using Sizes = std::vector<int64_t>;

Sizes max_pool2d_output_size(const at::Tensor& input, Sizes kernel_size, Sizes stride, Sizes padding,
                             Sizes dilation, bool ceil_mode) {
  return dlunits::check_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode).output_sizes();
}

Sizes avg_pool2d_output_size(const at::Tensor& input, Sizes kernel_size, Sizes stride, Sizes padding, bool ceil_mode,
                             std::optional<int64_t> divisor_override) {
  return dlunits::check_avg_pool2d(input, kernel_size, stride, padding, ceil_mode, divisor_override).output_sizes();
}

Sizes adaptive_pool2d_output_size(const at::Tensor& input, Sizes output_size, bool max) {
  return (max ? dlunits::check_adaptive_max_pool2d(input, output_size)
              : dlunits::check_adaptive_avg_pool2d(input, output_size)).output_sizes();
}

Sizes max_pool2d_backward_size(const at::Tensor& grad_output, const at::Tensor& input, Sizes kernel_size,
                               Sizes stride, Sizes padding, Sizes dilation, bool ceil_mode) {
  return dlunits::check_max_pool2d_backward(grad_output, input, kernel_size, stride, padding, dilation, ceil_mode)
      .input_sizes();
}

Sizes adaptive_max_pool2d_backward_size(const at::Tensor& grad_output, const at::Tensor& input) {
  return dlunits::check_adaptive_max_pool2d_backward(grad_output, input).input_sizes();
}

Sizes avg_pool2d_backward_size(const at::Tensor& grad_output, Sizes input_size, Sizes kernel_size, Sizes stride,
                               Sizes padding, bool ceil_mode, std::optional<int64_t> divisor_override) {
  return dlunits::check_avg_pool2d_backward(grad_output, input_size, kernel_size, stride, padding, ceil_mode,
                                            divisor_override).input_sizes();
}

Sizes adaptive_avg_pool2d_backward_size(const at::Tensor& grad_output, Sizes input_size) {
  return dlunits::check_adaptive_avg_pool2d_backward(grad_output, input_size).input_sizes();
}

// One axis of pooling windows as the kernels see it (pool2d_windows.h), for tests: the taps of every
// output, and for every input position the outputs that PoolAxis::covering and hits() say contain it
// (the CUDA backward gathers over those).
std::pair<std::vector<std::vector<int64_t>>, std::vector<std::vector<int64_t>>> pool_axis_windows(
    int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation, bool adaptive) {
  const dlunits::PoolAxis<int64_t> axis{in, out, kernel, stride, pad, dilation, adaptive};
  std::vector<std::vector<int64_t>> taps(out), covering(in);
  for (int64_t o = 0; o < out; ++o) {
    const auto t = axis.taps(o);
    for (int64_t j = 0; j < t.count; ++j) taps[o].push_back(t.first + j * t.step);
  }
  for (int64_t i = 0; i < in; ++i) {
    int64_t first, last;
    axis.covering(i, first, last);
    for (int64_t o = first; o <= last; ++o) {
      if (axis.hits(o, i)) covering[i].push_back(o);
    }
  }
  return {taps, covering};
}

// The recurrent ops' checks for their fake kernels. A padded sequence's batch and length may be symbolic
// there (recurrent_checks.h), so they return nothing: a fake kernel's sizes come from its arguments'.
void check_recurrent_cell(const at::Tensor& input, const at::Tensor& hx, const std::optional<at::Tensor>& cx,
                          const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                          const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
                          const std::string& op) {
  const bool lstm = cx.has_value();
  dlunits::check_recurrent_cell(op.c_str(), lstm ? 4 : 1, input, hx, lstm ? &*cx : nullptr, weight_ih, weight_hh,
                                bias_ih, bias_hh);
}

void check_recurrent_layer(const at::Tensor& input, const at::Tensor& h0, const std::optional<at::Tensor>& c0,
                           const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                           const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
                           const std::optional<at::Tensor>& weight_hr, std::vector<int64_t> batch_sizes,
                           const std::string& op) {
  const bool lstm = c0.has_value();
  dlunits::check_recurrent_layer(op.c_str(), lstm ? 4 : 1, input, h0, lstm ? &*c0 : nullptr, weight_ih, weight_hh,
                                 bias_ih, bias_hh, weight_hr, batch_sizes);
}

void check_rnn_activation(const std::string& nonlinearity, const std::string& op) {
  dlunits::rnn_activation_from_string(op.c_str(), nonlinearity);
}

// A backward op's tensor argument: same dtype and device as input, and the expected size.
void check_recurrent_backward_tensor(const at::Tensor& input, const at::Tensor& t, c10::SymIntArrayRef size,
                                     const std::string& name, const std::string& op) {
  dlunits::check_backward_tensor(op.c_str(), input, name.c_str(), t, size);
}

// The linear ops' checks for their fake kernels: the result's sizes, symbolic where the arguments' are.
std::vector<c10::SymInt> linear_output_size(const at::Tensor& input, const at::Tensor& weight,
                                            const std::optional<at::Tensor>& bias, const std::string& activation) {
  return dlunits::check_linear_arguments(input, weight, bias, activation);
}

void check_linear_activation_backward(const at::Tensor& grad_output, const at::Tensor& output,
                                      const std::string& activation) {
  dlunits::check_linear_activation_backward(grad_output, output, activation);
}

std::vector<c10::SymInt> linear_backward_input_size(const at::Tensor& grad_output, const at::Tensor& weight) {
  return dlunits::check_linear_backward_input_arguments(grad_output, weight);
}

std::vector<int64_t> linear_backward_weight_size(const at::Tensor& grad_output, const at::Tensor& input) {
  return dlunits::check_linear_backward_weight_arguments(grad_output, input);
}

int64_t linear_backward_bias_size(const at::Tensor& grad_output) {
  return dlunits::check_linear_backward_bias(grad_output);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "dlunits' compiled ops (registered under torch.ops.dlunits) and their shared shape checks";
  m.def("conv2d_output_size", &conv2d_output_size, "Checks conv2d's arguments; returns the output size");
  m.def("conv2d_output_channels_last", &conv2d_output_channels_last,
        "Whether conv2d's output is channels_last for these input and weight");
  m.def("suggests_channels_last", &suggests_channels_last,
        "Whether torch would lay out a result like this tensor as channels_last");
  m.def("check_conv2d_backward_input", &check_conv2d_backward_input);
  m.def("check_conv2d_backward_weight", &check_conv2d_backward_weight);
  m.def("check_conv2d_backward_bias", &check_conv2d_backward_bias);
  m.def("pad2d_channels_last", &pad2d_channels_last,
        "Whether pad2d (or pad2d_backward) gives a channels_last result for this tensor and mode");
  m.def("pad2d_output_size", &pad2d_output_size, "Checks pad2d's arguments; returns the output size");
  m.def("pad2d_backward_size", &pad2d_backward_size, "Checks pad2d_backward's arguments; returns the input size");
  m.def("max_pool2d_output_size", &max_pool2d_output_size, "Checks max_pool2d's arguments; returns the output size");
  m.def("avg_pool2d_output_size", &avg_pool2d_output_size, "Checks avg_pool2d's arguments; returns the output size");
  m.def("adaptive_pool2d_output_size", &adaptive_pool2d_output_size,
        "Checks adaptive_max_pool2d's (max=True) or adaptive_avg_pool2d's arguments; returns the output size");
  m.def("max_pool2d_backward_size", &max_pool2d_backward_size,
        "Checks max_pool2d_backward's arguments; returns the input size");
  m.def("adaptive_max_pool2d_backward_size", &adaptive_max_pool2d_backward_size,
        "Checks adaptive_max_pool2d_backward's arguments; returns the input size");
  m.def("avg_pool2d_backward_size", &avg_pool2d_backward_size,
        "Checks avg_pool2d_backward's arguments; returns the input size");
  m.def("adaptive_avg_pool2d_backward_size", &adaptive_avg_pool2d_backward_size,
        "Checks adaptive_avg_pool2d_backward's arguments; returns the input size");
  m.def("pool_axis_windows", &pool_axis_windows,
        "For tests: the taps of each output along one pooling axis, and the outputs covering each input");
  m.def("check_recurrent_cell", &check_recurrent_cell,
        "Checks rnn_cell's (cx=None) or lstm_cell's arguments");
  m.def("check_recurrent_layer", &check_recurrent_layer,
        "Checks rnn_layer's (c0=None) or lstm_layer's arguments");
  m.def("check_rnn_activation", &check_rnn_activation, "Checks an RNN's nonlinearity ('tanh' or 'relu')");
  m.def("check_recurrent_backward_tensor", &check_recurrent_backward_tensor,
        "Checks a recurrent backward op's tensor argument against input and an expected size");
  m.def("linear_output_size", &linear_output_size, "Checks linear's arguments; returns the output size");
  m.def("check_linear_activation_backward", &check_linear_activation_backward);
  m.def("linear_backward_input_size", &linear_backward_input_size,
        "Checks linear_backward_input's arguments; returns the input gradient's size");
  m.def("linear_backward_weight_size", &linear_backward_weight_size,
        "Checks linear_backward_weight's arguments; returns the weight gradient's size");
  m.def("linear_backward_bias_size", &linear_backward_bias_size,
        "Checks linear_backward_bias's argument; returns out_features");
  m.def("cuda_compiled", []() {
#ifdef DLUNITS_WITH_CUDA
    return true;
#else
    return false;
#endif
  }, "Whether the CUDA kernels were compiled into this build");
}
