// dlunits under torch.autocast: the Autocast kernels of the forward ops.
//
// Inside an autocast region torch runs linear, conv2d and the recurrent units in lower precision
// (CUDA: the region's dtype, float16 or bfloat16) and pooling in its input's dtype. dlunits' ops do
// the same on CUDA: their floating inputs other than float64 are cast to the region's dtype, through
// torch's own cached_cast (a weight is cast once per region). The CPU kernels compute in float32 and
// float64 only, so on the CPU every forward op casts those inputs to float32 instead: a model whose
// layers torch left in bfloat16 runs, and its dlunits layers answer in float32.
//
// Each kernel casts the arguments on the stack, then calls the op again with autocast excluded, so
// the kernels below never see it. Backward ops have no autocast kernel, as in torch: autograd feeds
// them tensors of the forward's dtypes.
#include <ATen/autocast_mode.h>
#include <torch/library.h>

namespace dlunits {
namespace {

// target(): the dtype eligible floating tensors are cast to.
template <c10::DeviceType device, at::ScalarType (*target)()>
void autocast_kernel(const c10::OperatorHandle& op, c10::DispatchKeySet, torch::jit::Stack* stack) {
  const at::ScalarType dtype = target();
  const size_t arguments = op.schema().arguments().size();
  for (auto it = stack->end() - static_cast<std::ptrdiff_t>(arguments); it != stack->end(); ++it) {
    if (it->isTensor()) *it = at::autocast::cached_cast(dtype, it->toTensor(), device);
  }
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(device));
  op.callBoxed(stack);
}

at::ScalarType float32() { return at::kFloat; }
at::ScalarType cuda_autocast_dtype() { return at::autocast::get_lower_precision_fp_from_device_type(c10::DeviceType::CUDA); }

// The ops torch's CUDA autocast runs in lower precision (its lists hold conv2d, linear, the RNN cells and
// the cuDNN RNN); pooling and padding, not in them, keep their input's dtype.
constexpr const char* kLowerPrecisionOps[] = {"linear", "conv2d", "rnn_cell", "lstm_cell", "rnn_layer", "lstm_layer"};
constexpr const char* kSameDtypeOps[] = {"pad2d",       "max_pool2d",          "max_pool2d_with_indices",
                                         "avg_pool2d",  "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices",
                                         "adaptive_avg_pool2d"};

template <auto kernel, size_t n>
void register_autocast(torch::Library& m, const char* const (&names)[n]) {
  for (const char* name : names) m.impl(name, torch::CppFunction::makeFromBoxedFunction<kernel>());
}

}  // namespace
}  // namespace dlunits

TORCH_LIBRARY_IMPL(dlunits, AutocastCPU, m) {
  constexpr auto kernel = &dlunits::autocast_kernel<c10::DeviceType::CPU, dlunits::float32>;
  dlunits::register_autocast<kernel>(m, dlunits::kLowerPrecisionOps);
  dlunits::register_autocast<kernel>(m, dlunits::kSameDtypeOps);
}

TORCH_LIBRARY_IMPL(dlunits, AutocastCUDA, m) {
  dlunits::register_autocast<&dlunits::autocast_kernel<c10::DeviceType::CUDA, dlunits::cuda_autocast_dtype>>(
      m, dlunits::kLowerPrecisionOps);
}
