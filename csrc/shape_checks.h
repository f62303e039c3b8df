// dlunits — argument and shape checks shared by every backend.
//
// The CPU kernels, the CUDA kernels and the fake kernels (through dlunits._C,
// see ops.cpp) all validate their arguments here, so a bad call gets the same
// message whichever device or tracing mode runs it. Messages follow torch's
// wording where torch has one, and always name the argument and the expected
// and actual values.
#pragma once

#include <ATen/ATen.h>

#include "pool2d_windows.h"

#include <string>
#include <vector>

namespace dlunits {

// Symbolic sizes. A fake kernel traced by torch.compile or torch.export with a
// dynamic dimension (a batch, a sequence's length) holds sizes that are SymInts.
// The checks that such a size can reach compare with sym_equal: it records the
// relation (a guard, or a runtime assert) instead of fixing the size to the value it
// was traced with, and for a real tensor it is an integer comparison. The recurrent
// and linear checks do so for every size but those that must equal a weight's.
inline bool sym_equal(const c10::SymInt& a, const c10::SymInt& b) {
  return a.sym_eq(b).expect_true(__FILE__, __LINE__);
}

inline bool sym_sizes_equal(c10::SymIntArrayRef a, c10::SymIntArrayRef b) {
  if (a.size() != b.size()) return false;
  for (size_t d = 0; d < a.size(); ++d) {
    if (!sym_equal(a[d], b[d])) return false;
  }
  return true;
}

// Concrete sizes of a tensor. Under torch.compile with dynamic shapes a fake
// tensor's sizes are symbolic; reading them here specialises (guards) them.
inline std::vector<int64_t> concrete_sizes(const at::Tensor& t) {
  std::vector<int64_t> sizes;
  sizes.reserve(t.dim());
  for (int64_t d = 0; d < t.dim(); ++d) {
    sizes.push_back(t.sym_size(d).guard_int(__FILE__, __LINE__));
  }
  return sizes;
}

inline std::vector<int64_t> concrete_sizes(c10::SymIntArrayRef sizes) {
  std::vector<int64_t> out;
  out.reserve(sizes.size());
  for (const auto& s : sizes) out.push_back(s.guard_int(__FILE__, __LINE__));
  return out;
}

// ---------------------------------------------------------------------------
// Tensor properties: dtype and device agreement.
// ---------------------------------------------------------------------------

// A floating-point tensor that `op` accepts: float32/float64 everywhere,
// float16/bfloat16 on CUDA (accumulated in float32).
inline void check_floating(const char* op, const char* name, const at::Tensor& t) {
  const auto dtype = t.scalar_type();
  const bool supported =
      dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16;
  TORCH_CHECK(supported, op, ": expected ", name,
              " to be a floating-point tensor (float32 or float64; float16 or bfloat16 on CUDA), but got ",
              dtype);
  if (t.device().is_cpu()) {
    TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, op, ": on the CPU ", name,
                " must be float32 or float64, but got ", dtype);
  }
}

inline void check_same_dtype_and_device(const char* op, const char* name_a, const at::Tensor& a,
                                        const char* name_b, const at::Tensor& b) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": expected ", name_a, " and ", name_b,
              " to have the same dtype, but got ", name_a, " ", a.scalar_type(), " and ", name_b, " ",
              b.scalar_type());
  TORCH_CHECK(a.device() == b.device(), op, ": expected ", name_a, " and ", name_b,
              " to be on the same device, but got ", name_a, " on ", a.device(), " and ", name_b, " on ",
              b.device());
}

// ---------------------------------------------------------------------------
// conv2d
// ---------------------------------------------------------------------------

// Everything a conv2d kernel needs to know about its problem, all in int64.
// Padding may differ before and after (padding='same' with an even kernel).
struct Conv2dGeometry {
  int64_t batch, in_channels, in_h, in_w;
  int64_t out_channels, kernel_h, kernel_w;
  int64_t out_h, out_w;
  int64_t stride_h, stride_w;
  int64_t pad_top, pad_bottom, pad_left, pad_right;
  int64_t dilation_h, dilation_w;
  int64_t groups;

  int64_t in_channels_per_group() const { return in_channels / groups; }
  int64_t out_channels_per_group() const { return out_channels / groups; }
  // Length of one row of the unfolded input: C/groups · KH · KW.
  int64_t patch_size() const { return in_channels_per_group() * kernel_h * kernel_w; }
  std::vector<int64_t> input_sizes() const { return {batch, in_channels, in_h, in_w}; }
  std::vector<int64_t> weight_sizes() const {
    return {out_channels, in_channels_per_group(), kernel_h, kernel_w};
  }
  std::vector<int64_t> output_sizes() const { return {batch, out_channels, out_h, out_w}; }
  // 1×1 kernel, stride 1, no padding: the unfolded input is the input itself.
  bool is_pointwise() const {
    return kernel_h == 1 && kernel_w == 1 && stride_h == 1 && stride_w == 1 && pad_top == 0 &&
           pad_bottom == 0 && pad_left == 0 && pad_right == 0;
  }
};

inline std::string sizes_str(at::IntArrayRef s) { return c10::str(s); }

// Checks every size-related argument of conv2d and computes the output size.
// padding is [top, bottom, left, right].
inline Conv2dGeometry conv2d_geometry(at::IntArrayRef input, at::IntArrayRef weight,
                                      at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK(input.size() == 4, "dlunits.conv2d: expected input to be 4-D (N, C, H, W), but got ",
              input.size(), "-D input of size ", input);
  TORCH_CHECK(weight.size() == 4,
              "dlunits.conv2d: expected weight to be 4-D (out_channels, in_channels/groups, kH, kW), but got ",
              weight.size(), "-D weight of size ", weight);
  TORCH_CHECK(stride.size() == 2, "dlunits.conv2d: expected stride to have 2 values, but got stride=",
              stride);
  TORCH_CHECK(dilation.size() == 2,
              "dlunits.conv2d: expected dilation to have 2 values, but got dilation=", dilation);
  TORCH_CHECK(padding.size() == 4,
              "dlunits.conv2d: expected padding to have 4 values (top, bottom, left, right), but got padding=",
              padding);
  TORCH_CHECK(stride[0] > 0 && stride[1] > 0,
              "non-positive stride is not supported: expected stride > 0, but got stride=", stride);
  TORCH_CHECK(dilation[0] > 0 && dilation[1] > 0,
              "non-positive dilation is not supported: expected dilation > 0, but got dilation=", dilation);
  for (int64_t p : padding) {
    TORCH_CHECK(p >= 0, "negative padding is not supported: expected padding >= 0, but got padding=",
                padding);
  }
  TORCH_CHECK(groups > 0, "non-positive groups is not supported: expected groups > 0, but got groups=",
              groups);
  TORCH_CHECK(weight[0] >= groups,
              "Given groups=", groups, ", expected weight to be at least ", groups,
              " at dimension 0, but got weight of size ", weight, " instead");
  TORCH_CHECK(weight[0] % groups == 0, "Given groups=", groups,
              ", expected weight to be divisible by ", groups, " at dimension 0, but got weight of size ",
              weight, " instead");
  TORCH_CHECK(input[1] == weight[1] * groups, "Given groups=", groups, ", weight of size ", weight,
              ", expected input", input, " to have ", weight[1] * groups, " channels, but got ", input[1],
              " channels instead");

  Conv2dGeometry g;
  g.batch = input[0];
  g.in_channels = input[1];
  g.in_h = input[2];
  g.in_w = input[3];
  g.out_channels = weight[0];
  g.kernel_h = weight[2];
  g.kernel_w = weight[3];
  g.stride_h = stride[0];
  g.stride_w = stride[1];
  g.pad_top = padding[0];
  g.pad_bottom = padding[1];
  g.pad_left = padding[2];
  g.pad_right = padding[3];
  g.dilation_h = dilation[0];
  g.dilation_w = dilation[1];
  g.groups = groups;

  TORCH_CHECK(g.kernel_h > 0 && g.kernel_w > 0,
              "dlunits.conv2d: expected a kernel of at least 1×1, but got weight of size ", weight);
  const int64_t padded_h = g.in_h + g.pad_top + g.pad_bottom;
  const int64_t padded_w = g.in_w + g.pad_left + g.pad_right;
  const int64_t span_h = g.dilation_h * (g.kernel_h - 1) + 1;
  const int64_t span_w = g.dilation_w * (g.kernel_w - 1) + 1;
  TORCH_CHECK(padded_h >= span_h && padded_w >= span_w,
              "Calculated padded input size per channel: (", padded_h, " x ", padded_w,
              "). Kernel size: (", span_h, " x ", span_w,
              "). Kernel size can't be greater than actual input size");
  g.out_h = (padded_h - span_h) / g.stride_h + 1;
  g.out_w = (padded_w - span_w) / g.stride_w + 1;
  return g;
}

// The full conv2d check on tensors: dtypes, devices, bias, and the geometry.
inline Conv2dGeometry check_conv2d(const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                   at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_floating("dlunits.conv2d", "input", input);
  check_same_dtype_and_device("dlunits.conv2d", "input", input, "weight", weight);
  const auto weight_sizes = concrete_sizes(weight);
  if (bias.has_value() && bias->defined()) {
    check_same_dtype_and_device("dlunits.conv2d", "input", input, "bias", *bias);
    const auto bias_sizes = concrete_sizes(*bias);
    TORCH_CHECK(bias_sizes.size() == 1 && weight_sizes.size() >= 1 && bias_sizes[0] == weight_sizes[0],
                "Given weight of size ", at::IntArrayRef(weight_sizes), ", expected bias to be 1-dimensional with ",
                weight_sizes.empty() ? 0 : weight_sizes[0], " elements, but got bias of size ",
                at::IntArrayRef(bias_sizes), " instead");
  }
  return conv2d_geometry(concrete_sizes(input), weight_sizes, stride, padding, dilation, groups);
}

// grad_output of a conv2d must have exactly the forward output's size.
inline void check_conv2d_grad_output(const char* op, const at::Tensor& grad_output,
                                     const Conv2dGeometry& g) {
  const auto expected = g.output_sizes();
  const auto actual = concrete_sizes(grad_output);
  TORCH_CHECK(actual == expected, op, ": expected grad_output of size ", at::IntArrayRef(expected), ", but got ",
              at::IntArrayRef(actual));
}

inline Conv2dGeometry check_conv2d_backward_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                                  c10::SymIntArrayRef input_size, at::IntArrayRef stride,
                                                  at::IntArrayRef padding, at::IntArrayRef dilation,
                                                  int64_t groups) {
  const char* op = "dlunits.conv2d_backward_input";
  check_floating(op, "grad_output", grad_output);
  check_same_dtype_and_device(op, "grad_output", grad_output, "weight", weight);
  auto g = conv2d_geometry(concrete_sizes(input_size), concrete_sizes(weight), stride, padding, dilation,
                           groups);
  check_conv2d_grad_output(op, grad_output, g);
  return g;
}

inline Conv2dGeometry check_conv2d_backward_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                                   c10::SymIntArrayRef weight_size, at::IntArrayRef stride,
                                                   at::IntArrayRef padding, at::IntArrayRef dilation,
                                                   int64_t groups) {
  const char* op = "dlunits.conv2d_backward_weight";
  check_floating(op, "grad_output", grad_output);
  check_same_dtype_and_device(op, "grad_output", grad_output, "input", input);
  auto g = conv2d_geometry(concrete_sizes(input), concrete_sizes(weight_size), stride, padding, dilation,
                           groups);
  check_conv2d_grad_output(op, grad_output, g);
  return g;
}

inline void check_conv2d_backward_bias(const at::Tensor& grad_output) {
  check_floating("dlunits.conv2d_backward_bias", "grad_output", grad_output);
  TORCH_CHECK(grad_output.dim() == 4,
              "dlunits.conv2d_backward_bias: expected grad_output to be 4-D (N, C, H, W), but got ",
              grad_output.dim(), "-D");
}

// torch's rule for a convolution's output layout: channels_last when either
// the input or the weight is channels_last, contiguous otherwise; on CUDA,
// float64 is always contiguous (cuDNN has no channels_last for doubles, and
// torch's CUDA convolution follows it).
inline at::MemoryFormat conv2d_output_memory_format(const at::Tensor& input, const at::Tensor& weight) {
  if (input.device().is_cuda() &&
      (input.scalar_type() == at::kDouble || weight.scalar_type() == at::kDouble)) {
    return at::MemoryFormat::Contiguous;
  }
  const bool channels_last = input.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
                             weight.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// ---------------------------------------------------------------------------
// pad2d: the reflect / replicate / circular padding that Conv2d's padding_mode
// applies before convolving.
// ---------------------------------------------------------------------------

enum class PadMode : int { Reflect = 0, Replicate = 1, Circular = 2 };

inline PadMode pad_mode_from_string(c10::string_view mode) {
  if (mode == "reflect") return PadMode::Reflect;
  if (mode == "replicate") return PadMode::Replicate;
  if (mode == "circular") return PadMode::Circular;
  TORCH_CHECK(false, "dlunits.pad2d: expected mode to be one of 'reflect', 'replicate', 'circular', but got '",
              std::string(mode), "'");
}

struct Pad2dGeometry {
  int64_t planes;  // N·C, or C for 3-D input
  int64_t in_h, in_w, out_h, out_w;
  int64_t pad_top, pad_bottom, pad_left, pad_right;
  PadMode mode;
};

// Checks pad2d's arguments against an input of size `input` ((N,)C,H,W).
// padding is [top, bottom, left, right], each >= 0.
inline Pad2dGeometry pad2d_geometry(at::IntArrayRef input, at::IntArrayRef padding, PadMode mode) {
  TORCH_CHECK(input.size() == 3 || input.size() == 4,
              "dlunits.pad2d: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, but got input of size ",
              input);
  TORCH_CHECK(padding.size() == 4,
              "dlunits.pad2d: expected padding to have 4 values (top, bottom, left, right), but got padding=",
              padding);
  for (int64_t p : padding) {
    TORCH_CHECK(p >= 0, "dlunits.pad2d: expected padding >= 0, but got padding=", padding);
  }
  Pad2dGeometry g;
  const size_t d = input.size();
  g.planes = 1;
  for (size_t i = 0; i + 2 < d; ++i) g.planes *= input[i];
  g.in_h = input[d - 2];
  g.in_w = input[d - 1];
  g.pad_top = padding[0];
  g.pad_bottom = padding[1];
  g.pad_left = padding[2];
  g.pad_right = padding[3];
  g.mode = mode;
  for (size_t i = 1; i < d; ++i) {
    TORCH_CHECK(input[i] > 0, "dlunits.pad2d: expected input with non-zero channel and spatial sizes "
                "(a zero batch size is fine), but got input of size ", input);
  }
  const int64_t pad_h = std::max(g.pad_top, g.pad_bottom);
  const int64_t pad_w = std::max(g.pad_left, g.pad_right);
  if (mode == PadMode::Reflect) {
    TORCH_CHECK(pad_h < g.in_h && pad_w < g.in_w,
                "Padding size should be less than the corresponding input dimension, but got: padding (",
                padding[2], ", ", padding[3], ", ", padding[0], ", ", padding[1], ") for input of size ",
                input, " in reflect mode");
  } else if (mode == PadMode::Circular) {
    TORCH_CHECK(pad_h <= g.in_h && pad_w <= g.in_w,
                "Padding value causes wrapping around more than once: padding (", padding[2], ", ",
                padding[3], ", ", padding[0], ", ", padding[1], ") for input of size ", input,
                " in circular mode");
  }
  g.out_h = g.in_h + g.pad_top + g.pad_bottom;
  g.out_w = g.in_w + g.pad_left + g.pad_right;
  return g;
}

inline std::vector<int64_t> pad2d_output_sizes(at::IntArrayRef input, const Pad2dGeometry& g) {
  std::vector<int64_t> out(input.begin(), input.end());
  out[out.size() - 2] = g.out_h;
  out[out.size() - 1] = g.out_w;
  return out;
}

inline Pad2dGeometry check_pad2d(const at::Tensor& input, at::IntArrayRef padding, c10::string_view mode) {
  check_floating("dlunits.pad2d", "input", input);
  return pad2d_geometry(concrete_sizes(input), padding, pad_mode_from_string(mode));
}

// pad2d_backward's grad_output is the padded tensor; the input size follows.
inline Pad2dGeometry check_pad2d_backward(const at::Tensor& grad_output, at::IntArrayRef padding,
                                          c10::string_view mode) {
  check_floating("dlunits.pad2d_backward", "grad_output", grad_output);
  auto sizes = concrete_sizes(grad_output);
  TORCH_CHECK((sizes.size() == 3 || sizes.size() == 4) && padding.size() == 4,
              "dlunits.pad2d_backward: expected a 3-D or 4-D grad_output and 4 padding values, but got "
              "grad_output of size ", at::IntArrayRef(sizes), " and padding=", padding);
  const int64_t h = sizes[sizes.size() - 2], w = sizes[sizes.size() - 1];
  TORCH_CHECK(h > padding[0] + padding[1] && w > padding[2] + padding[3],
              "dlunits.pad2d_backward: expected grad_output larger than the padding (top, bottom, left, right) = ",
              padding, " in its last two dimensions, but got grad_output of size ", at::IntArrayRef(sizes));
  sizes[sizes.size() - 2] -= padding[0] + padding[1];
  sizes[sizes.size() - 1] -= padding[2] + padding[3];
  return pad2d_geometry(sizes, padding, pad_mode_from_string(mode));
}

// torch's layout for a padded result (and for its gradient): on the CPU, reflect
// and replicate keep a 4-D channels_last tensor channels_last; circular padding,
// and every padding on CUDA (torch's CUDA pad kernels write NCHW), is contiguous.
inline at::MemoryFormat pad2d_memory_format(const at::Tensor& t, c10::string_view mode) {
  const bool channels_last = t.dim() == 4 && !t.device().is_cuda() &&
                             pad_mode_from_string(mode) != PadMode::Circular &&
                             t.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

inline std::vector<int64_t> pad2d_input_sizes(const at::Tensor& grad_output, const Pad2dGeometry& g) {
  auto sizes = concrete_sizes(grad_output);
  sizes[sizes.size() - 2] = g.in_h;
  sizes[sizes.size() - 1] = g.in_w;
  return sizes;
}

// ---------------------------------------------------------------------------
// 2-D pooling: max_pool2d, avg_pool2d, adaptive_max_pool2d, adaptive_avg_pool2d.
// The ops take 3-D (C, H, W) or 4-D (N, C, H, W) input, as torch's do.
// ---------------------------------------------------------------------------

struct Pool2dGeometry {
  bool batched;           // 4-D input
  int64_t batch, channels;  // batch is 1 for 3-D input
  PoolAxis<int64_t> h, w;

  int64_t planes() const { return batch * channels; }
  std::vector<int64_t> sizes(int64_t height, int64_t width) const {
    if (batched) return {batch, channels, height, width};
    return {channels, height, width};
  }
  std::vector<int64_t> input_sizes() const { return sizes(h.in, w.in); }
  std::vector<int64_t> output_sizes() const { return sizes(h.out, w.out); }
};

// torch's pooling_output_shape: floor (or ceil) of the window count, where with
// ceil_mode a last window must start inside the input or its left padding.
inline int64_t pool_output_size(int64_t in, int64_t kernel, int64_t pad, int64_t stride, int64_t dilation,
                                bool ceil_mode) {
  const int64_t numerator = in + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  int64_t out = (numerator >= 0 ? numerator / stride : -((-numerator + stride - 1) / stride)) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

inline void check_pool2d_input_dims(const char* op, at::IntArrayRef input, int64_t first_nonempty_dim) {
  bool ok = input.size() == 3 || input.size() == 4;
  for (size_t d = input.size() == 4 ? first_nonempty_dim : first_nonempty_dim - 1; ok && d < input.size(); ++d) {
    ok = input[d] > 0;
  }
  TORCH_CHECK(ok, op, ": expected a 3-D (C, H, W) or 4-D (N, C, H, W) input with non-zero ",
              first_nonempty_dim == 1 ? "channel and spatial sizes" : "spatial sizes",
              " (a zero batch size is fine), but got input of size ", input);
}

inline Pool2dGeometry pool2d_geometry_from_input(at::IntArrayRef input) {
  Pool2dGeometry g{};
  g.batched = input.size() == 4;
  g.batch = g.batched ? input[0] : 1;
  g.channels = input[input.size() - 3];
  g.h.in = input[input.size() - 2];
  g.w.in = input[input.size() - 1];
  return g;
}

// Checks the arguments of max_pool2d (dilation as given) or avg_pool2d (dilation [1, 1])
// for an input of size `input`, and computes the output size.
inline Pool2dGeometry pool2d_geometry(const char* op, at::IntArrayRef input, at::IntArrayRef kernel_size,
                                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                      bool ceil_mode) {
  const std::pair<const char*, at::IntArrayRef> args[] = {
      {"kernel_size", kernel_size}, {"stride", stride}, {"padding", padding}, {"dilation", dilation}};
  for (const auto& [name, value] : args) {
    TORCH_CHECK(value.size() == 2, op, ": expected ", name, " to have 2 values (height, width), but got ", name,
                "=", value);
  }
  TORCH_CHECK(kernel_size[0] > 0 && kernel_size[1] > 0, op,
              ": kernel size should be greater than zero, but got kH: ", kernel_size[0], " kW: ", kernel_size[1]);
  TORCH_CHECK(stride[0] > 0 && stride[1] > 0, op, ": stride should be greater than zero, but got dH: ",
              stride[0], " dW: ", stride[1]);
  TORCH_CHECK(dilation[0] > 0 && dilation[1] > 0, op, ": dilation should be greater than zero, but got dilationH: ",
              dilation[0], " dilationW: ", dilation[1]);
  for (int axis = 0; axis < 2; ++axis) {
    TORCH_CHECK(padding[axis] >= 0, op, ": pad must be non-negative, but got pad: ", padding[axis]);
    const int64_t effective_kernel = (kernel_size[axis] - 1) * dilation[axis] + 1;
    TORCH_CHECK(padding[axis] <= effective_kernel / 2, op,
                ": pad should be at most half of effective kernel size, but got pad=", padding[axis],
                ", kernel_size=", kernel_size[axis], " and dilation=", dilation[axis]);
  }
  // torch's second, stricter rule: the undilated kernel bounds the padding too.
  TORCH_CHECK(padding[0] <= kernel_size[0] / 2 && padding[1] <= kernel_size[1] / 2, op,
              ": pad should be smaller than or equal to half of kernel size, but got padW = ", padding[1],
              ", padH = ", padding[0], ", kW = ", kernel_size[1], ", kH = ", kernel_size[0]);
  check_pool2d_input_dims(op, input, 1);
  Pool2dGeometry g = pool2d_geometry_from_input(input);
  PoolAxis<int64_t>* axes[] = {&g.h, &g.w};
  for (int axis = 0; axis < 2; ++axis) {
    PoolAxis<int64_t>& a = *axes[axis];
    a.kernel = kernel_size[axis];
    a.stride = stride[axis];
    a.pad = padding[axis];
    a.dilation = dilation[axis];
    a.adaptive = false;
    a.out = pool_output_size(a.in, a.kernel, a.pad, a.stride, a.dilation, ceil_mode);
  }
  TORCH_CHECK(g.h.out > 0 && g.w.out > 0, op, ": Given input size: (", g.channels, "x", g.h.in, "x", g.w.in,
              "). Calculated output size: (", g.channels, "x", g.h.out, "x", g.w.out, "). Output size is too small");
  return g;
}

inline Pool2dGeometry adaptive_pool2d_geometry(const char* op, at::IntArrayRef input, at::IntArrayRef output_size,
                                               bool max) {
  TORCH_CHECK(output_size.size() == 2, op, ": expected output_size to have 2 values (height, width), but got "
              "output_size=", output_size);
  TORCH_CHECK(output_size[0] >= 0 && output_size[1] >= 0, op,
              ": elements of output_size must be greater than or equal to 0, but got output_size=", output_size);
  // torch's adaptive max pooling refuses zero channels; its adaptive average pooling allows them.
  check_pool2d_input_dims(op, input, max ? 1 : 2);
  Pool2dGeometry g = pool2d_geometry_from_input(input);
  PoolAxis<int64_t>* axes[] = {&g.h, &g.w};
  for (int axis = 0; axis < 2; ++axis) {
    PoolAxis<int64_t>& a = *axes[axis];
    a.out = output_size[axis];
    a.kernel = a.stride = a.dilation = 1;
    a.pad = 0;
    a.adaptive = true;
  }
  return g;
}

inline Pool2dGeometry check_max_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                       at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  check_floating("dlunits.max_pool2d", "input", input);
  return pool2d_geometry("dlunits.max_pool2d", concrete_sizes(input), kernel_size, stride, padding, dilation,
                         ceil_mode);
}

inline Pool2dGeometry check_avg_pool2d(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                       at::IntArrayRef padding, bool ceil_mode, std::optional<int64_t> divisor) {
  check_floating("dlunits.avg_pool2d", "input", input);
  TORCH_CHECK(!divisor.has_value() || *divisor != 0,
              "dlunits.avg_pool2d: divisor must be not zero, but got divisor_override=0");
  const int64_t no_dilation[] = {1, 1};
  return pool2d_geometry("dlunits.avg_pool2d", concrete_sizes(input), kernel_size, stride, padding, no_dilation,
                         ceil_mode);
}

inline Pool2dGeometry check_adaptive_max_pool2d(const at::Tensor& input, at::IntArrayRef output_size) {
  check_floating("dlunits.adaptive_max_pool2d", "input", input);
  return adaptive_pool2d_geometry("dlunits.adaptive_max_pool2d", concrete_sizes(input), output_size, true);
}

inline Pool2dGeometry check_adaptive_avg_pool2d(const at::Tensor& input, at::IntArrayRef output_size) {
  check_floating("dlunits.adaptive_avg_pool2d", "input", input);
  return adaptive_pool2d_geometry("dlunits.adaptive_avg_pool2d", concrete_sizes(input), output_size, false);
}

// A backward op's grad_output against the forward's geometry (and, for max pooling, its input).
inline void check_pool2d_grad_output(const char* op, const at::Tensor& grad_output, const Pool2dGeometry& g) {
  check_floating(op, "grad_output", grad_output);
  const auto expected = g.output_sizes();
  const auto actual = concrete_sizes(grad_output);
  TORCH_CHECK(actual == expected, op, ": expected grad_output of size ", at::IntArrayRef(expected),
              " (the forward's output), but got grad_output of size ", at::IntArrayRef(actual));
}

inline Pool2dGeometry check_max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                                at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                                at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  const auto g = check_max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode);
  check_pool2d_grad_output("dlunits.max_pool2d_backward", grad_output, g);
  check_same_dtype_and_device("dlunits.max_pool2d_backward", "grad_output", grad_output, "input", input);
  return g;
}

// adaptive_max_pool2d_backward: the output size is grad_output's.
inline Pool2dGeometry check_adaptive_max_pool2d_backward(const at::Tensor& grad_output, const at::Tensor& input) {
  const char* op = "dlunits.adaptive_max_pool2d_backward";
  const auto sizes = concrete_sizes(grad_output);
  TORCH_CHECK(sizes.size() == 3 || sizes.size() == 4, op, ": expected a 3-D or 4-D grad_output, but got "
              "grad_output of size ", at::IntArrayRef(sizes));
  const int64_t output_size[] = {sizes[sizes.size() - 2], sizes[sizes.size() - 1]};
  const auto g = check_adaptive_max_pool2d(input, output_size);
  check_pool2d_grad_output(op, grad_output, g);
  check_same_dtype_and_device(op, "grad_output", grad_output, "input", input);
  return g;
}

inline void check_pool2d_input_size(const char* op, at::IntArrayRef input_size) {
  TORCH_CHECK(input_size.size() == 3 || input_size.size() == 4, op,
              ": expected input_size to have 3 or 4 values, but got input_size=", input_size);
}

inline Pool2dGeometry check_avg_pool2d_backward(const at::Tensor& grad_output, at::IntArrayRef input_size,
                                                at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                                at::IntArrayRef padding, bool ceil_mode,
                                                std::optional<int64_t> divisor) {
  const char* op = "dlunits.avg_pool2d_backward";
  check_pool2d_input_size(op, input_size);
  TORCH_CHECK(!divisor.has_value() || *divisor != 0, op, ": divisor must be not zero, but got divisor_override=0");
  const int64_t no_dilation[] = {1, 1};
  const auto g = pool2d_geometry(op, input_size, kernel_size, stride, padding, no_dilation, ceil_mode);
  check_pool2d_grad_output(op, grad_output, g);
  return g;
}

// adaptive_avg_pool2d_backward: the output size is grad_output's.
inline Pool2dGeometry check_adaptive_avg_pool2d_backward(const at::Tensor& grad_output, at::IntArrayRef input_size) {
  const char* op = "dlunits.adaptive_avg_pool2d_backward";
  check_pool2d_input_size(op, input_size);
  const auto sizes = concrete_sizes(grad_output);
  TORCH_CHECK(sizes.size() == input_size.size(), op, ": expected grad_output to have as many dimensions as "
              "input_size=", input_size, ", but got grad_output of size ", at::IntArrayRef(sizes));
  const int64_t output_size[] = {sizes[sizes.size() - 2], sizes[sizes.size() - 1]};
  const auto g = adaptive_pool2d_geometry(op, input_size, output_size, false);
  check_pool2d_grad_output(op, grad_output, g);
  return g;
}

// torch's layout for a pooling result and its gradient: that of the tensor pooled.
inline at::MemoryFormat pool2d_memory_format(const at::Tensor& t) {
  return t.dim() == 4 ? t.suggest_memory_format() : at::MemoryFormat::Contiguous;
}

}  // namespace dlunits
