// dlunits — autograd of the recurrent units (rnn_cell, lstm_cell, rnn_layer,
// lstm_layer), in C++.
//
// Every other op's autograd is registered from Python (dlunits/ops.py). A cell is
// different: a model calls it once per time step from a Python loop, so its fixed
// cost per call is most of the unit's speed. torch.library's Python autograd
// wrapper (argument normalisation, setup_context, a Python backward) added
// ~80 µs to each forward call and more to each backward on the 2-core machine
// of the benchmarks, as much as the step's arithmetic; on a GPU it was most of a step.
// The layers take the same path, once per layer and direction: a short sequence
// or a small model pays that fixed cost in full.
// Here the autograd node is a torch::autograd::Function: the forward
// redispatches to the device's kernel below autograd, the backward calls the
// unit's backward op (csrc/recurrent_driver.h) through the dispatcher, below
// autograd unless the backward builds a graph (see BelowAutogradUnlessGraphed).
//
// What is saved: the inputs and the output (the RNN's derivative reads it); for the
// LSTM the gates and the cells (for a cell a copy of c', so that the caller may
// change hy and cy in place, as torch's cells allow). The gates and cells are
// outputs without a gradient, and no zeros are made for them. One gradient serves
// bias_ih and bias_hh; an absent bias gets none. The backward op computes only the gradients autograd
// wants (its output_mask: the input's, the weights'), as torch's own nodes do.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

namespace dlunits {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The op's handle in the dispatcher, looked up once.
template <typename Signature>
c10::TypedOperatorHandle<Signature> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

bool given(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

void note_biases(AutogradContext* ctx, const std::optional<at::Tensor>& bias_ih,
                 const std::optional<at::Tensor>& bias_hh) {
  ctx->saved_data["has_bias_ih"] = given(bias_ih);
  ctx->saved_data["has_bias_hh"] = given(bias_hh);
}

// The bias gradient for bias_ih and bias_hh, each where it was given (and computed).
std::pair<at::Tensor, at::Tensor> bias_grads(AutogradContext* ctx, const at::Tensor& grad_bias, bool computed) {
  if (!computed) return {};
  return {ctx->saved_data["has_bias_ih"].toBool() ? grad_bias : at::Tensor(),
          ctx->saved_data["has_bias_hh"].toBool() ? grad_bias : at::Tensor()};
}

bool has_bias(AutogradContext* ctx) {
  return ctx->saved_data["has_bias_ih"].toBool() || ctx->saved_data["has_bias_hh"].toBool();
}

// The backward op's output_mask: (the input's gradient, the weights' and biases'), from the inputs autograd
// wants gradients of. Its edges are the tensor arguments given: the input first, the weights and biases
// last from edge first_weight (weight_ih, weight_hh, each bias given, weight_hr where given).
std::array<bool, 2> output_mask(AutogradContext* ctx, size_t first_weight, bool has_weight_hr = false) {
  const size_t weights = 2 + ctx->saved_data["has_bias_ih"].toBool() + ctx->saved_data["has_bias_hh"].toBool() +
                         has_weight_hr;
  return {ctx->needs_input_grad(0), ctx->needs_input_grad({{first_weight, first_weight + weights}})};
}

// A gradient the op computed, or none where it was not asked for (it came back with no rows).
at::Tensor wanted(const at::Tensor& grad, bool computed) { return computed ? grad : at::Tensor(); }

// The backward ops' autograd is Python's (dlunits/ops.py: it refuses double backward). Only a backward
// that builds a graph (create_graph) needs it; otherwise the op runs below autograd, and the step
// makes no trip through the interpreter (which, from the autograd engine's thread, also takes the GIL).
struct BelowAutogradUnlessGraphed {
  std::optional<at::AutoDispatchBelowADInplaceOrView> guard;
  BelowAutogradUnlessGraphed() {
    if (!at::GradMode::is_enabled()) guard.emplace();
  }
};

class RnnCellFunction : public torch::autograd::Function<RnnCellFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& hx,
                            const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                            const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
                            c10::string_view nonlinearity) {
    static const auto op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                const at::Tensor&, const std::optional<at::Tensor>&,
                                                const std::optional<at::Tensor>&, c10::string_view)>(
        "dlunits::rnn_cell");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor hy = op.call(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity);
    note_biases(ctx, bias_ih, bias_hh);
    ctx->set_materialize_grads(false);
    ctx->saved_data["nonlinearity"] = std::string(nonlinearity);
    ctx->save_for_backward({input, hx, weight_ih, weight_hh, hy});
    return hy;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
    static const auto op = op_handle<Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                           const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                           c10::string_view, bool, std::array<bool, 2>)>("dlunits::rnn_cell_backward");
    if (!grads[0].defined()) return variable_list(7);  // nothing reached h'
    const auto saved = ctx->get_saved_variables();
    const std::string nonlinearity = ctx->saved_data["nonlinearity"].toStringRef();
    const auto mask = output_mask(ctx, 2);
    const BelowAutogradUnlessGraphed dispatch;
    const auto [grad_input, grad_hx, grad_weight_ih, grad_weight_hh, grad_bias] =
        op.call(grads[0], saved[0], saved[1], saved[2], saved[3], saved[4], nonlinearity, has_bias(ctx), mask);
    const auto [grad_bias_ih, grad_bias_hh] = bias_grads(ctx, grad_bias, mask[1]);
    return {wanted(grad_input, mask[0]), grad_hx, wanted(grad_weight_ih, mask[1]), wanted(grad_weight_hh, mask[1]),
            grad_bias_ih, grad_bias_hh, at::Tensor()};
  }
};

class LstmCellFunction : public torch::autograd::Function<LstmCellFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& hx,
                               const at::Tensor& cx, const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                               const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh) {
    using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
    static const auto op = op_handle<Outputs(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                             const std::optional<at::Tensor>&)>("dlunits::lstm_cell");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [hy, cy, gates, cells] = op.call(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh);
    note_biases(ctx, bias_ih, bias_hh);
    ctx->set_materialize_grads(false);  // gates and cells never get a gradient: no zeros made for them
    ctx->mark_non_differentiable({gates, cells});
    ctx->save_for_backward({input, hx, cx, weight_ih, weight_hh, cells, gates});
    return {hy, cy, gates, cells};
  }

  // grads: of hy, cy, gates, cells (the last two non-differentiable), undefined where nothing reached
  // them; the backward op takes zeros for an undefined one of hy and cy.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
    static const auto op = op_handle<Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                           const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                           const at::Tensor&, const at::Tensor&, const at::Tensor&, bool,
                                           std::array<bool, 2>)>("dlunits::lstm_cell_backward");
    if (!grads[0].defined() && !grads[1].defined()) return variable_list(7);
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& cells = saved[5];  // c', the size of h' and c'
    const auto mask = output_mask(ctx, 3);
    const BelowAutogradUnlessGraphed dispatch;
    const at::Tensor grad_hy = grads[0].defined() ? grads[0] : at::zeros_like(cells);
    const at::Tensor grad_cy = grads[1].defined() ? grads[1] : at::zeros_like(cells);
    const auto [grad_input, grad_hx, grad_cx, grad_weight_ih, grad_weight_hh, grad_bias] = op.call(
        grad_hy, grad_cy, saved[0], saved[1], saved[2], saved[3], saved[4], cells, saved[6], has_bias(ctx), mask);
    const auto [grad_bias_ih, grad_bias_hh] = bias_grads(ctx, grad_bias, mask[1]);
    return {wanted(grad_input, mask[0]), grad_hx, grad_cx, wanted(grad_weight_ih, mask[1]),
            wanted(grad_weight_hh, mask[1]), grad_bias_ih, grad_bias_hh};
  }
};

// The layers: grads[k] undefined where nothing reached output k; the backward op takes zeros for those.
at::Tensor or_zeros(const at::Tensor& grad, const at::Tensor& like) {
  return grad.defined() ? grad : at::zeros_like(like, at::MemoryFormat::Contiguous);
}

class RnnLayerFunction : public torch::autograd::Function<RnnLayerFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& h0,
                               const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                               const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
                               c10::IntArrayRef batch_sizes, bool reverse, c10::string_view nonlinearity) {
    using Outputs = std::tuple<at::Tensor, at::Tensor>;
    static const auto op = op_handle<Outputs(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const at::Tensor&, const std::optional<at::Tensor>&,
                                             const std::optional<at::Tensor>&, c10::IntArrayRef, bool,
                                             c10::string_view)>("dlunits::rnn_layer");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [output, h_n] = op.call(input, h0, weight_ih, weight_hh, bias_ih, bias_hh, batch_sizes, reverse, nonlinearity);
    note_biases(ctx, bias_ih, bias_hh);
    ctx->set_materialize_grads(false);
    ctx->saved_data["batch_sizes"] = batch_sizes.vec();
    ctx->saved_data["reverse"] = reverse;
    ctx->saved_data["nonlinearity"] = std::string(nonlinearity);
    ctx->save_for_backward({input, h0, weight_ih, weight_hh, output});
    return {output, h_n};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
    static const auto op = op_handle<Grads(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                           const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                           const at::Tensor&, c10::IntArrayRef, bool, c10::string_view, bool,
                                           std::array<bool, 2>)>("dlunits::rnn_layer_backward");
    if (!grads[0].defined() && !grads[1].defined()) return variable_list(9);
    const auto saved = ctx->get_saved_variables();
    const std::vector<int64_t> batch_sizes = ctx->saved_data["batch_sizes"].toIntVector();
    const std::string nonlinearity = ctx->saved_data["nonlinearity"].toStringRef();
    const auto mask = output_mask(ctx, 2);
    const BelowAutogradUnlessGraphed dispatch;
    const auto [grad_input, grad_h0, grad_weight_ih, grad_weight_hh, grad_bias] =
        op.call(or_zeros(grads[0], saved[4]), or_zeros(grads[1], saved[1]), saved[0], saved[1], saved[2], saved[3],
                saved[4], batch_sizes, ctx->saved_data["reverse"].toBool(), nonlinearity, has_bias(ctx), mask);
    const auto [grad_bias_ih, grad_bias_hh] = bias_grads(ctx, grad_bias, mask[1]);
    return {wanted(grad_input, mask[0]), grad_h0, wanted(grad_weight_ih, mask[1]), wanted(grad_weight_hh, mask[1]),
            grad_bias_ih, grad_bias_hh, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class LstmLayerFunction : public torch::autograd::Function<LstmLayerFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& h0,
                               const at::Tensor& c0, const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                               const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
                               const std::optional<at::Tensor>& weight_hr, c10::IntArrayRef batch_sizes,
                               bool reverse, bool save) {
    using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
    static const auto op = op_handle<Outputs(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                             const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                                             c10::IntArrayRef, bool, bool)>("dlunits::lstm_layer");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [output, h_n, c_n, gates, cells] =
        op.call(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr, batch_sizes, reverse, save);
    note_biases(ctx, bias_ih, bias_hh);
    ctx->set_materialize_grads(false);
    ctx->mark_non_differentiable({gates, cells});
    ctx->saved_data["batch_sizes"] = batch_sizes.vec();
    ctx->saved_data["reverse"] = reverse;
    ctx->saved_data["has_weight_hr"] = given(weight_hr);
    ctx->save_for_backward({input, h0, c0, weight_ih, weight_hh, given(weight_hr) ? *weight_hr : at::Tensor(),
                            output, gates, cells});
    return {output, h_n, c_n, gates, cells};
  }

  // grads: of output, h_n, c_n, gates, cells (the last two non-differentiable).
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
    static const auto op = op_handle<Grads(
        const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
        const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&,
        const at::Tensor&, const at::Tensor&, c10::IntArrayRef, bool, bool, std::array<bool, 2>)>(
        "dlunits::lstm_layer_backward");
    if (!grads[0].defined() && !grads[1].defined() && !grads[2].defined()) return variable_list(11);
    const auto saved = ctx->get_saved_variables();
    const bool projected = ctx->saved_data["has_weight_hr"].toBool();
    const std::optional<at::Tensor> weight_hr = projected ? std::optional<at::Tensor>(saved[5]) : std::nullopt;
    const std::vector<int64_t> batch_sizes = ctx->saved_data["batch_sizes"].toIntVector();
    const auto mask = output_mask(ctx, 3, projected);
    const BelowAutogradUnlessGraphed dispatch;
    const auto [grad_input, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias, grad_weight_hr] = op.call(
        or_zeros(grads[0], saved[6]), or_zeros(grads[1], saved[1]), or_zeros(grads[2], saved[2]), saved[0], saved[1],
        saved[2], saved[3], saved[4], weight_hr, saved[6], saved[7], saved[8], batch_sizes,
        ctx->saved_data["reverse"].toBool(), has_bias(ctx), mask);
    const auto [grad_bias_ih, grad_bias_hh] = bias_grads(ctx, grad_bias, mask[1]);
    return {wanted(grad_input, mask[0]), grad_h0, grad_c0, wanted(grad_weight_ih, mask[1]),
            wanted(grad_weight_hh, mask[1]), grad_bias_ih, grad_bias_hh, wanted(grad_weight_hr, projected && mask[1]),
            at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor rnn_cell_autograd(const at::Tensor& input, const at::Tensor& hx, const at::Tensor& weight_ih,
                             const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih,
                             const std::optional<at::Tensor>& bias_hh, c10::string_view nonlinearity) {
  return RnnCellFunction::apply(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_cell_autograd(
    const at::Tensor& input, const at::Tensor& hx, const at::Tensor& cx, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh) {
  const auto out = LstmCellFunction::apply(input, hx, cx, weight_ih, weight_hh, bias_ih, bias_hh);
  return {out[0], out[1], out[2], out[3]};
}

std::tuple<at::Tensor, at::Tensor> rnn_layer_autograd(const at::Tensor& input, const at::Tensor& h0,
                                                      const at::Tensor& weight_ih, const at::Tensor& weight_hh,
                                                      const std::optional<at::Tensor>& bias_ih,
                                                      const std::optional<at::Tensor>& bias_hh,
                                                      c10::IntArrayRef batch_sizes, bool reverse,
                                                      c10::string_view nonlinearity) {
  const auto out = RnnLayerFunction::apply(input, h0, weight_ih, weight_hh, bias_ih, bias_hh, batch_sizes, reverse,
                                           nonlinearity);
  return {out[0], out[1]};
}

// save=False keeps no gates and cells, so no backward can follow: refused where autograd would record one.
void check_no_gradient_without_save(bool save, std::initializer_list<const at::Tensor*> tensors) {
  if (save || !at::GradMode::is_enabled()) return;
  for (const at::Tensor* t : tensors) {
    TORCH_CHECK(!t->defined() || !t->requires_grad(),
                "dlunits.lstm_layer: save=False keeps no gates and cells for a backward, but a gradient is "
                "needed here (grad mode is on and an argument requires grad); pass save=True, or call it under "
                "torch.no_grad()");
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_layer_autograd(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& weight_ih,
    const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih, const std::optional<at::Tensor>& bias_hh,
    const std::optional<at::Tensor>& weight_hr, c10::IntArrayRef batch_sizes, bool reverse, bool save) {
  const at::Tensor none;
  check_no_gradient_without_save(save, {&input, &h0, &c0, &weight_ih, &weight_hh, given(bias_ih) ? &*bias_ih : &none,
                                        given(bias_hh) ? &*bias_hh : &none, given(weight_hr) ? &*weight_hr : &none});
  const auto out = LstmLayerFunction::apply(input, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, weight_hr,
                                            batch_sizes, reverse, save);
  return {out[0], out[1], out[2], out[3], out[4]};
}

}  // namespace
}  // namespace dlunits

TORCH_LIBRARY_IMPL(dlunits, Autograd, m) {
  m.impl("rnn_cell", &dlunits::rnn_cell_autograd);
  m.impl("lstm_cell", &dlunits::lstm_cell_autograd);
  m.impl("rnn_layer", &dlunits::rnn_layer_autograd);
  m.impl("lstm_layer", &dlunits::lstm_layer_autograd);
}
