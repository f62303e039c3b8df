// dlunits — argument checks of the dense unit (linear), shared by the CPU, CUDA
// and fake kernels (the last through dlunits._C, see ops.cpp), so that a bad call
// gets the same message whichever runs it. torch's wording where torch has one.
// The leading (batch) dimensions may be symbolic in a fake kernel (shape_checks.h):
// the *_arguments checks compare them and return the result's symbolic sizes; the
// geometry of a real call is built after them from concrete sizes.
#pragma once

#include <c10/macros/Macros.h>

#include <type_traits>

#include "shape_checks.h"

namespace dlunits {

// The fused epilogue that follows the matrix product: y = act(x·Wᵀ + b).
enum class Activation : int { None = 0, ReLU = 1, Sigmoid = 2, Tanh = 3 };

inline Activation activation_from_string(c10::string_view name) {
  if (name == "none") return Activation::None;
  if (name == "relu") return Activation::ReLU;
  if (name == "sigmoid") return Activation::Sigmoid;
  if (name == "tanh") return Activation::Tanh;
  TORCH_CHECK(false, "dlunits.linear: expected activation to be one of 'none', 'relu', 'sigmoid', 'tanh', but got '",
              std::string(name), "'");
}

// dy · act'(z) written through y = act(z), in torch's order of operations; the backward
// epilogue of both backends (acc_t: float for half types).
template <Activation act, typename acc_t>
C10_HOST_DEVICE inline acc_t activation_grad(acc_t dy, acc_t y) {
  if constexpr (act == Activation::ReLU) return y > acc_t(0) ? dy : acc_t(0);
  if constexpr (act == Activation::Sigmoid) return dy * (acc_t(1) - y) * y;
  if constexpr (act == Activation::Tanh) return dy * (acc_t(1) - y * y);
  return dy;
}

// Calls f(std::integral_constant<Activation, act>{}) for the activation named at run time,
// so that each epilogue loop is compiled once per activation with no branch inside.
template <typename F>
void dispatch_activation(Activation act, F&& f) {
  switch (act) {
    case Activation::None: return f(std::integral_constant<Activation, Activation::None>{});
    case Activation::ReLU: return f(std::integral_constant<Activation, Activation::ReLU>{});
    case Activation::Sigmoid: return f(std::integral_constant<Activation, Activation::Sigmoid>{});
    case Activation::Tanh: return f(std::integral_constant<Activation, Activation::Tanh>{});
  }
}

// A linear problem seen as one matrix product: the input's leading dimensions
// flattened into `rows`, [rows, in_features] · [in_features, out_features].
struct LinearGeometry {
  int64_t rows, in_features, out_features;
  std::vector<int64_t> leading;  // the input's sizes but the last

  std::vector<int64_t> output_sizes() const {
    auto sizes = leading;
    sizes.push_back(out_features);
    return sizes;
  }
  std::vector<int64_t> input_sizes() const {
    auto sizes = leading;
    sizes.push_back(in_features);
    return sizes;
  }
};

// The geometry of a real call: t's leading sizes (t the input or grad_output, already checked).
inline LinearGeometry linear_geometry(const at::Tensor& t, int64_t in_features, int64_t out_features) {
  LinearGeometry g;
  const auto sizes = t.sizes();
  g.leading.assign(sizes.begin(), sizes.end() - 1);
  g.rows = 1;
  for (int64_t s : g.leading) g.rows *= s;
  g.in_features = in_features;
  g.out_features = out_features;
  return g;
}

// The leading sizes (all but the last) of t, symbolic where t's are (shape_checks.h): the checks below
// read them only to compare them and to give a fake kernel its result's size.
inline std::vector<c10::SymInt> leading_sym_sizes(const at::Tensor& t) {
  const auto sizes = t.sym_sizes();
  return std::vector<c10::SymInt>(sizes.begin(), sizes.end() - 1);
}

inline c10::SymInt sym_product(c10::SymIntArrayRef sizes) {
  c10::SymInt p = 1;
  for (const auto& s : sizes) p = p * s;
  return p;
}

// input [*, in_features] (at least 1-D), weight [out_features, in_features],
// bias [out_features] or none. Returns the output's sizes, [*, out_features].
inline std::vector<c10::SymInt> check_linear_arguments(const at::Tensor& input, const at::Tensor& weight,
                                                       const std::optional<at::Tensor>& bias,
                                                       c10::string_view activation) {
  const char* op = "dlunits.linear";
  activation_from_string(activation);
  check_floating(op, "input", input);
  check_same_dtype_and_device(op, "input", input, "weight", weight);
  const auto w = concrete_sizes(weight);
  TORCH_CHECK(input.dim() >= 1, "both arguments to linear need to be at least 1D, but they are ", input.dim(),
              "D and ", w.size(), "D");
  TORCH_CHECK(w.size() == 2, op, ": expected weight to be 2-D (out_features, in_features), but got ", w.size(),
              "-D weight of size ", at::IntArrayRef(w));
  auto sizes = leading_sym_sizes(input);
  const int64_t in_features = input.sym_size(-1).guard_int(__FILE__, __LINE__);
  TORCH_CHECK(w[1] == in_features, "mat1 and mat2 shapes cannot be multiplied (", sym_product(sizes), "x",
              in_features, " and ", w[1], "x", w[0], ")");
  if (bias.has_value() && bias->defined()) {
    check_same_dtype_and_device(op, "input", input, "bias", *bias);
    const auto b = concrete_sizes(*bias);
    TORCH_CHECK(b.size() == 1 && b[0] == w[0], "Given weight of size ", at::IntArrayRef(w),
                ", expected bias to be 1-dimensional with ", w[0], " elements, but got bias of size ",
                at::IntArrayRef(b), " instead");
  }
  sizes.push_back(w[0]);
  return sizes;
}

inline LinearGeometry check_linear(const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, c10::string_view activation) {
  check_linear_arguments(input, weight, bias, activation);
  return linear_geometry(input, weight.size(1), weight.size(0));
}

// grad_output [*, out_features] and the forward's output (same size): the epilogue's backward.
inline void check_linear_activation_backward(const at::Tensor& grad_output, const at::Tensor& output,
                                             c10::string_view activation) {
  const char* op = "dlunits.linear_activation_backward";
  activation_from_string(activation);
  check_floating(op, "grad_output", grad_output);
  check_same_dtype_and_device(op, "grad_output", grad_output, "output", output);
  TORCH_CHECK(sym_sizes_equal(grad_output.sym_sizes(), output.sym_sizes()), op,
              ": expected grad_output and output to have the same size, but got grad_output of size ",
              grad_output.sym_sizes(), " and output of size ", output.sym_sizes());
}

// grad_output [*, out_features] · weight [out_features, in_features] -> [*, in_features], the sizes returned.
inline std::vector<c10::SymInt> check_linear_backward_input_arguments(const at::Tensor& grad_output,
                                                                      const at::Tensor& weight) {
  const char* op = "dlunits.linear_backward_input";
  check_floating(op, "grad_output", grad_output);
  check_same_dtype_and_device(op, "grad_output", grad_output, "weight", weight);
  const auto w = concrete_sizes(weight);
  TORCH_CHECK(grad_output.dim() >= 1 && w.size() == 2, op,
              ": expected grad_output of at least 1-D and a 2-D weight, but got grad_output of size ",
              grad_output.sym_sizes(), " and weight of size ", at::IntArrayRef(w));
  TORCH_CHECK(grad_output.sym_size(-1).guard_int(__FILE__, __LINE__) == w[0], op,
              ": expected grad_output's last dimension to be out_features=", w[0], " (weight of size ",
              at::IntArrayRef(w), "), but got grad_output of size ", grad_output.sym_sizes());
  auto sizes = leading_sym_sizes(grad_output);
  sizes.push_back(w[1]);
  return sizes;
}

inline LinearGeometry check_linear_backward_input(const at::Tensor& grad_output, const at::Tensor& weight) {
  check_linear_backward_input_arguments(grad_output, weight);
  return linear_geometry(grad_output, weight.size(1), weight.size(0));
}

// grad_output [*, out_features]ᵀ · input [*, in_features] -> [out_features, in_features], the sizes returned.
inline std::vector<int64_t> check_linear_backward_weight_arguments(const at::Tensor& grad_output,
                                                                   const at::Tensor& input) {
  const char* op = "dlunits.linear_backward_weight";
  check_floating(op, "grad_output", grad_output);
  check_same_dtype_and_device(op, "grad_output", grad_output, "input", input);
  TORCH_CHECK(grad_output.dim() >= 1 && grad_output.dim() == input.dim() &&
                  sym_sizes_equal(leading_sym_sizes(grad_output), leading_sym_sizes(input)),
              op, ": expected grad_output and input to agree in every dimension but the last, but got grad_output "
              "of size ", grad_output.sym_sizes(), " and input of size ", input.sym_sizes());
  return {grad_output.sym_size(-1).guard_int(__FILE__, __LINE__), input.sym_size(-1).guard_int(__FILE__, __LINE__)};
}

inline LinearGeometry check_linear_backward_weight(const at::Tensor& grad_output, const at::Tensor& input) {
  const auto sizes = check_linear_backward_weight_arguments(grad_output, input);
  return linear_geometry(grad_output, sizes[1], sizes[0]);
}

inline int64_t check_linear_backward_bias(const at::Tensor& grad_output) {
  const char* op = "dlunits.linear_backward_bias";
  check_floating(op, "grad_output", grad_output);
  TORCH_CHECK(grad_output.dim() >= 1, op, ": expected grad_output to be at least 1-D, but got ",
              grad_output.dim(), "-D");
  return grad_output.sym_size(-1).guard_int(__FILE__, __LINE__);
}

}  // namespace dlunits
