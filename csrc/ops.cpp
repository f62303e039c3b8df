// dlunits — every op's schema, in one place.
//
// Kernels are registered per backend in csrc/cpu/*.cpp and csrc/cuda/*.cu
// (TORCH_LIBRARY_IMPL); fake kernels and autograd are registered from Python
// (dlunits/ops.py). The Python module dlunits._C exposes the shared shape checks
// of shape_checks.h so that the fake kernels validate exactly as the real ones.
//
// Conventions:
//   padding is always [top, bottom, left, right], so that padding='same' with an
//   even kernel needs no copy of the input;
//   every backward op is differentiable itself (dlunits/ops.py), so double
//   backward works.
#include <torch/extension.h>
#include <torch/library.h>

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

std::vector<int64_t> linear_output_size(const at::Tensor& input, const at::Tensor& weight,
                                        const std::optional<at::Tensor>& bias, const std::string& activation) {
  return dlunits::check_linear(input, weight, bias, activation).output_sizes();
}

void check_linear_activation_backward(const at::Tensor& grad_output, const at::Tensor& output,
                                      const std::string& activation) {
  dlunits::check_linear_activation_backward(grad_output, output, activation);
}

std::vector<int64_t> linear_backward_input_size(const at::Tensor& grad_output, const at::Tensor& weight) {
  return dlunits::check_linear_backward_input(grad_output, weight).input_sizes();
}

std::vector<int64_t> linear_backward_weight_size(const at::Tensor& grad_output, const at::Tensor& input) {
  const auto g = dlunits::check_linear_backward_weight(grad_output, input);
  return {g.out_features, g.in_features};
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
