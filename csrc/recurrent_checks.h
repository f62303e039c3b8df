// dlunits — argument and shape checks of the recurrent ops (rnn_cell, lstm_cell,
// rnn_layer, lstm_layer and their backward ops), shared by the CPU kernels, the
// CUDA kernels and the fake kernels (through dlunits._C, see ops.cpp).
//
// Messages follow torch's RNN cell checks where torch has one ("input has
// inconsistent input_size: got 5 expected 10", "Input batch size 3 doesn't match
// hidden0 batch size 2", ...), and always name the argument and the values.
//
// Sizes: G gates (1 for the RNN, 4 for the LSTM: i, f, g, o), hidden size H,
// state size P (H, or proj_size for an LSTM with a projection), input size I.
// A layer op reads its sequence in the packed layout: input is [N, I] with the
// rows of time step t at offsets[t] .. offsets[t] + batch_sizes[t], and
// batch_sizes non-increasing. A padded [T, B, I] sequence is the case
// batch_sizes = [B] * T, N = T·B, and may also be given as batch_sizes = []: every
// step is the whole batch, B = h0's rows, T = N / B.
//
// Symbolic sizes (shape_checks.h). The batch of the input, the states and the
// gradients, and a padded sequence's rows, are compared with sym_equal: they may be
// symbolic in a fake kernel traced with a dynamic batch or sequence length. Sizes that
// must equal a weight's (input_size, hidden_size) are read as integers.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "shape_checks.h"

namespace dlunits {

enum class RnnActivation : int { Tanh = 0, Relu = 1 };

inline RnnActivation rnn_activation_from_string(const char* op, c10::string_view nonlinearity) {
  if (nonlinearity == "tanh") return RnnActivation::Tanh;
  if (nonlinearity == "relu") return RnnActivation::Relu;
  TORCH_CHECK(false, op, ": expected nonlinearity to be 'tanh' or 'relu', but got '", std::string(nonlinearity),
              "'");
}

// Everything a recurrent kernel needs to know about its problem.
struct RecurrentGeometry {
  int64_t gates;        // G
  int64_t input_size;   // I
  int64_t hidden_size;  // H
  int64_t state_size;   // P: H, or proj_size
  int64_t batch;        // B: rows of the state, batch_sizes[0]
  int64_t rows;         // N: rows of the input, Σ batch_sizes
  std::vector<int64_t> batch_sizes;
  std::vector<int64_t> offsets;  // offsets[t]: the first input row of step t
  bool uniform;                  // every step has the whole batch (a padded sequence)

  int64_t steps() const { return static_cast<int64_t>(batch_sizes.size()); }
  bool projected() const { return state_size != hidden_size; }
};

inline void check_dims(const char* op, const char* name, const at::Tensor& t, int64_t dim, const char* layout) {
  TORCH_CHECK(t.dim() == dim, op, ": expected ", name, " to be ", dim, "-D ", layout, ", but got ", t.dim(),
              "-D ", name, " of size ", t.sizes());
}

inline void check_size(const char* op, const char* name, const at::Tensor& t, c10::SymIntArrayRef expected) {
  TORCH_CHECK(sym_sizes_equal(t.sym_sizes(), expected), op, ": expected ", name, " of size ", expected,
              ", but got ", t.sym_sizes());
}

inline void check_like(const char* op, const at::Tensor& input, const char* name, const at::Tensor& t) {
  check_same_dtype_and_device(op, "input", input, name, t);
}

// The weights: weight_ih [G·H, I], weight_hh [G·H, P], biases [G·H], weight_hr [P, H].
// Returns the geometry without the batch fields.
inline RecurrentGeometry check_recurrent_weights(const char* op, int64_t gates, const at::Tensor& input,
                                                 const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                                 const std::optional<at::Tensor>& bias_ih,
                                                 const std::optional<at::Tensor>& bias_hh,
                                                 const std::optional<at::Tensor>& weight_hr) {
  check_floating(op, "input", input);
  check_like(op, input, "weight_ih", weight_ih);
  check_like(op, input, "weight_hh", weight_hh);
  check_dims(op, "weight_ih", weight_ih, 2, "(gates·hidden_size, input_size)");
  check_dims(op, "weight_hh", weight_hh, 2, "(gates·hidden_size, hidden_size)");
  const auto w_ih = concrete_sizes(weight_ih);
  const auto w_hh = concrete_sizes(weight_hh);
  TORCH_CHECK(w_ih[0] % gates == 0 && w_ih[0] > 0, op, ": expected weight_ih to have a positive multiple of ",
              gates, " rows (", gates, " gates of hidden_size each), but got weight_ih of size ",
              at::IntArrayRef(w_ih));
  RecurrentGeometry g;
  g.gates = gates;
  g.hidden_size = w_ih[0] / gates;
  g.input_size = w_ih[1];
  const bool projected = weight_hr.has_value() && weight_hr->defined();
  if (projected) {
    check_like(op, input, "weight_hr", *weight_hr);
    check_dims(op, "weight_hr", *weight_hr, 2, "(proj_size, hidden_size)");
    const auto w_hr = concrete_sizes(*weight_hr);
    TORCH_CHECK(w_hr[1] == g.hidden_size && w_hr[0] > 0 && w_hr[0] < g.hidden_size, op,
                ": expected weight_hr of size (proj_size, ", g.hidden_size, ") with 0 < proj_size < ",
                g.hidden_size, ", but got weight_hr of size ", at::IntArrayRef(w_hr));
    g.state_size = w_hr[0];
  } else {
    g.state_size = g.hidden_size;
  }
  TORCH_CHECK(w_hh[0] == gates * g.hidden_size && w_hh[1] == g.state_size, op, ": expected weight_hh of size [",
              gates * g.hidden_size, ", ", g.state_size, "] to match weight_ih of size ", at::IntArrayRef(w_ih),
              ", but got weight_hh of size ", at::IntArrayRef(w_hh));
  const std::vector<int64_t> bias_size{gates * g.hidden_size};
  if (bias_ih.has_value() && bias_ih->defined()) {
    check_like(op, input, "bias_ih", *bias_ih);
    check_size(op, "bias_ih", *bias_ih, c10::fromIntArrayRefSlow(bias_size));
  }
  if (bias_hh.has_value() && bias_hh->defined()) {
    check_like(op, input, "bias_hh", *bias_hh);
    check_size(op, "bias_hh", *bias_hh, c10::fromIntArrayRefSlow(bias_size));
  }
  return g;
}

// input [N, I] and a state [B, P] (hidden) or [B, H] (cell), torch's wording.
inline void check_recurrent_input(const char* op, const at::Tensor& input, const RecurrentGeometry& g) {
  check_dims(op, "input", input, 2, "(rows, input_size)");
  const int64_t input_size = input.sym_size(1).guard_int(__FILE__, __LINE__);
  TORCH_CHECK(input_size == g.input_size, "input has inconsistent input_size: got ", input_size, " expected ",
              g.input_size);
}

inline void check_recurrent_state(const char* op, const at::Tensor& input, const char* label, const at::Tensor& state,
                                  const c10::SymInt& batch, int64_t size) {
  const std::string name = std::string("hidden") + label;
  check_like(op, input, name.c_str(), state);
  check_dims(op, name.c_str(), state, 2, "(batch, hidden_size)");
  const c10::SymInt& rows = state.sym_size(0);
  TORCH_CHECK(sym_equal(rows, batch), "Input batch size ", batch, " doesn't match hidden", label, " batch size ",
              rows);
  const int64_t s = state.sym_size(1).guard_int(__FILE__, __LINE__);
  TORCH_CHECK(s == size, "hidden", label, " has inconsistent hidden_size: got ", s, ", expected ", size);
}

// batch_sizes of a layer op: [] (a padded sequence, see above), or at least one step, each in
// [1, batch_sizes[0]], non-increasing, summing to N; or all zero, a padded sequence of an empty batch
// (N = 0), which torch.nn's layers take too. Returns the batch B: batch_sizes[0], or h0's rows.
inline c10::SymInt check_batch_sizes(const char* op, at::IntArrayRef batch_sizes, const c10::SymInt& rows,
                                     const at::Tensor& h0) {
  if (batch_sizes.empty()) {
    check_dims(op, "hidden0", h0, 2, "(batch, hidden_size)");
    const c10::SymInt& batch = h0.sym_size(0);
    if (batch.sym_eq(0).guard_bool(__FILE__, __LINE__)) {
      TORCH_SYM_CHECK(rows.sym_eq(0), op, ": expected input to have 0 rows for a padded sequence of an empty "
                      "batch (batch_sizes = [], hidden0 of size ", h0.sym_sizes(), "), but got ", rows, " rows");
    } else {
      TORCH_SYM_CHECK(rows.sym_gt(0), op, ": expected a padded sequence (batch_sizes = []) to have at least one "
                      "time step, but got input with 0 rows");
      TORCH_SYM_CHECK((rows % batch).sym_eq(0), op, ": expected input to have a multiple of the batch (", batch,
                      ") rows for a padded sequence (batch_sizes = [], steps = rows / batch), but got ", rows,
                      " rows");
    }
    return batch;
  }
  int64_t total = 0;
  const int64_t least = batch_sizes[0] == 0 ? 0 : 1;  // an empty batch's steps are all zero
  for (size_t t = 0; t < batch_sizes.size(); ++t) {
    const int64_t b = batch_sizes[t];
    TORCH_CHECK(b >= least && (t == 0 || b <= batch_sizes[t - 1]), op,
                ": expected batch_sizes to be positive (or all zero, an empty batch) and non-increasing (sequences "
                "sorted by decreasing length), but got batch_sizes=", batch_sizes);
    total += b;
  }
  TORCH_CHECK(sym_equal(rows, total), op, ": expected input to have sum(batch_sizes) = ", total, " rows, but got ",
              rows, " rows");
  return batch_sizes[0];
}

// The steps of a checked layer for its kernels: batch_sizes (B each step where it is []) and offsets.
inline void set_steps(RecurrentGeometry& g, at::IntArrayRef batch_sizes, int64_t batch, int64_t rows) {
  g.batch = batch;
  g.rows = rows;
  if (batch_sizes.empty()) {  // padded: rows / batch steps, or one empty step for an empty batch
    g.batch_sizes.assign(batch > 0 ? rows / batch : 1, batch);
  } else {
    g.batch_sizes.assign(batch_sizes.begin(), batch_sizes.end());
  }
  g.offsets.resize(g.batch_sizes.size());
  g.uniform = true;
  int64_t total = 0;
  for (size_t t = 0; t < g.batch_sizes.size(); ++t) {
    g.uniform = g.uniform && g.batch_sizes[t] == batch;
    g.offsets[t] = total;
    total += g.batch_sizes[t];
  }
}

// --- cells ------------------------------------------------------------------------------------------------------

// rnn_cell / lstm_cell: input [B, I], hx [B, P], cx [B, H] (LSTM). The checks (B may be symbolic in a fake
// kernel); the geometry without its batch fields, which the kernels get from cell_steps.
inline RecurrentGeometry check_recurrent_cell(const char* op, int64_t gates, const at::Tensor& input,
                                              const at::Tensor& hx, const at::Tensor* cx,
                                              const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                              const std::optional<at::Tensor>& bias_ih,
                                              const std::optional<at::Tensor>& bias_hh) {
  auto g = check_recurrent_weights(op, gates, input, weight_ih, weight_hh, bias_ih, bias_hh, std::nullopt);
  check_recurrent_input(op, input, g);
  const c10::SymInt& batch = input.sym_size(0);
  check_recurrent_state(op, input, "0", hx, batch, g.state_size);
  if (cx != nullptr) check_recurrent_state(op, input, "1", *cx, batch, g.hidden_size);
  return g;
}

// A checked cell's geometry for its kernels: one step of the whole batch (none for an empty batch).
inline RecurrentGeometry cell_steps(RecurrentGeometry g, const at::Tensor& input) {
  const int64_t batch = input.size(0);
  if (batch > 0) {
    const int64_t one_step[1] = {batch};
    set_steps(g, one_step, batch, batch);
  } else {
    g.batch = g.rows = 0;
    g.uniform = true;
  }
  return g;
}

// --- layers -------------------------------------------------------------------------------------------------------

// rnn_layer / lstm_layer: input [N, I] in the packed layout, h0 [B, P], c0 [B, H] (LSTM). The checks (N and B
// may be symbolic in a fake kernel, for a padded sequence); the geometry without its steps (layer_steps).
inline RecurrentGeometry check_recurrent_layer(const char* op, int64_t gates, const at::Tensor& input,
                                               const at::Tensor& h0, const at::Tensor* c0,
                                               const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                               const std::optional<at::Tensor>& bias_ih,
                                               const std::optional<at::Tensor>& bias_hh,
                                               const std::optional<at::Tensor>& weight_hr,
                                               at::IntArrayRef batch_sizes) {
  auto g = check_recurrent_weights(op, gates, input, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr);
  check_recurrent_input(op, input, g);
  const c10::SymInt batch = check_batch_sizes(op, batch_sizes, input.sym_size(0), h0);
  check_recurrent_state(op, input, "0", h0, batch, g.state_size);
  if (c0 != nullptr) check_recurrent_state(op, input, "1", *c0, batch, g.hidden_size);
  return g;
}

// A checked layer's geometry for its kernels: its steps and their rows.
inline RecurrentGeometry layer_steps(RecurrentGeometry g, const at::Tensor& input, const at::Tensor& h0,
                                     at::IntArrayRef batch_sizes) {
  set_steps(g, batch_sizes, batch_sizes.empty() ? h0.size(0) : batch_sizes[0], input.size(0));
  return g;
}

// The saved tensors and incoming gradients of a backward op have the forward's sizes.
inline void check_backward_tensor(const char* op, const at::Tensor& input, const char* name, const at::Tensor& t,
                                  c10::SymIntArrayRef expected) {
  check_like(op, input, name, t);
  check_size(op, name, t, expected);
}

}  // namespace dlunits
