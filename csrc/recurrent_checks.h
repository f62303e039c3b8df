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
// batch_sizes non-increasing (a padded [T, B, I] sequence is the case
// batch_sizes = [B] * T, N = T·B).
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

inline void check_size(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef expected) {
  const auto actual = concrete_sizes(t);
  TORCH_CHECK(at::IntArrayRef(actual) == expected, op, ": expected ", name, " of size ", expected, ", but got ",
              at::IntArrayRef(actual));
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
    check_size(op, "bias_ih", *bias_ih, bias_size);
  }
  if (bias_hh.has_value() && bias_hh->defined()) {
    check_like(op, input, "bias_hh", *bias_hh);
    check_size(op, "bias_hh", *bias_hh, bias_size);
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
                                  int64_t batch, int64_t size) {
  const std::string name = std::string("hidden") + label;
  check_like(op, input, name.c_str(), state);
  check_dims(op, name.c_str(), state, 2, "(batch, hidden_size)");
  const auto s = concrete_sizes(state);
  TORCH_CHECK(s[0] == batch, "Input batch size ", batch, " doesn't match hidden", label, " batch size ", s[0]);
  TORCH_CHECK(s[1] == size, "hidden", label, " has inconsistent hidden_size: got ", s[1], ", expected ", size);
}

// batch_sizes of a layer op: at least one step, each in [1, batch_sizes[0]], non-increasing, summing to N;
// or all zero, a padded sequence of an empty batch (N = 0), which torch.nn's layers take too.
inline void set_batch_sizes(const char* op, RecurrentGeometry& g, at::IntArrayRef batch_sizes, int64_t rows) {
  TORCH_CHECK(!batch_sizes.empty(), op, ": expected batch_sizes to have at least one time step, but got []");
  g.batch_sizes.assign(batch_sizes.begin(), batch_sizes.end());
  g.offsets.resize(batch_sizes.size());
  int64_t total = 0;
  g.uniform = true;
  const int64_t least = batch_sizes[0] == 0 ? 0 : 1;  // an empty batch's steps are all zero
  for (size_t t = 0; t < batch_sizes.size(); ++t) {
    const int64_t b = batch_sizes[t];
    TORCH_CHECK(b >= least && (t == 0 || b <= batch_sizes[t - 1]), op,
                ": expected batch_sizes to be positive (or all zero, an empty batch) and non-increasing (sequences "
                "sorted by decreasing length), but got batch_sizes=", batch_sizes);
    g.uniform = g.uniform && b == batch_sizes[0];
    g.offsets[t] = total;
    total += b;
  }
  TORCH_CHECK(total == rows, op, ": expected input to have sum(batch_sizes) = ", total, " rows, but got ", rows,
              " rows");
  g.batch = batch_sizes[0];
  g.rows = rows;
}

// --- cells ------------------------------------------------------------------------------------------------------

// rnn_cell / lstm_cell: input [B, I], hx [B, H], cx [B, H] (LSTM).
inline RecurrentGeometry check_recurrent_cell(const char* op, int64_t gates, const at::Tensor& input,
                                              const at::Tensor& hx, const at::Tensor* cx,
                                              const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                              const std::optional<at::Tensor>& bias_ih,
                                              const std::optional<at::Tensor>& bias_hh) {
  auto g = check_recurrent_weights(op, gates, input, weight_ih, weight_hh, bias_ih, bias_hh, std::nullopt);
  check_recurrent_input(op, input, g);
  const int64_t batch = input.sym_size(0).guard_int(__FILE__, __LINE__);
  check_recurrent_state(op, input, "0", hx, batch, g.state_size);
  if (cx != nullptr) check_recurrent_state(op, input, "1", *cx, batch, g.hidden_size);
  const int64_t one_step[1] = {batch};
  if (batch > 0) set_batch_sizes(op, g, one_step, batch);
  else {
    g.batch = g.rows = 0;
    g.uniform = true;
  }
  return g;
}

// --- layers -------------------------------------------------------------------------------------------------------

// rnn_layer / lstm_layer: input [N, I] in the packed layout, h0 [B, P], c0 [B, H] (LSTM).
inline RecurrentGeometry check_recurrent_layer(const char* op, int64_t gates, const at::Tensor& input,
                                               const at::Tensor& h0, const at::Tensor* c0,
                                               const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                               const std::optional<at::Tensor>& bias_ih,
                                               const std::optional<at::Tensor>& bias_hh,
                                               const std::optional<at::Tensor>& weight_hr,
                                               at::IntArrayRef batch_sizes) {
  auto g = check_recurrent_weights(op, gates, input, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr);
  check_recurrent_input(op, input, g);
  set_batch_sizes(op, g, batch_sizes, input.sym_size(0).guard_int(__FILE__, __LINE__));
  check_recurrent_state(op, input, "0", h0, g.batch, g.state_size);
  if (c0 != nullptr) check_recurrent_state(op, input, "1", *c0, g.batch, g.hidden_size);
  return g;
}

// The saved tensors and incoming gradients of a backward op have the forward's sizes.
inline void check_backward_tensor(const char* op, const at::Tensor& input, const char* name, const at::Tensor& t,
                                  at::IntArrayRef expected) {
  check_like(op, input, name, t);
  check_size(op, name, t, expected);
}

}  // namespace dlunits
