// dlunits — the recurrent units on the CPU: RNNCell, LSTMCell, and one layer and
// direction of RNN and LSTM over a whole (possibly packed) sequence.
//
// The recurrence itself (which step runs when, the matrix products, the saved
// tensors) is csrc/recurrent_driver.h, shared with CUDA; its header comment has
// the equations, FLOPs and bytes. This file is the CPU's fused step passes:
//   forward   one pass over [rows, H] reads the G pre-activation blocks of X_t and
//             h_{t-1}·W_hhᵀ and the bias, computes every gate, c_t and h_t, and
//             writes the saved gates, c_t, h_t and the running state;
//   backward  one pass reads the upstream gradients, the saved gates and cells,
//             and writes every gate's pre-activation gradient and dc_{t-1};
// plus the bias gradient (a column sum). Each pass is O(rows·G·H), memory-bound:
// it moves about (3G + 4)·rows·H elements, against 2·rows·G·H·P FLOPs of the
// step's matrix product, which at::mm_out (BLAS) does.
//
// Precision: float64 uses std::exp and std::tanh. float32 uses exp_approx below,
// a polynomial exp that the compiler vectorises (libm's expf does not), accurate
// to about 2 ulp; sigmoid and tanh are built on it, so that a step's fused pass
// costs a small fraction of its matrix product (B=16, H=256: ~15%).
//
// Threads: rows are split with at::parallel_for when a pass has enough work
// (>= 16 K elements per chunk); each element is written by one thread, and the
// column sum keeps a fixed order over rows, so results do not depend on threads.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <type_traits>

#include "../recurrent_driver.h"

// The step passes convert float to int and select (exp_approx): with trapping math
// (GCC's default) GCC will not vectorise those. torch runs with FP traps off.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

namespace dlunits {
namespace {

// e^x for float, vectorisable: x = k·ln2 + r with |r| <= ln2/2 (ln2 split in two
// parts, Cody & Waite), e^r by Cephes' degree-6 polynomial, 2^k through the
// exponent bits. x is clamped to [-87, 88] so that 2^k stays a normal float:
// e^-87 ≈ 1.6e-38 stands for anything smaller, which only ever appears as
// 1 + e^x or next to 1 in sigmoid and tanh.
// Always inlined: a call left in a step loop would keep it from vectorising.
[[gnu::always_inline]] inline float exp_approx(float x) {
  // Two plain selects (a nested one, or fmin/fmax, keeps GCC from vectorising).
  x = x > -87.0f ? x : -87.0f;
  x = x < 88.0f ? x : 88.0f;
  // k = floor(x·log2 e + 1/2): the sum is positive after the +128 offset, so truncation is floor.
  const float k = static_cast<float>(static_cast<int32_t>(x * 1.44269504088896341f + 128.5f) - 128);
  const float r = x - k * 0.693359375f + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e_r = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return e_r * scale;
}

template <typename T>
struct Math {  // float64 (and the half types' float math, never used on the CPU)
  static T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }
  static T tanh(T x) { return std::tanh(x); }
};

template <>
struct Math<float> {
  [[gnu::always_inline]] static float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }
  // 1 - 2 / (e^{2x} + 1): exact limits ±1, absolute error ~1e-7 near 0.
  [[gnu::always_inline]] static float tanh(float x) { return 1.0f - 2.0f / (exp_approx(2.0f * x) + 1.0f); }
};

// Rows per at::parallel_for chunk: about 16 K elements of work each.
inline int64_t row_grain(int64_t row_elements) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, row_elements));
}

// --- one row of a step pass ---------------------------------------------------------------------------------------
// Plain functions of restrict pointers and a hidden size by value: the form in which
// GCC vectorises the loops (inside the parallel_for lambdas it did not).

template <typename scalar_t, bool relu>
void rnn_forward_row(const scalar_t* __restrict__ x, const scalar_t* __restrict__ a,
                     const scalar_t* __restrict__ bias, scalar_t* __restrict__ out, int64_t H) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t j = 0; j < H; ++j) {
    const acc_t z = acc_t(x[j]) + acc_t(a[j]) + acc_t(bias[j]);
    out[j] = static_cast<scalar_t>(relu ? (z > acc_t(0) ? z : acc_t(0)) : Math<acc_t>::tanh(z));
  }
}

template <typename scalar_t, bool relu>
void rnn_backward_row(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ ds,
                      const scalar_t* __restrict__ h, scalar_t* __restrict__ dz, int64_t H) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t j = 0; j < H; ++j) {
    const acc_t hj = acc_t(h[j]);
    // tanh' = 1 - h², relu' = [h > 0]
    const acc_t slope = relu ? (hj > acc_t(0) ? acc_t(1) : acc_t(0)) : acc_t(1) - hj * hj;
    dz[j] = static_cast<scalar_t>((acc_t(dy[j]) + acc_t(ds[j])) * slope);
  }
}

template <typename scalar_t>
void lstm_forward_row(const scalar_t* __restrict__ x, const scalar_t* __restrict__ a,
                      const scalar_t* __restrict__ bias, scalar_t* __restrict__ c_state,
                      scalar_t* __restrict__ gates, scalar_t* __restrict__ cells, scalar_t* __restrict__ h_out,
                      int64_t H) {
  using acc_t = at::opmath_type<scalar_t>;
  using M = Math<acc_t>;
  for (int64_t j = 0; j < H; ++j) {
    const acc_t i = M::sigmoid(acc_t(x[j]) + acc_t(a[j]) + acc_t(bias[j]));
    const acc_t f = M::sigmoid(acc_t(x[H + j]) + acc_t(a[H + j]) + acc_t(bias[H + j]));
    const acc_t g = M::tanh(acc_t(x[2 * H + j]) + acc_t(a[2 * H + j]) + acc_t(bias[2 * H + j]));
    const acc_t o = M::sigmoid(acc_t(x[3 * H + j]) + acc_t(a[3 * H + j]) + acc_t(bias[3 * H + j]));
    const acc_t c = f * acc_t(c_state[j]) + i * g;
    gates[j] = static_cast<scalar_t>(i);
    gates[H + j] = static_cast<scalar_t>(f);
    gates[2 * H + j] = static_cast<scalar_t>(g);
    gates[3 * H + j] = static_cast<scalar_t>(o);
    c_state[j] = static_cast<scalar_t>(c);
    cells[j] = static_cast<scalar_t>(c);
    h_out[j] = static_cast<scalar_t>(o * M::tanh(c));
  }
}

// dh = dh_a (+ dh_b with has_state); h_out = o ⊙ tanh(c) with has_out (for dW_hr).
template <typename scalar_t, bool has_state, bool has_out>
void lstm_backward_row(const scalar_t* __restrict__ dh_a, const scalar_t* __restrict__ dh_b,
                       const scalar_t* __restrict__ gates, const scalar_t* __restrict__ cells,
                       const scalar_t* __restrict__ c_prev, scalar_t* __restrict__ dc_state,
                       scalar_t* __restrict__ dz, scalar_t* __restrict__ h_out, int64_t H) {
  using acc_t = at::opmath_type<scalar_t>;
  using M = Math<acc_t>;
  for (int64_t j = 0; j < H; ++j) {
    acc_t dh = acc_t(dh_a[j]);
    if constexpr (has_state) dh += acc_t(dh_b[j]);
    const acc_t i = acc_t(gates[j]), f = acc_t(gates[H + j]), g = acc_t(gates[2 * H + j]),
                o = acc_t(gates[3 * H + j]);
    const acc_t tanh_c = M::tanh(acc_t(cells[j]));
    const acc_t dc = acc_t(dc_state[j]) + dh * o * (acc_t(1) - tanh_c * tanh_c);
    dz[j] = static_cast<scalar_t>(dc * g * i * (acc_t(1) - i));
    dz[H + j] = static_cast<scalar_t>(dc * acc_t(c_prev[j]) * f * (acc_t(1) - f));
    dz[2 * H + j] = static_cast<scalar_t>(dc * i * (acc_t(1) - g * g));
    dz[3 * H + j] = static_cast<scalar_t>(dh * tanh_c * o * (acc_t(1) - o));
    dc_state[j] = static_cast<scalar_t>(dc * f);
    if constexpr (has_out) h_out[j] = static_cast<scalar_t>(o * tanh_c);
  }
}

struct CpuKernels {
  struct DeviceGuard {
    explicit DeviceGuard(const at::Tensor&) {}
  };

  // The CPU steps through time (each step's product is a BLAS call on the whole batch).
  template <typename scalar_t>
  static bool persistent_forward(const PersistentForward<scalar_t>&) {
    return false;
  }

  template <typename scalar_t>
  static bool persistent_backward(const PersistentBackward<scalar_t>&) {
    return false;
  }

  template <typename scalar_t>
  static void rnn_forward_step(const RnnForwardStep<scalar_t>& s) {
    const auto row = s.activation == RnnActivation::Relu ? rnn_forward_row<scalar_t, true>
                                                          : rnn_forward_row<scalar_t, false>;
    at::parallel_for(0, s.rows, row_grain(s.hidden), [&](int64_t begin, int64_t end) {
      const int64_t H = s.hidden;
      for (int64_t b = begin; b < end; ++b) {
        row(s.input_proj + b * H, s.hidden_proj + b * H, s.bias, s.output + b * H, H);
        std::memcpy(s.h_state + b * H, s.output + b * H, H * sizeof(scalar_t));
      }
    });
  }

  template <typename scalar_t>
  static void rnn_backward_step(const RnnBackwardStep<scalar_t>& s) {
    const auto row = s.activation == RnnActivation::Relu ? rnn_backward_row<scalar_t, true>
                                                          : rnn_backward_row<scalar_t, false>;
    at::parallel_for(0, s.rows, row_grain(s.hidden), [&](int64_t begin, int64_t end) {
      const int64_t H = s.hidden;
      for (int64_t b = begin; b < end; ++b) {
        row(s.grad_output + b * H, s.grad_state + b * H, s.output + b * H, s.grad_gates + b * H, H);
      }
    });
  }

  template <typename scalar_t>
  static void lstm_forward_step(const LstmForwardStep<scalar_t>& s) {
    at::parallel_for(0, s.rows, row_grain(4 * s.hidden), [&](int64_t begin, int64_t end) {
      const int64_t H = s.hidden;
      for (int64_t b = begin; b < end; ++b) {
        lstm_forward_row(s.input_proj + b * 4 * H, s.hidden_proj + b * 4 * H, s.bias, s.c_state + b * H,
                         s.gates + b * 4 * H, s.cells + b * H, s.hidden_out + b * H, H);
        if (s.h_state) std::memcpy(s.h_state + b * H, s.hidden_out + b * H, H * sizeof(scalar_t));
      }
    });
  }

  template <typename scalar_t>
  static void lstm_backward_step(const LstmBackwardStep<scalar_t>& s) {
    // One row function per (second gradient?, o ⊙ tanh(c) output?), so no branch is left in its loop.
    const bool has_state = s.grad_state != nullptr, has_out = s.hidden_out != nullptr;
    const auto row = has_state ? (has_out ? lstm_backward_row<scalar_t, true, true>
                                          : lstm_backward_row<scalar_t, true, false>)
                               : (has_out ? lstm_backward_row<scalar_t, false, true>
                                          : lstm_backward_row<scalar_t, false, false>);
    at::parallel_for(0, s.rows, row_grain(4 * s.hidden), [&](int64_t begin, int64_t end) {
      const int64_t H = s.hidden;
      for (int64_t b = begin; b < end; ++b) {
        row(s.grad_hidden + b * H, has_state ? s.grad_state + b * H : nullptr, s.gates + b * 4 * H,
            s.cells + b * H, b < s.c_prev_rows ? s.c_prev + b * H : s.c0 + b * H, s.grad_c_state + b * H,
            s.grad_gates + b * 4 * H, has_out ? s.hidden_out + b * H : nullptr, H);
      }
    });
  }

  // out[j] = Σ_r m[r, j], rows in order; columns split over threads.
  template <typename scalar_t>
  static void column_sum(const scalar_t* m, int64_t rows, int64_t cols, scalar_t* out) {
    using acc_t = at::opmath_type<scalar_t>;
    at::parallel_for(0, cols, std::max<int64_t>(64, 16384 / std::max<int64_t>(1, rows)),
                     [&](int64_t begin, int64_t end) {
      std::vector<acc_t> sum(end - begin, acc_t(0));
      for (int64_t r = 0; r < rows; ++r) {
        const scalar_t* row = m + r * cols;
        for (int64_t j = begin; j < end; ++j) sum[j - begin] += acc_t(row[j]);
      }
      for (int64_t j = begin; j < end; ++j) out[j] = static_cast<scalar_t>(sum[j - begin]);
    });
  }
};

}  // namespace
}  // namespace dlunits

TORCH_LIBRARY_IMPL(dlunits, CPU, m) { dlunits::register_recurrent_ops<dlunits::CpuKernels>(m); }
