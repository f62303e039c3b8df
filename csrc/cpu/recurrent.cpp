// dlunits — the recurrent units on the CPU: RNNCell, LSTMCell, and one layer and
// direction of RNN and LSTM over a whole (possibly packed) sequence.
//
// The order of the steps and the saved tensors are csrc/recurrent_driver.h, shared
// with CUDA; its header comment has the equations, FLOPs and bytes. This file has:
//   the step passes  forward, one pass over [rows, H] reads the G pre-activation
//                    blocks of X_t and h_{t-1}·W_hhᵀ and the bias, computes every
//                    gate, c_t and h_t, and writes the saved gates, c_t and h_t;
//                    backward, one pass reads the upstream gradients, the saved
//                    gates and cells, and writes every gate's pre-activation gradient
//                    and dc_{t-1}; plus the bias gradient (a column sum);
//   the recurrence   of a padded sequence of two or more steps without a projection
//                    (the driver's "persistent" hook): W_hh packed once per call, then per step
//                    one product of ours (csrc/cpu/panel_gemm.h) and one pass, the
//                    batch split over threads (a row's recurrence reads no other row);
//   the cell         at a thin batch (32 rows in float32, 16 in float64), one step whose
//                    products are ours too (csrc/cpu/dot_gemm.h), x, h and the weights read
//                    in place (cell_forward_pass); and at that batch its backward
//                    products: dh and dx = dZ·W on panel_gemm, W read in place, and
//                    dW = dZᵀ·[x, h] with db on thin_depth_gemm (weight_gradients_pass),
//                    which also serve the per-step dh of a thin packed or projected sequence.
//   the input        projection of a float32 sequence of 128 rows or more: every step's X·W_ihᵀ
//                    in one panel_gemm, W_ihᵀ packed once, the rows split over threads
//                    (input_projection_pass).
// A float64 or shorter sequence's input projection, a sequence's weight and input gradients,
// and the forward steps of packed or projected sequences use at::mm (BLAS, threaded by MKL),
// as the project allows for these units: at those shapes MKL's kernel was as fast as
// ours or faster.
//
// Cost per step (B rows, H units, G gates): 2·B·G·H·H FLOPs for the recurrent
// product against ~(3G + 4)·B·H elements moved by the pass; at B = 16, H = 256 on two
// Zen 3 cores (AVX2, 8 rows each) the product is ~0.06 ms (~69 GFLOP/s a core; 84 on one
// core alone, ~90% of its FMA peak) and the pass ~0.015 ms. With AVX-512 the products and
// passes run on 16 float lanes (see panel_gemm.h).
//
// Precision: float64 uses std::exp and std::tanh; float32 the vectorised sigmoid and tanh of
// vector_math.h (within 4 ulp, NaN and infinities as torch's).
//
// Threads: the sequence splits the batch, the cell splits the units in blocks of one vector (8 in float64),
// the per-step passes of packed sequences split rows (>= 16 K elements per chunk).
// Every element is written by one thread and computed in the same order whatever the
// split, and the column sum keeps a fixed order over rows, so results do not depend
// on the number of threads.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../recurrent_driver.h"
#include "dot_gemm.h"
#include "panel_gemm.h"
#include "vector_math.h"

namespace dlunits {
namespace {

// --- the step passes' arithmetic, on packs of `lanes` units -----------------------------------------------------
//
// A pack is a vector of float32 units (cpu::kLanes: 8, or 16 with AVX-512) on the vector math of
// vector_math.h, or one unit of any other type in its op-math type (float64: std::exp and std::tanh;
// the half types only instantiate it, the CPU refuses them).
// The LSTM's and RNN's equations below are written once, on packs.

template <typename scalar_t>
struct Pack {
  using acc_t = at::opmath_type<scalar_t>;
  using V = acc_t;
  static constexpr int64_t lanes = 1;
  static V load(const scalar_t* p, int64_t) { return acc_t(*p); }
  static void store(scalar_t* p, V v, int64_t) { *p = static_cast<scalar_t>(v); }
  static V sigmoid(V x) { return acc_t(1) / (acc_t(1) + std::exp(-x)); }
  static V tanh(V x) { return std::tanh(x); }
  static V relu(V z) { return z < acc_t(0) ? acc_t(0) : z; }        // NaN stays NaN, as torch's
  static V relu_slope(V h) { return h <= acc_t(0) ? acc_t(0) : acc_t(1); }  // torch's threshold_backward
};

template <>
struct Pack<float> {
  using acc_t = float;
  using V = cpu::Floats;
  static constexpr int64_t lanes = cpu::kLanes;
  // n < lanes only for a row's last pack: its missing lanes are zeros in, and not stored.
  static V load(const float* p, int64_t n) {
    V v{};
    std::memcpy(&v, p, n * sizeof(float));
    return v;
  }
  static void store(float* p, V v, int64_t n) { std::memcpy(p, &v, n * sizeof(float)); }
  static V sigmoid(V x) { return cpu::sigmoid_fast(x); }
  static V tanh(V x) { return cpu::tanh_fast(x); }
  static V relu(V z) { return z < cpu::splat(0.0f) ? cpu::splat(0.0f) : z; }
  static V relu_slope(V h) { return h <= cpu::splat(0.0f) ? cpu::splat(0.0f) : cpu::splat(1.0f); }
};

// step(j, n) for the packs of units [0, count): whole packs, then the rest. A whole pack's n is a
// compile-time constant (std::integral_constant), so its loads and stores are plain vector moves even
// where the compiler does not inline step: the LSTM's saving pass, left out of line, made a memmove
// call of each of them (~15% of a T=50 forward).
template <typename scalar_t, typename Step>
inline void for_each_pack(int64_t count, const Step& step) {
  constexpr int64_t L = Pack<scalar_t>::lanes;
  int64_t j = 0;
  for (; j + L <= count; j += L) step(j, std::integral_constant<int64_t, L>{});
  if (j < count) step(j, count - j);
}

// Rows per at::parallel_for chunk: about 16 K elements of work each.
inline int64_t row_grain(int64_t row_elements) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, row_elements));
}

// --- one row of a step pass (units 0 … count - 1, the gates H apart) -----------------------------------------

// A pre-activation pack at offset j: x + a + bias, x the input's projection and a the hidden state's; or
// x + bias where x holds both products summed already (kSummed: the cell's; a is unused).
template <typename scalar_t, bool kSummed, typename Count>
inline auto preactivation(const scalar_t* x, const scalar_t* a, const scalar_t* bias, int64_t j, Count n) {
  using P = Pack<scalar_t>;
  if constexpr (kSummed) {
    return P::load(x + j, n) + P::load(bias + j, n);
  } else {
    return P::load(x + j, n) + P::load(a + j, n) + P::load(bias + j, n);
  }
}

template <typename scalar_t, bool relu, bool kSummed = false>
void rnn_forward_row(const scalar_t* x, const scalar_t* a, const scalar_t* bias, scalar_t* out, int64_t count) {
  using P = Pack<scalar_t>;
  for_each_pack<scalar_t>(count, [&](int64_t j, auto n) {
    const auto z = preactivation<scalar_t, kSummed>(x, a, bias, j, n);
    P::store(out + j, relu ? P::relu(z) : P::tanh(z), n);
  });
}

template <typename scalar_t, bool relu>
void rnn_backward_row(const scalar_t* dy, const scalar_t* ds, const scalar_t* h, scalar_t* dz, int64_t count) {
  using P = Pack<scalar_t>;
  using acc_t = typename P::acc_t;
  for_each_pack<scalar_t>(count, [&](int64_t j, auto n) {
    const auto hj = P::load(h + j, n);
    const auto slope = relu ? P::relu_slope(hj) : acc_t(1) - hj * hj;  // relu' = [h > 0], tanh' = 1 - h²
    P::store(dz + j, (P::load(dy + j, n) + P::load(ds + j, n)) * slope, n);
  });
}

// kSave: write the gates and c_t for the backward (without it gates and cells are unused).
template <typename scalar_t, bool kSave = true, bool kSummed = false>
void lstm_forward_row(const scalar_t* x, const scalar_t* a, const scalar_t* bias, scalar_t* c_state, scalar_t* gates,
                      scalar_t* cells, scalar_t* h_out, int64_t H, int64_t count) {
  using P = Pack<scalar_t>;
  for_each_pack<scalar_t>(count, [&](int64_t j, auto n) {
    const auto pre = [&](int64_t k) { return preactivation<scalar_t, kSummed>(x, a, bias, k * H + j, n); };
    const auto i = P::sigmoid(pre(0)), f = P::sigmoid(pre(1)), g = P::tanh(pre(2)), o = P::sigmoid(pre(3));
    const auto c = f * P::load(c_state + j, n) + i * g;
    if constexpr (kSave) {
      P::store(gates + j, i, n);
      P::store(gates + H + j, f, n);
      P::store(gates + 2 * H + j, g, n);
      P::store(gates + 3 * H + j, o, n);
      P::store(cells + j, c, n);
    }
    P::store(c_state + j, c, n);
    P::store(h_out + j, o * P::tanh(c), n);
  });
}

// dh = dh_a (+ dh_b with has_state); h_out = o ⊙ tanh(c) with has_out (for dW_hr).
template <typename scalar_t, bool has_state, bool has_out>
void lstm_backward_row(const scalar_t* dh_a, const scalar_t* dh_b, const scalar_t* gates, const scalar_t* cells,
                       const scalar_t* c_prev, scalar_t* dc_state, scalar_t* dz, scalar_t* h_out, int64_t H,
                       int64_t count) {
  using P = Pack<scalar_t>;
  using acc_t = typename P::acc_t;
  for_each_pack<scalar_t>(count, [&](int64_t j, auto n) {
    auto dh = P::load(dh_a + j, n);
    if constexpr (has_state) dh = dh + P::load(dh_b + j, n);
    const auto i = P::load(gates + j, n), f = P::load(gates + H + j, n), g = P::load(gates + 2 * H + j, n),
               o = P::load(gates + 3 * H + j, n);
    const auto tanh_c = P::tanh(P::load(cells + j, n));
    const auto dc = P::load(dc_state + j, n) + dh * o * (acc_t(1) - tanh_c * tanh_c);
    P::store(dz + j, dc * g * i * (acc_t(1) - i), n);
    P::store(dz + H + j, dc * P::load(c_prev + j, n) * f * (acc_t(1) - f), n);
    P::store(dz + 2 * H + j, dc * i * (acc_t(1) - g * g), n);
    P::store(dz + 3 * H + j, dh * tanh_c * o * (acc_t(1) - o), n);
    P::store(dc_state + j, dc * f, n);
    if constexpr (has_out) P::store(h_out + j, o * tanh_c, n);
  });
}

// --- whole sequences: W_hh packed once, then per step one tiled product and one pass ------------------------------
//
// The recurrence of one batch row never reads another row, so threads split the batch: each runs the
// whole sequence on its rows (one parallel region, no synchronisation between steps), reading all of
// the packed W_hh at every step. Per step and row block: the G gates' pre-activations
// A = h_{t-1} · W_hhᵀ (cpu::panel_gemm), then the step pass over those rows.
// Backward through time is the same with dh = dZ_{t+1} · W_hh.

// Rows per thread: at least 8 (a full tile or two), and one thread below ~1 MFLOP in all.
inline int64_t batch_grain(int64_t rows, int64_t flops_per_row) {
  return flops_per_row * rows < (int64_t(1) << 20) ? std::max<int64_t>(rows, 1) : 8;
}

// at::parallel_for's grain over a cell's blocks of units: one thread below ~1 MFLOP.
inline int64_t unit_block_grain(int64_t blocks, int64_t flops_per_block) {
  return flops_per_block * blocks < (int64_t(1) << 20) ? std::max<int64_t>(blocks, 1) : 1;
}

template <typename scalar_t>
void sequence_forward(const PersistentForward<scalar_t>& p) {
  const int64_t T = p.steps, B = p.batch, H = p.hidden, G = p.gate_count, GH = G * H;
  const auto options = at::TensorOptions().dtype(caffe2::TypeMeta::Make<scalar_t>());
  // Gate g of W_hh as panels of W_gᵀ, so that gate g's pre-activations are columns g·H … of A.
  std::vector<at::Tensor> packed;
  std::vector<cpu::Panels<scalar_t>> weight;
  for (int64_t g = 0; g < G; ++g) {
    packed.push_back(cpu::pack_transposed(p.weight_hh + g * H * H, H, H, options));
    weight.push_back(cpu::packed_panels<scalar_t>(packed.back(), H));
  }
  at::Tensor hidden_proj_buffer = at::empty({B, GH}, options);
  scalar_t* hidden_proj = hidden_proj_buffer.mutable_data_ptr<scalar_t>();
  const auto lstm_row = p.gates ? lstm_forward_row<scalar_t, true> : lstm_forward_row<scalar_t, false>;

  at::parallel_for(0, B, batch_grain(B, 2 * T * GH * H), [&](int64_t b0, int64_t b1) {
    const scalar_t* h_prev = p.h0 + b0 * H;  // row b0 of h_{t-1}, H apart
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = p.reverse ? T - 1 - s : s;
      for (int64_t g = 0; g < G; ++g) {
        cpu::panel_gemm(cpu::MatrixA<scalar_t>{h_prev, H, 1}, b1 - b0, weight[g], 0, weight[g].count(),
                        hidden_proj + b0 * GH + g * H, GH, false);
      }
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t gate_row = (t * B + b) * GH, row = (t * B + b) * H;
        if (G == 1) {
          const auto step = p.activation == RnnActivation::Relu ? rnn_forward_row<scalar_t, true>
                                                                 : rnn_forward_row<scalar_t, false>;
          step(p.input_proj + gate_row, hidden_proj + b * GH, p.bias, p.output + row, H);
        } else {
          lstm_row(p.input_proj + gate_row, hidden_proj + b * GH, p.bias, p.c_state + b * H,
                   p.gates ? p.gates + gate_row : nullptr, p.cells ? p.cells + row : nullptr, p.output + row, H, H);
        }
      }
      h_prev = p.output + (t * B + b0) * H;
    }
    std::memcpy(p.h_state + b0 * H, h_prev, (b1 - b0) * H * sizeof(scalar_t));
  });
}

template <typename scalar_t>
void sequence_backward(const PersistentBackward<scalar_t>& p) {
  const int64_t T = p.steps, B = p.batch, H = p.hidden, G = p.gate_count, GH = G * H;
  const auto options = at::TensorOptions().dtype(caffe2::TypeMeta::Make<scalar_t>());
  // dh = dZ · W_hh: W_hh [GH, H] packed once as panels of its columns.
  const at::Tensor packed = cpu::pack_columns(p.weight_hh, GH, H, options);
  const auto weight = cpu::packed_panels<scalar_t>(packed, H);

  at::parallel_for(0, B, batch_grain(B, 2 * T * GH * H), [&](int64_t b0, int64_t b1) {
    // grad_h: in grad_h_n; each step's product overwrites the rows with dZ_{t+1} · W_hh, which the pass
    // adds to grad_output_t; after the last step they are dZ_first · W_hh, the gradient of h0.
    const auto grad_h_from = [&](const scalar_t* grad_gates) {
      cpu::panel_gemm(cpu::MatrixA<scalar_t>{grad_gates + b0 * GH, GH, 1}, b1 - b0, weight, 0, weight.count(),
                      p.grad_h + b0 * H, H, false);
    };
    for (int64_t s = 0; s < T; ++s) {
      const int64_t t = p.reverse ? s : T - 1 - s;
      const int64_t t_prev = p.reverse ? t + 1 : t - 1;  // the step before t in the forward pass
      if (s > 0) grad_h_from(p.grad_gates + (p.reverse ? t - 1 : t + 1) * B * GH);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t gate_row = (t * B + b) * GH, row = (t * B + b) * H;
        if (G == 1) {
          const auto step = p.activation == RnnActivation::Relu ? rnn_backward_row<scalar_t, true>
                                                                 : rnn_backward_row<scalar_t, false>;
          step(p.grad_output + row, p.grad_h + b * H, p.output + row, p.grad_gates + gate_row, H);
        } else {
          const bool first_step = t_prev < 0 || t_prev >= T;
          const scalar_t* c_prev = first_step ? p.c0 + b * H : p.cells + (t_prev * B + b) * H;
          lstm_backward_row<scalar_t, true, false>(p.grad_output + row, p.grad_h + b * H, p.gates + gate_row,
                                                   p.cells + row, c_prev, p.grad_c + b * H,
                                                   p.grad_gates + gate_row, nullptr, H, H);
        }
      }
    }
    grad_h_from(p.grad_gates + (p.reverse ? T - 1 : 0) * B * GH);
  });
}

// A cell (one step, no projection): z = x · W_ihᵀ + h0 · W_hhᵀ on cpu::dot_gemm, which reads x, h0 and the
// weights in place, all along K, and writes z's rows; nothing of the size of a weight is copied per call.
// Threads split the units in blocks of one vector (all G gates of each); a thread computes its units'
// columns of z and runs the step pass on them.
template <typename scalar_t>
void cell_forward_pass(const CellForward& p) {
  constexpr int64_t kUnits = Pack<scalar_t>::lanes > 1 ? Pack<scalar_t>::lanes : 8;  // whole packs for the pass
  const int64_t B = p.input.size(0), I = p.input.size(1), H = p.h0.size(1), GH = p.weight_ih.size(0), G = GH / H;
  const auto options = p.input.options();
  const scalar_t* input = p.input.const_data_ptr<scalar_t>();
  const scalar_t* h0 = p.h0.const_data_ptr<scalar_t>();
  // Plain loops and copies below, not ATen ops: at a cell's size their dispatch would cost as much.
  std::vector<scalar_t> bias_sum(GH, scalar_t(0));  // b_ih + b_hh
  for (const at::Tensor* b : {&p.bias_ih, &p.bias_hh}) {
    if (!b->defined()) continue;
    const scalar_t* values = b->const_data_ptr<scalar_t>();
    for (int64_t k = 0; k < GH; ++k) bias_sum[k] += values[k];
  }
  scalar_t* c_state = G == 4 ? p.c_n.mutable_data_ptr<scalar_t>() : nullptr;
  if (G == 4) std::memcpy(c_state, p.c0.const_data_ptr<scalar_t>(), B * H * sizeof(scalar_t));  // updated in place
  const scalar_t* weight_ih = p.weight_ih.const_data_ptr<scalar_t>();
  const scalar_t* weight_hh = p.weight_hh.const_data_ptr<scalar_t>();
  const scalar_t* bias = bias_sum.data();
  scalar_t* output = p.output.mutable_data_ptr<scalar_t>();
  scalar_t* gates = G == 4 ? p.gates.mutable_data_ptr<scalar_t>() : nullptr;
  scalar_t* cells = G == 4 ? p.cells.mutable_data_ptr<scalar_t>() : nullptr;
  at::Tensor products_buffer = at::empty({B, GH}, options);  // z
  scalar_t* products = products_buffer.mutable_data_ptr<scalar_t>();
  const int64_t blocks = (H + kUnits - 1) / kUnits;
  at::parallel_for(0, blocks, unit_block_grain(blocks, 2 * kUnits * G * (I + H) * B), [&](int64_t begin, int64_t end) {
    const int64_t j0 = begin * kUnits, count = std::min(end * kUnits, H) - j0;
    for (int64_t g = 0; g < G; ++g) {
      const int64_t row = g * H + j0;
      cpu::dot_gemm<scalar_t, 2>({{{input, I, weight_ih + row * I, I, I}, {h0, H, weight_hh + row * H, H, H}}}, B,
                                 count, products + row, GH);
    }
    for (int64_t b = 0; b < B; ++b) {
      const int64_t gate_row = b * GH + j0, row = b * H + j0;
      if (G == 1) {
        const auto step = p.activation == RnnActivation::Relu ? rnn_forward_row<scalar_t, true, true>
                                                               : rnn_forward_row<scalar_t, false, true>;
        step(products + gate_row, nullptr, bias + j0, output + row, count);
      } else {
        lstm_forward_row<scalar_t, true, true>(products + gate_row, nullptr, bias + j0, c_state + row,
                                               gates + gate_row, cells + row, output + row, H, count);
      }
    }
  });
  std::memcpy(p.h_n.mutable_data_ptr<scalar_t>(), output, B * H * sizeof(scalar_t));
}

// The largest batch for which a cell step runs on cell_forward_pass: 32 in float32, 16 in float64 (128 bytes
// of each input column). A loop of LSTMCell steps at 256 + 256 inputs, ours against BLAS's products alternated
// in one process: float32 1.24x at B = 32, 1.14x at 48, 1.0-1.05x at 64, 0.93x at 128; float64 1.21-1.38x
// at B <= 16, 0.80x at 32 (x no longer fits in L1, and MKL blocks for L2).
template <typename scalar_t>
constexpr int64_t kCellKernelBatch = 128 / sizeof(scalar_t);

// The cell's backward products at a thin batch (the same kCellKernelBatch), split over threads. On the AMD
// machine (Zen 3, 2 cores) MKL's sgemm runs each of the three (B = 16, 256/256) at 65 GFLOP/s on one
// thread, the core's FMA rate for these shapes, and at 72-104 on two; ours at ~117 on two for the
// weight gradients. An LSTMCell's backward op, ours against BLAS's products alternated in one process:
// 1.14x at B = 16, 256/256 (1.12x of it from dh: W_hh read in place, which MKL packs per call; the weight
// gradients about level), 1.15x at 512/512, 1.30x at B = 8, 1.22x at 32; level at B = 64.

// dW_ih = dZᵀ·x, dW_hh = dZᵀ·h_{t-1} and db = Σ_rows dZ (WeightGradients) on cpu::thin_depth_gemm, the gate
// rows split over threads. Each thread first copies its rows of dZᵀ, contiguous along the batch, as the
// tiles' broadcast operand (dZ's own columns are G·H apart: every batch row in one L1 set), and sums them
// for db in the same pass, rows in order as column_sum does.
template <typename scalar_t>
void weight_gradients_pass(const WeightGradients<scalar_t>& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = p.rows, GH = p.gate_rows, I = p.input_size, P = p.state_size;
  const int64_t grain = std::max<int64_t>(8, (int64_t(1) << 16) / std::max<int64_t>(1, N * (I + P)));
  at::parallel_for(0, GH, grain, [&](int64_t m0, int64_t m1) {
    std::vector<scalar_t> grad_gates_t((m1 - m0) * N);  // dZᵀ[m0:m1, :]
    for (int64_t b = 0; b < N; ++b) {
      const scalar_t* row = p.grad_gates + b * GH;
      for (int64_t m = m0; m < m1; ++m) grad_gates_t[(m - m0) * N + b] = row[m];
    }
    for (int64_t m = m0; m < m1 && p.grad_bias; ++m) {
      acc_t sum(0);
      for (int64_t b = 0; b < N; ++b) sum += acc_t(grad_gates_t[(m - m0) * N + b]);
      p.grad_bias[m] = static_cast<scalar_t>(sum);
    }
    const cpu::MatrixA<scalar_t> a{grad_gates_t.data(), N, 1};
    cpu::thin_depth_gemm(a, m1 - m0, p.input, I, N, I, p.grad_weight_ih + m0 * I, I);
    cpu::thin_depth_gemm(a, m1 - m0, p.states, P, N, P, p.grad_weight_hh + m0 * P, P);
  });
}

// out = dZ·W (BackwardProduct: dh, or a cell's dx) on cpu::panel_gemm, W's rows read in place as panels along
// its columns, the panels split over threads.
template <typename scalar_t>
void backward_product_pass(const BackwardProduct<scalar_t>& p) {
  constexpr int64_t L = cpu::Simd<scalar_t>::lanes;
  const cpu::Panels<scalar_t> weight{p.weight, L, p.cols, p.gate_rows, p.cols};
  const int64_t panels = weight.count();
  const int64_t grain = std::max<int64_t>(3, (int64_t(1) << 16) / std::max<int64_t>(1, p.rows * p.gate_rows * L));
  at::parallel_for(0, panels, grain, [&](int64_t begin, int64_t end) {
    cpu::panel_gemm(cpu::MatrixA<scalar_t>{p.grad_gates, p.gate_rows, 1}, p.rows, weight, begin, end, p.out, p.cols,
                    false);
  });
}

// X·W_ihᵀ for every step at once (InputProjection) on cpu::panel_gemm: W_ihᵀ packed once, the rows split over
// threads; each element's sum runs in the same order whatever the split.
void input_projection_pass(const InputProjection<float>& p) {
  const auto options = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor packed = cpu::pack_transposed(p.weight_ih, p.gate_rows, p.input_size, options);
  const auto weight = cpu::packed_panels<float>(packed, p.gate_rows);
  const int64_t grain = std::max<int64_t>(16, (int64_t(1) << 16) / std::max<int64_t>(1, p.gate_rows * p.input_size));
  at::parallel_for(0, p.rows, grain, [&](int64_t begin, int64_t end) {
    cpu::panel_gemm(cpu::MatrixA<float>{p.input + begin * p.input_size, p.input_size, 1}, end - begin, weight, 0,
                    weight.count(), p.out + begin * p.gate_rows, p.gate_rows, false);
  });
}

// A hook of ours: pass(p) where takes(p), for float and double. The CPU refuses the half types before any
// hook, which only instantiate them; takes and pass are generic lambdas, so neither is compiled for those.
template <typename scalar_t, typename Params, typename Takes, typename Pass>
bool run_if(const Params& p, const Takes& takes, const Pass& pass) {
  if constexpr (std::is_floating_point_v<scalar_t>) {
    if (takes(p)) {
      pass(p);
      return true;
    }
  }
  return false;
}

struct CpuKernels {
  struct DeviceGuard {
    explicit DeviceGuard(const at::Tensor&) {}
  };

  // A forward that no backward follows writes no gates and cells (the sequence's and the step's passes).
  static constexpr bool kSkipsSavedState = true;

  // A padded sequence without a projection (a cell is one step): the loops above. The CPU's
  // packed-sequence and projected steps go through the driver's per-step products (BLAS).
  // A cell at a thin batch only (kCellKernelBatch).
  template <typename scalar_t>
  static bool cell_forward(const CellForward& p) {
    return run_if<scalar_t>(
        p, [](const auto& q) { return q.input.size(0) <= kCellKernelBatch<scalar_t>; },
        [](const auto& q) { cell_forward_pass<scalar_t>(q); });
  }

  // One step (a cell not taken by cell_forward) goes through the driver's BLAS products: packing
  // W_hh for a single product would cost more than it saves.
  template <typename scalar_t>
  static bool persistent_forward(const PersistentForward<scalar_t>& p) {
    return run_if<scalar_t>(p, [](const auto& q) { return q.steps >= 2; }, [](const auto& q) { sequence_forward(q); });
  }

  // The input projection of a float32 sequence of 128 rows or more. On a Zen 4 core (AVX-512), 256 inputs to
  // 1024 gate rows, this was 1.08-1.2x MKL's sgemm from 128 rows to 3200, packing W_ihᵀ included (0.08-0.16 ms
  // on two threads); at 64 rows the packing made it slower. float64 keeps BLAS's.
  template <typename scalar_t>
  static bool input_projection(const InputProjection<scalar_t>& p) {
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (p.rows < 128) return false;
      input_projection_pass(p);
      return true;
    }
    return false;
  }

  // A thin batch whose W rows are whole vectors (a partial last panel read in place would run past the
  // row) and less than 4 KiB apart: rows 4 KiB apart share one L1 set, and at H = 1024 reading W in place
  // lost to MKL's packing.
  template <typename scalar_t>
  static bool backward_product(const BackwardProduct<scalar_t>& p) {
    return run_if<scalar_t>(
        p,
        [](const auto& q) {
          const int64_t row_bytes = q.cols * int64_t(sizeof(scalar_t));
          return q.rows <= kCellKernelBatch<scalar_t> && row_bytes % cpu::kVectorBytes == 0 && row_bytes < 4096;
        },
        [](const auto& q) { backward_product_pass(q); });
  }

  template <typename scalar_t>
  static bool weight_gradients(const WeightGradients<scalar_t>& p) {
    return run_if<scalar_t>(
        p, [](const auto& q) { return q.rows <= kCellKernelBatch<scalar_t>; },
        [](const auto& q) { weight_gradients_pass(q); });
  }

  template <typename scalar_t>
  static bool persistent_backward(const PersistentBackward<scalar_t>& p) {
    return run_if<scalar_t>(p, [](const auto& q) { return q.steps >= 2; }, [](const auto& q) { sequence_backward(q); });
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
    const auto row = s.gates ? lstm_forward_row<scalar_t, true> : lstm_forward_row<scalar_t, false>;
    at::parallel_for(0, s.rows, row_grain(4 * s.hidden), [&](int64_t begin, int64_t end) {
      const int64_t H = s.hidden;
      for (int64_t b = begin; b < end; ++b) {
        row(s.input_proj + b * 4 * H, s.hidden_proj + b * 4 * H, s.bias, s.c_state + b * H,
            s.gates ? s.gates + b * 4 * H : nullptr, s.cells ? s.cells + b * H : nullptr, s.hidden_out + b * H, H, H);
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
            s.grad_gates + b * 4 * H, has_out ? s.hidden_out + b * H : nullptr, H, H);
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
