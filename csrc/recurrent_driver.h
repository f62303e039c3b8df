// dlunits — the recurrence of one RNN or LSTM layer and direction, forward and
// backward through time, written once for every device.
//
// The driver orders the steps and issues the matrix products; the arithmetic of
// each step is one fused pass that a device supplies (Kernels, below): the CPU's
// in csrc/cpu/recurrent.cpp, CUDA's in csrc/cuda/recurrent.cu. A cell (rnn_cell,
// lstm_cell) is the one-step case.
//
// Forward, with the packed layout of recurrent_checks.h (rows of step t at
// offsets[t], batch_sizes[t] of them, a non-increasing batch):
//   X  = x · W_ihᵀ                                   [N, G·H]   one product for all steps
//   per step t (reverse: t = T-1 … 0), on its first B_t rows of the state:
//     A  = h_{t-1} · W_hhᵀ                           [B_t, G·H]
//     fused: z = X_t + A + b_ih + b_hh
//       RNN   h_t = tanh(z) or relu(z)
//       LSTM  i, f, g, o = σ(z_i), σ(z_f), tanh(z_g), σ(z_o)
//             c_t = f ⊙ c_{t-1} + i ⊙ g,   h_t = o ⊙ tanh(c_t)
//     LSTM with a projection: h_t = (o ⊙ tanh(c_t)) · W_hrᵀ   [B_t, P]
//   A sequence that has ended keeps its last state in the state rows past B_t,
//   which is h_n; in reverse a sequence starts from h0 when its rows join.
// Backward through time, in the opposite order, with dh and dc the state
// gradients (initially grad_h_n, grad_c_n):
//     dh_t = grad_output_t + dh                       (· W_hr first with a projection)
//     fused: RNN   dz = dh_t ⊙ act'(h_t)
//            LSTM  dc = dc + dh_t ⊙ o ⊙ (1 - tanh²c_t);  dz_i = dc·g·i(1-i),  dz_f = dc·c_{t-1}·f(1-f),
//                  dz_g = dc·i·(1-g²),  dz_o = dh_t·tanh(c_t)·o(1-o);  dc ← dc ⊙ f
//     dh = dZ_t · W_hh
//   then, for all steps at once: dx = dZ · W_ih, dW_ih = dZᵀ · x, dW_hh = dZᵀ · h_prev,
//   db = Σ_rows dZ (db_ih = db_hh), dW_hr = dh_totalᵀ · (o ⊙ tanh c).
//   The backward ops' output_mask, as ATen's: (the input's gradient, the weights' and biases'); a
//   product nobody asked for is not run, and its output comes back with no rows (dx is a third of a
//   layer's backward products, and of a cell's four one).
//
// The matrix products issued here go through at::mm / at::mm_out (BLAS on the
// CPU, cuBLAS on CUDA), as the project allows for the gate pre-activations and
// their gradients; the gate arithmetic, the state updates and the bias reduction
// are ours (the Kernels). A device may take over the recurrence of a padded
// sequence (persistent_forward / persistent_backward: CUDA's cooperative kernels,
// the CPU's own tiled products), or a whole cell step forward (cell_forward: the CPU;
// CUDA's fused cell when opted in).
//
// Cost per layer and direction (N = Σ B_t rows): 2·N·G·H·(I + P) FLOPs for the
// products forward (plus 2·N·P·H with a projection) and twice that backward;
// the fused passes are O(N·G·H). Bytes: x, the weights, and the outputs once;
// the saved gates (N·G·H) and cells (N·H) for the backward.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>

#include "recurrent_checks.h"

namespace dlunits {

// --- the fused step passes a device provides --------------------------------------------------------------------
//
// Each takes the first `rows` rows of its matrices (row-major, contiguous) and
// touches only those; pointers marked "or null" may be null.

template <typename scalar_t>
struct RnnForwardStep {
  const scalar_t* input_proj;  // [rows, H]  X_t
  const scalar_t* hidden_proj; // [rows, H]  h_{t-1} · W_hhᵀ
  const scalar_t* bias;        // [H]        b_ih + b_hh (zeros without a bias)
  scalar_t* output;            // [rows, H]  out: h_t
  scalar_t* h_state;           // [rows, H]  out: h_t
  int64_t rows, hidden;
  RnnActivation activation;
};

template <typename scalar_t>
struct RnnBackwardStep {
  const scalar_t* grad_output;  // [rows, H]  gradient reaching h_t from the layer's output
  const scalar_t* grad_state;   // [rows, H]  gradient reaching h_t from step t+1
  const scalar_t* output;       // [rows, H]  h_t
  scalar_t* grad_gates;         // [rows, H]  out: dz
  int64_t rows, hidden;
  RnnActivation activation;
};

template <typename scalar_t>
struct LstmForwardStep {
  const scalar_t* input_proj;   // [rows, 4H]  X_t
  const scalar_t* hidden_proj;  // [rows, 4H]  h_{t-1} · W_hhᵀ
  const scalar_t* bias;         // [4H]        b_ih + b_hh (zeros without a bias)
  scalar_t* c_state;            // [rows, H]   in: c_{t-1}, out: c_t
  scalar_t* gates;              // [rows, 4H]  out: i, f, g, o (activated), or null (not saved*)
  scalar_t* cells;              // [rows, H]   out: c_t, or null (not saved*)
  scalar_t* hidden_out;         // [rows, H]   out: o ⊙ tanh(c_t) (h_t without a projection)
  scalar_t* h_state;            // [rows, H]   out: h_t, or null (with a projection the driver sets it)
  int64_t rows, hidden;
};

template <typename scalar_t>
struct LstmBackwardStep {
  const scalar_t* grad_hidden;  // [rows, H]  gradient reaching o ⊙ tanh(c_t) ...
  const scalar_t* grad_state;   // [rows, H]  ... plus this, or null
  const scalar_t* gates;        // [rows, 4H] i, f, g, o of step t
  const scalar_t* cells;        // [rows, H]  c_t
  const scalar_t* c_prev;       // c_{t-1}: row b of c_prev for b < c_prev_rows ...
  int64_t c_prev_rows;
  const scalar_t* c0;           // ... row b of c0 otherwise
  scalar_t* grad_c_state;       // [rows, H]  in: dc_t, out: dc_{t-1}
  scalar_t* grad_gates;         // [rows, 4H] out: dz_i, dz_f, dz_g, dz_o
  scalar_t* hidden_out;         // [rows, H]  out: o ⊙ tanh(c_t), or null (needed for dW_hr)
  int64_t rows, hidden;
};

// The whole forward recurrence of a padded sequence without a projection, for a
// device that runs it itself (Kernels::persistent_forward returns false
// where it cannot, and the driver steps instead). input_proj holds X for every step.
template <typename scalar_t>
struct PersistentForward {
  const scalar_t* input_proj;  // [T·B, G·H]
  const scalar_t* bias;        // [G·H]
  const scalar_t* weight_hh;   // [G·H, H]
  const scalar_t* h0;          // [B, H]
  scalar_t* h_state;           // [B, H]  out: h_n
  scalar_t* c_state;           // [B, H]  in: c0, out: c_n (LSTM)
  scalar_t* output;            // [T·B, H]
  scalar_t* gates;             // [T·B, 4H] (LSTM), or null (not saved*)
  scalar_t* cells;             // [T·B, H]  (LSTM), or null (not saved*)
  int64_t steps, batch, hidden, gate_count;
  bool reverse;
  RnnActivation activation;
};
// * Null only for a device whose Kernels::kSkipsSavedState is true, in a forward that no backward
//   will follow (lstm_layer's save=False); other devices get scratch buffers instead.

// The whole backward through time of a padded sequence without a projection, where a
// device runs it itself (Kernels::persistent_backward returns false otherwise):
// every step's dZ, and the gradients of the initial states.
template <typename scalar_t>
struct PersistentBackward {
  const scalar_t* grad_output;  // [T·B, H]
  const scalar_t* output;       // [T·B, H]   h_t (the RNN's derivative reads it)
  const scalar_t* gates;        // [T·B, 4H]  (LSTM)
  const scalar_t* cells;        // [T·B, H]   (LSTM)
  const scalar_t* c0;           // [B, H]     (LSTM)
  const scalar_t* weight_hh;    // [G·H, H]
  scalar_t* grad_h;             // [B, H]     in: grad_h_n, out: grad_h0
  scalar_t* grad_c;             // [B, H]     in: grad_c_n, out: grad_c0 (LSTM)
  scalar_t* grad_gates;         // [T·B, G·H] out: dZ
  int64_t steps, batch, hidden, gate_count;
  bool reverse;
  RnnActivation activation;
};

// One step of a layer without a projection (a cell), products included, for a device that
// runs it whole (Kernels::cell_forward returns false where it does not). It reads h0 and c0 and
// writes h_n and c_n (allocated, not initialised), as well as the output, gates and cells.
struct CellForward {
  const at::Tensor& input;      // [B, I]
  const at::Tensor& weight_ih;  // [G·H, I]
  const at::Tensor& weight_hh;  // [G·H, H]
  const at::Tensor& bias_ih;    // [G·H], or undefined
  const at::Tensor& bias_hh;    // [G·H], or undefined
  const at::Tensor& h0;         // [B, H]
  const at::Tensor& c0;         // [B, H]   (LSTM)
  at::Tensor& output;           // [B, H]   out: h_1
  at::Tensor& h_n;              // [B, H]   out: h_1
  at::Tensor& c_n;              // [B, H]   out: c_1 (LSTM)
  at::Tensor& gates;            // [B, 4H]  out (LSTM)
  at::Tensor& cells;            // [B, H]   out: c_1 (LSTM)
  RnnActivation activation;
};

// Every step's input projection at once, out = X·W_ihᵀ ([rows, I] by [I, G·H]), for a device that computes
// it itself (Kernels::input_projection returns false where it does not, and the driver takes a product).
template <typename scalar_t>
struct InputProjection {
  const scalar_t* input;      // [rows, I]
  const scalar_t* weight_ih;  // [G·H, I]
  scalar_t* out;              // [rows, G·H]
  int64_t rows, gate_rows, input_size;
};

// out = dZ·W ([rows, G·H] by [G·H, cols]): a step's state gradient dh (W = W_hh) or a layer's input
// gradient dx (W = W_ih), for a device that computes it itself (Kernels::backward_product returns false
// where it does not, and the driver takes a product).
template <typename scalar_t>
struct BackwardProduct {
  const scalar_t* grad_gates;  // [rows, G·H] dZ
  const scalar_t* weight;      // [G·H, cols]
  scalar_t* out;               // [rows, cols]
  int64_t rows, gate_rows, cols;
};

// A layer's weight and bias gradients, for a device that computes them itself (Kernels::weight_gradients
// returns false where it does not, and the driver takes two products and a column sum):
// dW_ih = dZᵀ·x, dW_hh = dZᵀ·h_{t-1} and db = Σ_rows dZ, each `rows` deep.
template <typename scalar_t>
struct WeightGradients {
  const scalar_t* grad_gates;  // [rows, G·H] dZ
  const scalar_t* input;       // [rows, I]
  const scalar_t* states;      // [rows, P]   h_{t-1} of every row
  scalar_t* grad_weight_ih;    // [G·H, I]    out
  scalar_t* grad_weight_hh;    // [G·H, P]    out
  scalar_t* grad_bias;         // [G·H]       out, or null (no bias)
  int64_t rows, gate_rows, input_size, state_size;
};

// --- results -------------------------------------------------------------------------------------------------------

struct RecurrentForward {
  at::Tensor output;  // [N, P]
  at::Tensor h_n;     // [B, P]
  at::Tensor c_n;     // [B, H] (LSTM)
  at::Tensor gates;   // [N, 4H] (LSTM; the RNN's backward reads its output)
  at::Tensor cells;   // [N, H]  (LSTM)
};

struct RecurrentBackward {
  at::Tensor grad_input, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias, grad_weight_hr;
};

// out = a · b into a view of a larger buffer (at::mm_out wants an lvalue). Every product here goes
// through mm_out: under torch.autocast, the functional at::mm would be cast to lower precision too
// (the autocast kernels of dlunits' ops run with autocast off, but backward ops may not).
inline void mm_into(at::Tensor out, const at::Tensor& a, const at::Tensor& b) { at::mm_out(out, a, b); }

// b_ih + b_hh once per call, so that each step reads one bias vector (zeros without
// a bias, so that the step passes have no branch on it).
inline at::Tensor combined_bias(const at::Tensor& bias_ih, const at::Tensor& bias_hh, int64_t size,
                                const at::TensorOptions& options) {
  if (bias_ih.defined() && bias_hh.defined()) return bias_ih + bias_hh;
  if (bias_ih.defined()) return bias_ih.contiguous();
  if (bias_hh.defined()) return bias_hh.contiguous();
  return at::zeros({size}, options);
}

// The step that runs before step t in the forward pass, or -1 for none.
inline int64_t previous_step(const RecurrentGeometry& g, int64_t t, bool reverse) {
  const int64_t prev = reverse ? t + 1 : t - 1;
  return prev >= 0 && prev < g.steps() ? prev : -1;
}

// h_{t-1} of every row, in the input's layout: the previous step's output where
// that sequence ran the previous step, its initial state where it starts at t.
inline at::Tensor previous_states(const RecurrentGeometry& g, const at::Tensor& output, const at::Tensor& h0,
                                  bool reverse) {
  const int64_t N = g.rows, B = g.batch;
  if (g.steps() == 1) return h0;  // a cell
  at::Tensor h_prev = at::empty({N, g.state_size}, h0.options());
  if (g.uniform) {  // two block copies
    const int64_t first = reverse ? N - B : 0;
    h_prev.narrow(0, first, B).copy_(h0);
    if (N > B) h_prev.narrow(0, reverse ? 0 : B, N - B).copy_(output.narrow(0, reverse ? B : 0, N - B));
    return h_prev;
  }
  for (int64_t t = 0; t < g.steps(); ++t) {
    const int64_t rows = g.batch_sizes[t], off = g.offsets[t], prev = previous_step(g, t, reverse);
    const int64_t carried = prev >= 0 ? std::min(rows, g.batch_sizes[prev]) : 0;
    if (carried > 0) h_prev.narrow(0, off, carried).copy_(output.narrow(0, g.offsets[prev], carried));
    if (carried < rows) h_prev.narrow(0, off + carried, rows - carried).copy_(h0.narrow(0, carried, rows - carried));
  }
  return h_prev;
}

// Forward of one layer and direction. Tensors contiguous; c0, biases and w_hr may be undefined.
// Without `save` (no backward will follow) the LSTM's gates and cells come back with no rows: a device
// with Kernels::kSkipsSavedState computes without writing them, any other writes them to scratch.
template <typename scalar_t, typename Kernels>
RecurrentForward recurrent_forward(const RecurrentGeometry& g, RnnActivation activation, const at::Tensor& input,
                                   const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_ih,
                                   const at::Tensor& weight_hh, const at::Tensor& bias_ih,
                                   const at::Tensor& bias_hh, const at::Tensor& weight_hr, bool reverse,
                                   bool save = true) {
  const bool lstm = g.gates == 4;
  const int64_t H = g.hidden_size, P = g.state_size, GH = g.gates * H, N = g.rows;
  const bool cell = N > 0 && g.steps() == 1 && !g.projected();  // a cell: h_n and c_n need no copy of h0, c0
  const auto options = input.options();
  RecurrentForward f;
  f.output = at::empty({N, P}, options);
  at::Tensor gates, cells;  // where the gates and cells are written: f.gates and f.cells, scratch, or nowhere
  if (lstm) {
    f.gates = at::empty({save ? N : 0, GH}, options);
    f.cells = at::empty({save ? N : 0, H}, options);
    const bool scratch = !save && (cell || !Kernels::kSkipsSavedState);  // the cell's few rows always have one
    gates = scratch ? at::empty({N, GH}, options) : f.gates;
    cells = scratch ? at::empty({N, H}, options) : f.cells;
  }
  scalar_t* const gates_out = gates.defined() && gates.size(0) > 0 ? gates.mutable_data_ptr<scalar_t>() : nullptr;
  scalar_t* const cells_out = cells.defined() && cells.size(0) > 0 ? cells.mutable_data_ptr<scalar_t>() : nullptr;
  if (cell) {
    f.h_n = at::empty_like(h0, at::MemoryFormat::Contiguous);
    if (lstm) f.c_n = at::empty_like(c0, at::MemoryFormat::Contiguous);
    if (Kernels::template cell_forward<scalar_t>(CellForward{input, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0,
                                                             f.output, f.h_n, f.c_n, gates, cells, activation})) {
      return f;
    }
    f.h_n.copy_(h0);
    if (lstm) f.c_n.copy_(c0);
  } else {
    f.h_n = h0.clone(at::MemoryFormat::Contiguous);
    if (lstm) f.c_n = c0.clone(at::MemoryFormat::Contiguous);
  }
  if (N == 0) return f;

  const at::Tensor bias = combined_bias(bias_ih, bias_hh, GH, options);
  const at::Tensor input_proj = at::empty({N, GH}, options);
  if (!Kernels::input_projection(InputProjection<scalar_t>{input.const_data_ptr<scalar_t>(),  // every step's
                                                          weight_ih.const_data_ptr<scalar_t>(),  // W_ih x_t at once
                                                          input_proj.mutable_data_ptr<scalar_t>(), N, GH,
                                                          g.input_size})) {
    mm_into(input_proj, input, weight_ih.t());
  }
  const at::Tensor weight_hh_t = weight_hh.t();
  at::Tensor hidden_proj = at::empty({g.batch, GH}, options);
  at::Tensor unprojected = g.projected() ? at::empty({g.batch, H}, options) : at::Tensor();

  const scalar_t* x_proj = input_proj.const_data_ptr<scalar_t>();
  scalar_t* output = f.output.mutable_data_ptr<scalar_t>();
  scalar_t* h_state = f.h_n.mutable_data_ptr<scalar_t>();
  if (g.uniform && !g.projected() &&
      Kernels::persistent_forward(PersistentForward<scalar_t>{
          x_proj, bias.const_data_ptr<scalar_t>(), weight_hh.const_data_ptr<scalar_t>(), h0.const_data_ptr<scalar_t>(),
          h_state, lstm ? f.c_n.mutable_data_ptr<scalar_t>() : nullptr, output, gates_out, cells_out, g.steps(),
          g.batch, H, g.gates, reverse, activation})) {
    return f;
  }
  for (int64_t s = 0; s < g.steps(); ++s) {
    const int64_t t = reverse ? g.steps() - 1 - s : s;
    const int64_t rows = g.batch_sizes[t], off = g.offsets[t];
    mm_into(hidden_proj.narrow(0, 0, rows), f.h_n.narrow(0, 0, rows), weight_hh_t);
    if (!lstm) {
      Kernels::rnn_forward_step(RnnForwardStep<scalar_t>{
          x_proj + off * GH, hidden_proj.const_data_ptr<scalar_t>(), bias.const_data_ptr<scalar_t>(),
          output + off * P, h_state, rows, H, activation});
      continue;
    }
    Kernels::lstm_forward_step(LstmForwardStep<scalar_t>{
        x_proj + off * GH, hidden_proj.const_data_ptr<scalar_t>(), bias.const_data_ptr<scalar_t>(),
        f.c_n.mutable_data_ptr<scalar_t>(), gates_out ? gates_out + off * GH : nullptr,
        cells_out ? cells_out + off * H : nullptr,
        g.projected() ? unprojected.mutable_data_ptr<scalar_t>() : output + off * P,
        g.projected() ? nullptr : h_state, rows, H});
    if (g.projected()) {
      at::Tensor h_t = f.output.narrow(0, off, rows);
      at::mm_out(h_t, unprojected.narrow(0, 0, rows), weight_hr.t());
      f.h_n.narrow(0, 0, rows).copy_(h_t);
    }
  }
  return f;
}

// Backward through time of one layer and direction. Tensors contiguous; grad_h_n,
// grad_c_n, c0 and w_hr may be undefined (zero gradients; no cell; no projection).
template <typename scalar_t, typename Kernels>
RecurrentBackward recurrent_backward(const RecurrentGeometry& g, RnnActivation activation,
                                     const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                                     const at::Tensor& grad_c_n, const at::Tensor& input, const at::Tensor& h0,
                                     const at::Tensor& c0, const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                     const at::Tensor& weight_hr, const at::Tensor& output, const at::Tensor& gates,
                                     const at::Tensor& cells, bool reverse, bool has_bias,
                                     std::array<bool, 2> output_mask) {
  const bool lstm = g.gates == 4;
  const int64_t H = g.hidden_size, P = g.state_size, GH = g.gates * H, N = g.rows;
  const auto options = input.options();
  const bool input_grad = output_mask[0], weight_grads = output_mask[1];
  RecurrentBackward r;
  at::Tensor grad_gates = at::empty({N, GH}, options);
  r.grad_input = at::empty({input_grad ? N : 0, g.input_size}, options);
  r.grad_weight_ih = at::empty({weight_grads ? GH : 0, g.input_size}, options);
  r.grad_weight_hh = at::empty({weight_grads ? GH : 0, P}, options);
  r.grad_bias = at::empty({has_bias && weight_grads ? GH : 0}, options);
  r.grad_weight_hr = g.projected() ? at::empty({weight_grads ? P : 0, H}, options) : at::empty({0}, options);
  // dh and dc: the gradient reaching the state, row b of the sequence in batch row b. An LSTM cell
  // (one step, no projection) given no grad_h_n reads none: its step pass adds no dh, and the product
  // after it writes every row of grad_h0.
  const bool no_state_gradient = lstm && g.steps() == 1 && !g.projected() && !grad_h_n.defined();
  r.grad_h0 = grad_h_n.defined() ? grad_h_n.clone(at::MemoryFormat::Contiguous)
                                 : (no_state_gradient ? at::empty_like(h0, at::MemoryFormat::Contiguous)
                                                      : at::zeros_like(h0));
  if (lstm) r.grad_c0 = grad_c_n.defined() ? grad_c_n.clone(at::MemoryFormat::Contiguous) : at::zeros_like(c0);
  if (N == 0) {  // an empty batch: the states' gradients pass through, the weights' are zero
    for (at::Tensor* t : {&r.grad_weight_ih, &r.grad_weight_hh, &r.grad_bias, &r.grad_weight_hr}) t->zero_();
    return r;
  }
  at::Tensor grad_hidden_total, unprojected, grad_unprojected;  // with a projection
  if (g.projected()) {
    grad_hidden_total = at::empty({N, P}, options);
    unprojected = at::empty({N, H}, options);
    grad_unprojected = at::empty({g.batch, H}, options);
  }

  const scalar_t* grad_out = grad_output.const_data_ptr<scalar_t>();
  scalar_t* dz = grad_gates.mutable_data_ptr<scalar_t>();
  scalar_t* dh = r.grad_h0.mutable_data_ptr<scalar_t>();
  const bool persistent =
      g.uniform && !g.projected() &&
      Kernels::persistent_backward(PersistentBackward<scalar_t>{
          grad_out, output.defined() ? output.const_data_ptr<scalar_t>() : nullptr, lstm ? gates.const_data_ptr<scalar_t>() : nullptr,
          lstm ? cells.const_data_ptr<scalar_t>() : nullptr, lstm ? c0.const_data_ptr<scalar_t>() : nullptr,
          weight_hh.const_data_ptr<scalar_t>(), dh, lstm ? r.grad_c0.mutable_data_ptr<scalar_t>() : nullptr, dz,
          g.steps(), g.batch, H, g.gates, reverse, activation});
  for (int64_t s = 0; s < (persistent ? 0 : g.steps()); ++s) {
    const int64_t t = reverse ? s : g.steps() - 1 - s;
    const int64_t rows = g.batch_sizes[t], off = g.offsets[t];
    if (!lstm) {
      Kernels::rnn_backward_step(RnnBackwardStep<scalar_t>{grad_out + off * P, dh,
                                                           output.const_data_ptr<scalar_t>() + off * P,
                                                           dz + off * GH, rows, H, activation});
    } else {
      const int64_t prev = previous_step(g, t, reverse);
      LstmBackwardStep<scalar_t> step{grad_out + off * P, no_state_gradient ? nullptr : dh,
                                      gates.const_data_ptr<scalar_t>() + off * GH,
                                      cells.const_data_ptr<scalar_t>() + off * H,
                                      prev >= 0 ? cells.const_data_ptr<scalar_t>() + g.offsets[prev] * H : nullptr,
                                      prev >= 0 ? std::min(rows, g.batch_sizes[prev]) : 0,
                                      c0.const_data_ptr<scalar_t>(), r.grad_c0.mutable_data_ptr<scalar_t>(),
                                      dz + off * GH, nullptr, rows, H};
      if (g.projected()) {
        at::Tensor dh_t = grad_hidden_total.narrow(0, off, rows);
        at::add_out(dh_t, grad_output.narrow(0, off, rows), r.grad_h0.narrow(0, 0, rows));
        mm_into(grad_unprojected.narrow(0, 0, rows), dh_t, weight_hr);
        step.grad_hidden = grad_unprojected.const_data_ptr<scalar_t>();
        step.grad_state = nullptr;
        step.hidden_out = unprojected.mutable_data_ptr<scalar_t>() + off * H;
      }
      Kernels::lstm_backward_step(step);
    }
    if (!Kernels::backward_product(
            BackwardProduct<scalar_t>{dz + off * GH, weight_hh.const_data_ptr<scalar_t>(), dh, rows, GH, P})) {
      mm_into(r.grad_h0.narrow(0, 0, rows), grad_gates.narrow(0, off, rows), weight_hh);
    }
  }

  if (input_grad && !Kernels::backward_product(BackwardProduct<scalar_t>{
                        dz, weight_ih.const_data_ptr<scalar_t>(), r.grad_input.mutable_data_ptr<scalar_t>(), N,
                        GH, g.input_size})) {
    mm_into(r.grad_input, grad_gates, weight_ih);
  }
  if (!weight_grads) return r;
  const at::Tensor states = previous_states(g, output, h0, reverse);
  scalar_t* grad_bias = has_bias ? r.grad_bias.mutable_data_ptr<scalar_t>() : nullptr;
  if (!Kernels::weight_gradients(WeightGradients<scalar_t>{
          dz, input.const_data_ptr<scalar_t>(), states.const_data_ptr<scalar_t>(),
          r.grad_weight_ih.mutable_data_ptr<scalar_t>(), r.grad_weight_hh.mutable_data_ptr<scalar_t>(), grad_bias, N,
          GH, g.input_size, P})) {
    mm_into(r.grad_weight_ih, grad_gates.t(), input);
    mm_into(r.grad_weight_hh, grad_gates.t(), states);
    if (has_bias) Kernels::column_sum(dz, N, GH, grad_bias);
  }
  if (g.projected()) mm_into(r.grad_weight_hr, grad_hidden_total.t(), unprojected);
  return r;
}

// --- the ops, for a device's Kernels (registered in csrc/cpu/recurrent.cpp and csrc/cuda/recurrent.cu) -----------
// Kernels::DeviceGuard makes the input's device current (CUDA) once the arguments are checked.

inline at::Tensor defined_or_empty(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() ? t->contiguous() : at::Tensor();
}

#define DLUNITS_DISPATCH_RECURRENT(dtype, name, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, name, __VA_ARGS__)

template <typename Kernels>
std::tuple<at::Tensor, at::Tensor> rnn_layer_op(const at::Tensor& input, const at::Tensor& h0,
                                                const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                                const std::optional<at::Tensor>& bias_ih,
                                                const std::optional<at::Tensor>& bias_hh,
                                                at::IntArrayRef batch_sizes, bool reverse,
                                                c10::string_view nonlinearity) {
  const char* op = "dlunits.rnn_layer";
  const auto activation = rnn_activation_from_string(op, nonlinearity);
  const auto g = layer_steps(
      check_recurrent_layer(op, 1, input, h0, nullptr, weight_ih, weight_hh, bias_ih, bias_hh, std::nullopt,
                            batch_sizes),
      input, h0, batch_sizes);
  const typename Kernels::DeviceGuard guard(input);
  RecurrentForward f;
  DLUNITS_DISPATCH_RECURRENT(input.scalar_type(), "rnn_layer", [&] {
    f = recurrent_forward<scalar_t, Kernels>(g, activation, input.contiguous(), h0.contiguous(), at::Tensor(),
                                             weight_ih.contiguous(), weight_hh.contiguous(),
                                             defined_or_empty(bias_ih), defined_or_empty(bias_hh), at::Tensor(),
                                             reverse);
  });
  return {f.output, f.h_n};
}

template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_layer_backward_op(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& input, const at::Tensor& h0,
    const at::Tensor& weight_ih, const at::Tensor& weight_hh, const at::Tensor& output, at::IntArrayRef batch_sizes,
    bool reverse, c10::string_view nonlinearity, bool has_bias, std::array<bool, 2> output_mask) {
  const char* op = "dlunits.rnn_layer_backward";
  const auto activation = rnn_activation_from_string(op, nonlinearity);
  const auto g = layer_steps(
      check_recurrent_layer(op, 1, input, h0, nullptr, weight_ih, weight_hh, std::nullopt, std::nullopt, std::nullopt,
                            batch_sizes),
      input, h0, batch_sizes);
  const typename Kernels::DeviceGuard guard(input);
  check_backward_tensor(op, input, "grad_output", grad_output, {g.rows, g.state_size});
  check_backward_tensor(op, input, "grad_h_n", grad_h_n, {g.batch, g.state_size});
  check_backward_tensor(op, input, "output", output, {g.rows, g.state_size});
  RecurrentBackward r;
  DLUNITS_DISPATCH_RECURRENT(input.scalar_type(), "rnn_layer_backward", [&] {
    r = recurrent_backward<scalar_t, Kernels>(g, activation, grad_output.contiguous(), grad_h_n, at::Tensor(),
                                              input.contiguous(), h0.contiguous(), at::Tensor(),
                                              weight_ih.contiguous(), weight_hh.contiguous(), at::Tensor(),
                                              output.contiguous(), at::Tensor(), at::Tensor(), reverse, has_bias,
                                              output_mask);
  });
  return {r.grad_input, r.grad_h0, r.grad_weight_ih, r.grad_weight_hh, r.grad_bias};
}

template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_op(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
    const std::optional<at::Tensor>& weight_hr, at::IntArrayRef batch_sizes, bool reverse, bool save) {
  const char* op = "dlunits.lstm_layer";
  const auto g = layer_steps(
      check_recurrent_layer(op, 4, input, h0, &c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, batch_sizes),
      input, h0, batch_sizes);
  const typename Kernels::DeviceGuard guard(input);
  RecurrentForward f;
  DLUNITS_DISPATCH_RECURRENT(input.scalar_type(), "lstm_layer", [&] {
    f = recurrent_forward<scalar_t, Kernels>(g, RnnActivation::Tanh, input.contiguous(), h0.contiguous(),
                                             c0.contiguous(), weight_ih.contiguous(), weight_hh.contiguous(),
                                             defined_or_empty(bias_ih), defined_or_empty(bias_hh),
                                             defined_or_empty(weight_hr), reverse, save);
  });
  return {f.output, f.h_n, f.c_n, f.gates, f.cells};
}

template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_backward_op(const at::Tensor& grad_output, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
                       const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
                       const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                       const std::optional<at::Tensor>& weight_hr, const at::Tensor& output, const at::Tensor& gates,
                       const at::Tensor& cells, at::IntArrayRef batch_sizes, bool reverse, bool has_bias,
                       std::array<bool, 2> output_mask) {
  const char* op = "dlunits.lstm_layer_backward";
  const auto g = layer_steps(
      check_recurrent_layer(op, 4, input, h0, &c0, weight_ih, weight_hh, std::nullopt, std::nullopt, weight_hr,
                            batch_sizes),
      input, h0, batch_sizes);
  const typename Kernels::DeviceGuard guard(input);
  check_backward_tensor(op, input, "grad_output", grad_output, {g.rows, g.state_size});
  check_backward_tensor(op, input, "grad_h_n", grad_h_n, {g.batch, g.state_size});
  check_backward_tensor(op, input, "grad_c_n", grad_c_n, {g.batch, g.hidden_size});
  check_backward_tensor(op, input, "output", output, {g.rows, g.state_size});
  check_backward_tensor(op, input, "gates", gates, {g.rows, 4 * g.hidden_size});
  check_backward_tensor(op, input, "cells", cells, {g.rows, g.hidden_size});
  RecurrentBackward r;
  DLUNITS_DISPATCH_RECURRENT(input.scalar_type(), "lstm_layer_backward", [&] {
    r = recurrent_backward<scalar_t, Kernels>(g, RnnActivation::Tanh, grad_output.contiguous(), grad_h_n,
                                              grad_c_n, input.contiguous(), h0.contiguous(), c0.contiguous(),
                                              weight_ih.contiguous(), weight_hh.contiguous(),
                                              defined_or_empty(weight_hr), output.contiguous(), gates.contiguous(),
                                              cells.contiguous(), reverse, has_bias, output_mask);
  });
  return {r.grad_input, r.grad_h0, r.grad_c0, r.grad_weight_ih, r.grad_weight_hh, r.grad_bias, r.grad_weight_hr};
}

// The cells are the one-step layers: batch_sizes = [B].

template <typename Kernels>
at::Tensor rnn_cell_op(const at::Tensor& input, const at::Tensor& hx, const at::Tensor& weight_ih,
                       const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih,
                       const std::optional<at::Tensor>& bias_hh, c10::string_view nonlinearity) {
  const char* op = "dlunits.rnn_cell";
  const auto activation = rnn_activation_from_string(op, nonlinearity);
  const auto g = cell_steps(
      check_recurrent_cell(op, 1, input, hx, nullptr, weight_ih, weight_hh, bias_ih, bias_hh), input);
  const typename Kernels::DeviceGuard guard(input);
  RecurrentForward f;
  DLUNITS_DISPATCH_RECURRENT(input.scalar_type(), "rnn_cell", [&] {
    f = recurrent_forward<scalar_t, Kernels>(g, activation, input.contiguous(), hx.contiguous(), at::Tensor(),
                                             weight_ih.contiguous(), weight_hh.contiguous(),
                                             defined_or_empty(bias_ih), defined_or_empty(bias_hh), at::Tensor(),
                                             false);
  });
  return f.output;
}

template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_cell_backward_op(
    const at::Tensor& grad_hy, const at::Tensor& input, const at::Tensor& hx, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const at::Tensor& hy, c10::string_view nonlinearity, bool has_bias,
    std::array<bool, 2> output_mask) {
  const char* op = "dlunits.rnn_cell_backward";
  const auto activation = rnn_activation_from_string(op, nonlinearity);
  const auto g = cell_steps(
      check_recurrent_cell(op, 1, input, hx, nullptr, weight_ih, weight_hh, std::nullopt, std::nullopt), input);
  const typename Kernels::DeviceGuard guard(input);
  check_backward_tensor(op, input, "grad_hy", grad_hy, {g.rows, g.hidden_size});
  check_backward_tensor(op, input, "hy", hy, {g.rows, g.hidden_size});
  RecurrentBackward r;
  DLUNITS_DISPATCH_RECURRENT(input.scalar_type(), "rnn_cell_backward", [&] {
    r = recurrent_backward<scalar_t, Kernels>(g, activation, grad_hy.contiguous(), at::Tensor(), at::Tensor(),
                                              input.contiguous(), hx.contiguous(), at::Tensor(),
                                              weight_ih.contiguous(), weight_hh.contiguous(), at::Tensor(),
                                              hy.contiguous(), at::Tensor(), at::Tensor(), false, has_bias,
                                              output_mask);
  });
  return {r.grad_input, r.grad_h0, r.grad_weight_ih, r.grad_weight_hh, r.grad_bias};
}

// Returns hy, cy, and for the backward the gates and a copy of cy (cells), so that the caller may
// change cy in place, as torch's LSTMCell allows.
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_cell_op(const at::Tensor& input, const at::Tensor& hx,
                                                            const at::Tensor& cx, const at::Tensor& weight_ih,
                                                            const at::Tensor& weight_hh,
                                                            const std::optional<at::Tensor>& bias_ih,
                                                            const std::optional<at::Tensor>& bias_hh) {
  const char* op = "dlunits.lstm_cell";
  const auto g = cell_steps(
      check_recurrent_cell(op, 4, input, hx, &cx, weight_ih, weight_hh, bias_ih, bias_hh), input);
  const typename Kernels::DeviceGuard guard(input);
  RecurrentForward f;
  DLUNITS_DISPATCH_RECURRENT(input.scalar_type(), "lstm_cell", [&] {
    f = recurrent_forward<scalar_t, Kernels>(g, RnnActivation::Tanh, input.contiguous(), hx.contiguous(),
                                             cx.contiguous(), weight_ih.contiguous(), weight_hh.contiguous(),
                                             defined_or_empty(bias_ih), defined_or_empty(bias_hh), at::Tensor(),
                                             false);
  });
  return {f.output, f.c_n, f.gates, f.cells};
}

template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_cell_backward_op(
    const at::Tensor& grad_hy, const at::Tensor& grad_cy, const at::Tensor& input, const at::Tensor& hx,
    const at::Tensor& cx, const at::Tensor& weight_ih, const at::Tensor& weight_hh, const at::Tensor& cy,
    const at::Tensor& gates, bool has_bias, std::array<bool, 2> output_mask) {
  const char* op = "dlunits.lstm_cell_backward";
  const auto g = cell_steps(
      check_recurrent_cell(op, 4, input, hx, &cx, weight_ih, weight_hh, std::nullopt, std::nullopt), input);
  const typename Kernels::DeviceGuard guard(input);
  const int64_t B = g.rows, H = g.hidden_size;
  check_backward_tensor(op, input, "grad_hy", grad_hy, {B, H});
  check_backward_tensor(op, input, "grad_cy", grad_cy, {B, H});
  check_backward_tensor(op, input, "cy", cy, {B, H});
  check_backward_tensor(op, input, "gates", gates, {B, 4 * H});
  RecurrentBackward r;
  DLUNITS_DISPATCH_RECURRENT(input.scalar_type(), "lstm_cell_backward", [&] {
    // cy is the one step's cells; grad_cy enters as the gradient of the final cell state. The LSTM's
    // backward reads no output: a single step's h_prev is hx.
    r = recurrent_backward<scalar_t, Kernels>(g, RnnActivation::Tanh, grad_hy.contiguous(), at::Tensor(),
                                              grad_cy, input.contiguous(), hx.contiguous(), cx.contiguous(),
                                              weight_ih.contiguous(), weight_hh.contiguous(), at::Tensor(),
                                              at::Tensor(), gates.contiguous(), cy.contiguous(), false, has_bias,
                                              output_mask);
  });
  return {r.grad_input, r.grad_h0, r.grad_c0, r.grad_weight_ih, r.grad_weight_hh, r.grad_bias};
}

// Registers the recurrent ops of csrc/ops.cpp with K as their backend's kernels.
template <class K>
void register_recurrent_ops(torch::Library& m) {
  m.impl("rnn_cell", &rnn_cell_op<K>);
  m.impl("rnn_cell_backward", &rnn_cell_backward_op<K>);
  m.impl("lstm_cell", &lstm_cell_op<K>);
  m.impl("lstm_cell_backward", &lstm_cell_backward_op<K>);
  m.impl("rnn_layer", &rnn_layer_op<K>);
  m.impl("rnn_layer_backward", &rnn_layer_backward_op<K>);
  m.impl("lstm_layer", &lstm_layer_op<K>);
  m.impl("lstm_layer_backward", &lstm_layer_backward_op<K>);
}

}  // namespace dlunits
