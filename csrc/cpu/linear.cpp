// dlunits — the dense unit (linear) on the CPU: a matrix product, then our fused epilogue.
//
// With the input's leading dimensions flattened into M rows, K = in_features,
// N = out_features:
//   forward            z = x · Wᵀ                       [M, N]   at::mm_out (BLAS)
//                      y = act(z + b)                   [M, N]   epilogue, ours, in place, one pass
//   epilogue backward  gz = dy ⊙ act'(y)                [M, N]   ours, from the output alone:
//                      relu 1[y > 0], sigmoid y(1 - y), tanh 1 - y², none 1
//   backward input     dx = gz · W                      [M, K]   at::mm_out (BLAS)
//   backward weight    dW = gzᵀ · x                     [N, K]   at::mm_out (BLAS)
//   backward bias      db = Σ_rows gz                   [N]      ours
//
// The products go through at::mm_out, which the project allows for the dense unit:
// the product is BLAS's job, and doing it again by hand would only be slower. The
// bias, the activation and their backward, and the bias reduction are ours; in float32 the
// sigmoid and tanh are our own vectorised ones (vector_math.h; the C library's are scalar calls).
//
// Cost: each product 2·M·N·K FLOPs; the epilogue N·M adds plus an activation
// per element. Minimum bytes: forward x, W, b and y once each (the epilogue
// re-reads y once: it runs while y's rows are hot in cache only for small N);
// epilogue backward reads dy and y and writes gz.
//
// Threads: the epilogues split rows over at::parallel_for; the bias reduction
// splits columns, each thread owning whole columns and adding rows in order, so
// the result does not depend on the number of threads.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../linear_checks.h"
#include "vector_math.h"

namespace dlunits {
namespace {

// act(z), the reference (float64, ReLU and no activation): the C library's exp and tanh. ReLU keeps NaN and -0 as torch
// does (z < 0 is false for both).
template <Activation act, typename scalar_t>
inline scalar_t activate_reference(scalar_t z) {
  if constexpr (act == Activation::ReLU) return z < scalar_t(0) ? scalar_t(0) : z;
  if constexpr (act == Activation::Sigmoid) return scalar_t(1) / (scalar_t(1) + std::exp(-z));
  if constexpr (act == Activation::Tanh) return std::tanh(z);
  return z;
}

// float32 sigmoid and tanh: the vectorised math of vector_math.h.
using cpu::Floats;
using cpu::kLanes;

// row[o] = act(row[o] + b[o]) for o in [0, N), eight at a time; the last few through a
// zero-padded block, so that every element gets the same arithmetic. b may be null.
template <Activation act>
void activate_row_fast(float* row, const float* b, int64_t N) {
  auto apply = [&](float* out, const float* bias, int64_t count) {
    Floats z{}, add{};
    std::memcpy(&z, out, count * sizeof(float));
    if (bias != nullptr) std::memcpy(&add, bias, count * sizeof(float));
    z += add;
    z = act == Activation::Sigmoid ? cpu::sigmoid_fast(z) : cpu::tanh_fast(z);
    std::memcpy(out, &z, count * sizeof(float));
  };
  int64_t o = 0;
  for (; o + kLanes <= N; o += kLanes) apply(row + o, b != nullptr ? b + o : nullptr, kLanes);
  if (o < N) apply(row + o, b != nullptr ? b + o : nullptr, N - o);
}

// y[r, o] = act(y[r, o] + b[o]) over rows [0, M) of a contiguous [M, N] y; b may be null.
template <typename scalar_t, Activation act>
void forward_epilogue(scalar_t* y, const scalar_t* b, int64_t M, int64_t N) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, N));
  at::parallel_for(0, M, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      scalar_t* row = y + r * N;
      if constexpr (std::is_same_v<scalar_t, float> && (act == Activation::Sigmoid || act == Activation::Tanh)) {
        activate_row_fast<act>(row, b, N);
      } else if (b != nullptr) {
        for (int64_t o = 0; o < N; ++o) row[o] = activate_reference<act>(row[o] + b[o]);
      } else if constexpr (act != Activation::None) {
        for (int64_t o = 0; o < N; ++o) row[o] = activate_reference<act>(row[o]);
      }
    }
  });
}

// gz = dy ⊙ act'(y), element-wise over contiguous tensors of `numel` elements.
template <typename scalar_t, Activation act>
void backward_epilogue(const scalar_t* dy, const scalar_t* y, scalar_t* gz, int64_t numel) {
  at::parallel_for(0, numel, 32768, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) gz[i] = activation_grad<act>(dy[i], y[i]);
  });
}

// db[o] = Σ_r gz[r, o] of a contiguous [M, N] gz, accumulated in double. The row loop
// is outside so that the inner loop reads contiguous memory and vectorises.
template <typename scalar_t>
void bias_grad(const scalar_t* gz, scalar_t* db, int64_t M, int64_t N) {
  constexpr int64_t kColumns = 256;  // columns per task: a 2 KiB row of double sums
  at::parallel_for(0, (N + kColumns - 1) / kColumns, 1, [&](int64_t t0, int64_t t1) {
    double sums[kColumns];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t o0 = t * kColumns, width = std::min(kColumns, N - o0);
      std::fill(sums, sums + width, 0.0);
      for (int64_t r = 0; r < M; ++r) {
        const scalar_t* row = gz + r * N + o0;
        for (int64_t j = 0; j < width; ++j) sums[j] += row[j];
      }
      for (int64_t j = 0; j < width; ++j) db[o0 + j] = static_cast<scalar_t>(sums[j]);
    }
  });
}

at::Tensor linear_cpu(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                      c10::string_view activation) {
  const LinearGeometry g = check_linear(input, weight, bias, activation);
  const Activation act = activation_from_string(activation);
  const at::Tensor x = input.detach().reshape({g.rows, g.in_features});
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->detach().contiguous() : at::Tensor();
  // The result is allocated with its final size and computed through a 2-D view of it, so that
  // the op returns a tensor of its own, not a view (autograd forbids in-place ops on an output
  // that is a view, and layers like ReLU(inplace=True) follow a Linear).
  at::Tensor result = at::empty(g.output_sizes(), input.options());
  at::Tensor y = result.view({g.rows, g.out_features});
  if (y.numel() == 0) return result;
  at::mm_out(y, x, weight.detach().t());  // with K = 0 BLAS writes zeros
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "dlunits_linear_cpu", [&] {
    dispatch_activation(act, [&](auto tag) {
      forward_epilogue<scalar_t, decltype(tag)::value>(y.data_ptr<scalar_t>(),
                                                       b.defined() ? b.data_ptr<scalar_t>() : nullptr, g.rows,
                                                       g.out_features);
    });
  });
  return result;
}

at::Tensor linear_activation_backward_cpu(const at::Tensor& grad_output, const at::Tensor& output,
                                          c10::string_view activation) {
  check_linear_activation_backward(grad_output, output, activation);
  const Activation act = activation_from_string(activation);
  const at::Tensor dy = grad_output.detach().contiguous();
  const at::Tensor y = output.detach().contiguous();
  at::Tensor gz = at::empty(dy.sizes(), dy.options());
  if (gz.numel() == 0) return gz;
  AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "dlunits_linear_activation_backward_cpu", [&] {
    dispatch_activation(act, [&](auto tag) {
      backward_epilogue<scalar_t, decltype(tag)::value>(dy.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                                                        gz.data_ptr<scalar_t>(), gz.numel());
    });
  });
  return gz;
}

at::Tensor linear_backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& weight) {
  const LinearGeometry g = check_linear_backward_input(grad_output, weight);
  at::Tensor grad_input = at::empty(g.input_sizes(), grad_output.options());
  at::Tensor dx = grad_input.view({g.rows, g.in_features});
  if (dx.numel() > 0) at::mm_out(dx, grad_output.detach().reshape({g.rows, g.out_features}), weight.detach());
  return grad_input;
}

at::Tensor linear_backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input) {
  const LinearGeometry g = check_linear_backward_weight(grad_output, input);
  at::Tensor dw = at::empty({g.out_features, g.in_features}, grad_output.options());
  if (dw.numel() == 0) return dw;
  if (g.rows == 0) return dw.zero_();
  at::mm_out(dw, grad_output.detach().reshape({g.rows, g.out_features}).t(),
             input.detach().reshape({g.rows, g.in_features}));
  return dw;
}

at::Tensor linear_backward_bias_cpu(const at::Tensor& grad_output) {
  const int64_t N = check_linear_backward_bias(grad_output);
  const at::Tensor gz = grad_output.detach().contiguous();
  at::Tensor db = at::empty({N}, gz.options());
  if (N == 0) return db;
  AT_DISPATCH_FLOATING_TYPES(gz.scalar_type(), "dlunits_linear_backward_bias_cpu", [&] {
    bias_grad<scalar_t>(gz.data_ptr<scalar_t>(), db.data_ptr<scalar_t>(), gz.numel() / N, N);
  });
  return db;
}

}  // namespace
}  // namespace dlunits

TORCH_LIBRARY_IMPL(dlunits, CPU, m) {
  m.impl("linear", &dlunits::linear_cpu);
  m.impl("linear_activation_backward", &dlunits::linear_activation_backward_cpu);
  m.impl("linear_backward_input", &dlunits::linear_backward_input_cpu);
  m.impl("linear_backward_weight", &dlunits::linear_backward_weight_cpu);
  m.impl("linear_backward_bias", &dlunits::linear_backward_bias_cpu);
}
