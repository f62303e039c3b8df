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
// to about 2 ulp; sigmoid and tanh are built on it. That is what lets a cell
// beat a chain of separate vectorised torch ops.
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

#include "../recurrent_driver.h"

namespace dlunits {
namespace {

// e^x for float, vectorisable: x = k·ln2 + r with |r| <= ln2/2 (ln2 split in two
// parts, Cody & Waite), e^r by Cephes' degree-6 polynomial, 2^k through the
// exponent bits. x is clamped to [-87, 88] so that 2^k stays a normal float:
// e^-87 ≈ 1.6e-38 stands for anything smaller, which only ever appears as
// 1 + e^x or next to 1 in sigmoid and tanh.
inline float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float k = std::floor(x * 1.44269504088896341f + 0.5f);
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
  static float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }
  // 1 - 2 / (e^{2x} + 1): exact limits ±1, absolute error ~1e-7 near 0.
  static float tanh(float x) { return 1.0f - 2.0f / (exp_approx(2.0f * x) + 1.0f); }
};

// Rows per at::parallel_for chunk: about 16 K elements of work each.
inline int64_t row_grain(int64_t row_elements) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, row_elements)); }

struct CpuKernels {
  struct DeviceGuard {
    explicit DeviceGuard(const at::Tensor&) {}
  };

  template <typename scalar_t>
  static void rnn_forward_step(const RnnForwardStep<scalar_t>& s) {
    using acc_t = at::opmath_type<scalar_t>;
    using M = Math<acc_t>;
    const int64_t H = s.hidden;
    at::parallel_for(0, s.rows, row_grain(H), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* x = s.input_proj + b * H;
        const scalar_t* a = s.hidden_proj + b * H;
        scalar_t* out = s.output + b * H;
        scalar_t* state = s.h_state + b * H;
        for (int64_t j = 0; j < H; ++j) {
          const acc_t z = acc_t(x[j]) + acc_t(a[j]) + (s.bias ? acc_t(s.bias[j]) : acc_t(0));
          const acc_t h = s.activation == RnnActivation::Tanh ? M::tanh(z) : (z > acc_t(0) ? z : acc_t(0));
          out[j] = static_cast<scalar_t>(h);
          state[j] = static_cast<scalar_t>(h);
        }
      }
    });
  }

  template <typename scalar_t>
  static void rnn_backward_step(const RnnBackwardStep<scalar_t>& s) {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t H = s.hidden;
    at::parallel_for(0, s.rows, row_grain(H), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* dy = s.grad_output + b * H;
        const scalar_t* ds = s.grad_state + b * H;
        const scalar_t* h = s.output + b * H;
        scalar_t* dz = s.grad_gates + b * H;
        for (int64_t j = 0; j < H; ++j) {
          const acc_t dh = acc_t(dy[j]) + acc_t(ds[j]);
          const acc_t hj = acc_t(h[j]);
          // tanh' = 1 - h², relu' = [h > 0]
          const acc_t slope = s.activation == RnnActivation::Tanh ? acc_t(1) - hj * hj
                                                                   : (hj > acc_t(0) ? acc_t(1) : acc_t(0));
          dz[j] = static_cast<scalar_t>(dh * slope);
        }
      }
    });
  }

  template <typename scalar_t>
  static void lstm_forward_step(const LstmForwardStep<scalar_t>& s) {
    using acc_t = at::opmath_type<scalar_t>;
    using M = Math<acc_t>;
    const int64_t H = s.hidden;
    at::parallel_for(0, s.rows, row_grain(4 * H), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* x = s.input_proj + b * 4 * H;
        const scalar_t* a = s.hidden_proj + b * 4 * H;
        scalar_t* gates = s.gates + b * 4 * H;
        scalar_t* c_state = s.c_state + b * H;
        scalar_t* cells = s.cells + b * H;
        scalar_t* h_out = s.hidden_out + b * H;
        scalar_t* h_state = s.h_state ? s.h_state + b * H : nullptr;
        for (int64_t j = 0; j < H; ++j) {
          acc_t z[4];
          for (int k = 0; k < 4; ++k) {
            z[k] = acc_t(x[k * H + j]) + acc_t(a[k * H + j]) + (s.bias ? acc_t(s.bias[k * H + j]) : acc_t(0));
          }
          const acc_t i = M::sigmoid(z[0]), f = M::sigmoid(z[1]), g = M::tanh(z[2]), o = M::sigmoid(z[3]);
          const acc_t c = f * acc_t(c_state[j]) + i * g;
          const acc_t h = o * M::tanh(c);
          gates[j] = static_cast<scalar_t>(i);
          gates[H + j] = static_cast<scalar_t>(f);
          gates[2 * H + j] = static_cast<scalar_t>(g);
          gates[3 * H + j] = static_cast<scalar_t>(o);
          c_state[j] = static_cast<scalar_t>(c);
          cells[j] = static_cast<scalar_t>(c);
          h_out[j] = static_cast<scalar_t>(h);
          if (h_state) h_state[j] = static_cast<scalar_t>(h);
        }
      }
    });
  }

  template <typename scalar_t>
  static void lstm_backward_step(const LstmBackwardStep<scalar_t>& s) {
    using acc_t = at::opmath_type<scalar_t>;
    using M = Math<acc_t>;
    const int64_t H = s.hidden;
    at::parallel_for(0, s.rows, row_grain(4 * H), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* dh_a = s.grad_hidden + b * H;
        const scalar_t* dh_b = s.grad_state ? s.grad_state + b * H : nullptr;
        const scalar_t* gates = s.gates + b * 4 * H;
        const scalar_t* cells = s.cells + b * H;
        const scalar_t* c_prev = b < s.c_prev_rows ? s.c_prev + b * H : s.c0 + b * H;
        scalar_t* dc_state = s.grad_c_state + b * H;
        scalar_t* dz = s.grad_gates + b * 4 * H;
        scalar_t* h_out = s.hidden_out ? s.hidden_out + b * H : nullptr;
        for (int64_t j = 0; j < H; ++j) {
          const acc_t dh = acc_t(dh_a[j]) + (dh_b ? acc_t(dh_b[j]) : acc_t(0));
          const acc_t i = acc_t(gates[j]), f = acc_t(gates[H + j]), g = acc_t(gates[2 * H + j]),
                      o = acc_t(gates[3 * H + j]);
          const acc_t tanh_c = M::tanh(acc_t(cells[j]));
          const acc_t dc = acc_t(dc_state[j]) + dh * o * (acc_t(1) - tanh_c * tanh_c);
          dz[j] = static_cast<scalar_t>(dc * g * i * (acc_t(1) - i));
          dz[H + j] = static_cast<scalar_t>(dc * acc_t(c_prev[j]) * f * (acc_t(1) - f));
          dz[2 * H + j] = static_cast<scalar_t>(dc * i * (acc_t(1) - g * g));
          dz[3 * H + j] = static_cast<scalar_t>(dh * tanh_c * o * (acc_t(1) - o));
          dc_state[j] = static_cast<scalar_t>(dc * f);
          if (h_out) h_out[j] = static_cast<scalar_t>(o * tanh_c);
        }
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

TORCH_LIBRARY_IMPL(dlunits, CPU, m) {
  using K = dlunits::CpuKernels;
  m.impl("rnn_cell", &dlunits::rnn_cell_op<K>);
  m.impl("rnn_cell_backward", &dlunits::rnn_cell_backward_op<K>);
  m.impl("lstm_cell", &dlunits::lstm_cell_op<K>);
  m.impl("lstm_cell_backward", &dlunits::lstm_cell_backward_op<K>);
  m.impl("rnn_layer", &dlunits::rnn_layer_op<K>);
  m.impl("rnn_layer_backward", &dlunits::rnn_layer_backward_op<K>);
  m.impl("lstm_layer", &dlunits::lstm_layer_op<K>);
  m.impl("lstm_layer_backward", &dlunits::lstm_layer_backward_op<K>);
}
