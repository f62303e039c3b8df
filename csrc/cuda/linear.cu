// dlunits — the dense unit (linear) on CUDA: a cuBLAS matrix product, then our fused epilogue.
//
// With the input's leading dimensions flattened into M rows, K = in_features,
// N = out_features:
//   forward            z = x · Wᵀ                [M, N]   at::mm_out (cuBLAS); float for half types
//                      y = act(z + b)            [M, N]   epilogue kernel, ours
//   epilogue backward  gz = dy ⊙ act'(y)         [M, N]   ours: relu 1[y > 0], sigmoid y(1 - y),
//                                                         tanh 1 - y², none 1
//   backward input     dx = gz · W               [M, K]   at::mm_out (cuBLAS)
//   backward weight    dW = gzᵀ · x              [N, K]   at::mm_out (cuBLAS)
//   backward bias      db = Σ_rows gz            [N]      ours: fixed-order reduction, no atomics
//
// The products go through at::mm_out (cuBLAS), which the project allows for the
// dense unit; TF32 follows torch.backends.cuda.matmul.allow_tf32 as torch's own
// linear does. Everything element-wise and the reduction are ours; they compute in
// float for float16/bfloat16/float32 and in double for float64.
//
// float16/bfloat16: the product is written in float (at::mm_out's out_dtype overload: cuBLAS
// accumulates in float and stores its accumulator), and the epilogue rounds act(z + b) to the
// half type once. Rounding z to half before adding b (as an in-place epilogue on a half product
// would) loses the low bits of x · Wᵀ whenever |z + b| << |x · Wᵀ|: z + b is then off by up to
// half an ulp of x · Wᵀ, and a pre-activation that small changes sign, so that ReLU's mask (and
// the whole row of grad_input it feeds) differs from torch's. torch's own half linear (addmm:
// the bias enters the product's accumulator) rounds z + b once; so do we. The price is a float
// [M, N] buffer for the product. float32/float64 keep the in-place epilogue on y: their
// rounding of x · Wᵀ is ~1e-7 (1e-16) of it, far below anything the tests or a mask can see.
//
// Epilogue kernels: element-wise over the flat [M, N] output, grid-stride, so that
// neighbouring threads touch neighbouring elements whatever N (a 10-class output
// keeps every thread busy too); the bias index is the element's column, i mod N.
// Bias reduction: a block of 32 × 16 threads owns 32 columns; each thread sums
// every 16th row of one column, then the 16 partial sums are added in a fixed order.
//
// Cost: each product 2·M·N·K FLOPs; the epilogue reads and writes y once (plus
// N bias values; for the half types it reads the float product instead of y), its backward
// reads dy and y and writes gz; the bias reduction
// reads gz once. Index math is int32 when M·N plus a grid's stride < 2^31, int64 otherwise. Launches go
// on the current stream under a device guard, each followed by a launch check.
// Build: part of dlunits._C (setup.py with DLUNITS_CUDA=1); run: make gpu-check.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <type_traits>

#include "../linear_checks.h"

namespace dlunits {
namespace {

constexpr int kEpilogueThreads = 256;
constexpr int64_t kMaxEpilogueBlocks = int64_t{1} << 16;  // grid-stride beyond: 2^24 threads at most
constexpr int kReduceColumns = 32;     // bias reduction: columns per block (one warp wide)
constexpr int kReduceRows = 16;        // bias reduction: row lanes per column

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename acc_t>
__device__ __forceinline__ acc_t sigmoid(acc_t z) {
  return acc_t(1) / (acc_t(1) + exp(-z));
}

// act(z); ReLU keeps NaN and -0 as torch does.
template <Activation act, typename acc_t>
__device__ __forceinline__ acc_t activate(acc_t z) {
  if constexpr (act == Activation::ReLU) return z < acc_t(0) ? acc_t(0) : z;
  if constexpr (act == Activation::Sigmoid) return sigmoid(z);
  if constexpr (act == Activation::Tanh) return tanh(z);
  return z;
}

// y[i] = act(z[i] + b[i mod N]) over contiguous z and y of `numel` elements, N per row; b may be
// null. z is the product in acc_t (float for the half types, then its own buffer) or in scalar_t
// (float32/float64: z is y itself, each element read, then written by the same thread).
template <typename scalar_t, typename product_t, Activation act, typename index_t>
__global__ void __launch_bounds__(kEpilogueThreads)
    forward_epilogue_kernel(const product_t* z, scalar_t* y, const scalar_t* b, index_t numel, index_t N) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t stride = static_cast<index_t>(gridDim.x) * kEpilogueThreads;
  for (index_t i = static_cast<index_t>(blockIdx.x) * kEpilogueThreads + threadIdx.x; i < numel; i += stride) {
    const acc_t bias = b != nullptr ? static_cast<acc_t>(b[i % N]) : acc_t(0);
    y[i] = static_cast<scalar_t>(activate<act>(static_cast<acc_t>(z[i]) + bias));
  }
}

// gz = dy ⊙ act'(y), element-wise over contiguous tensors of `numel` elements.
template <typename scalar_t, Activation act, typename index_t>
__global__ void __launch_bounds__(kEpilogueThreads)
    backward_epilogue_kernel(const scalar_t* dy, const scalar_t* y, scalar_t* gz, index_t numel) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t stride = static_cast<index_t>(gridDim.x) * kEpilogueThreads;
  for (index_t i = static_cast<index_t>(blockIdx.x) * kEpilogueThreads + threadIdx.x; i < numel; i += stride) {
    gz[i] = static_cast<scalar_t>(activation_grad<act>(static_cast<acc_t>(dy[i]), static_cast<acc_t>(y[i])));
  }
}

// db[o] = Σ_r gz[r, o]: thread (tx, ty) of block bx sums rows ty, ty + 16, ... of column
// bx·32 + tx (a warp reads 32 consecutive columns of one row), then the 16 partial
// sums of each column are added in row-lane order.
template <typename scalar_t, typename index_t>
__global__ void __launch_bounds__(kReduceColumns* kReduceRows)
    bias_grad_kernel(const scalar_t* gz, scalar_t* db, index_t M, index_t N) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t partial[kReduceRows][kReduceColumns + 1];  // +1: no bank conflicts on the column read
  const index_t o = static_cast<index_t>(blockIdx.x) * kReduceColumns + threadIdx.x;
  acc_t sum = 0;
  if (o < N) {
    for (index_t r = threadIdx.y; r < M; r += kReduceRows) sum += static_cast<acc_t>(gz[r * N + o]);
  }
  partial[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && o < N) {
    acc_t total = 0;
    for (int lane = 0; lane < kReduceRows; ++lane) total += partial[lane][threadIdx.x];
    db[o] = static_cast<scalar_t>(total);
  }
}

// Calls f(int32_t{}) when every element index, and an index one grid stride past the end
// (at most 2^24: kMaxEpilogueBlocks · kEpilogueThreads), fits int32; f(int64_t{}) otherwise.
template <typename F>
void dispatch_index_type(int64_t numel, F&& f) {
  if (numel + kMaxEpilogueBlocks * kEpilogueThreads < (int64_t{1} << 31)) {
    f(int32_t{});
  } else {
    f(int64_t{});
  }
}

unsigned epilogue_blocks(int64_t numel) {
  return static_cast<unsigned>(std::min(ceil_div(numel, kEpilogueThreads), kMaxEpilogueBlocks));
}

at::Tensor linear_cuda(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       c10::string_view activation) {
  const LinearGeometry g = check_linear(input, weight, bias, activation);
  const Activation act = activation_from_string(activation);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const at::Tensor x = input.reshape({g.rows, g.in_features});
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  // The result is allocated with its final size and computed through a 2-D view of it, so that
  // the op returns a tensor of its own, not a view (autograd forbids in-place ops on an output
  // that is a view, and layers like ReLU(inplace=True) follow a Linear).
  at::Tensor result = at::empty(g.output_sizes(), input.options());
  at::Tensor y = result.view({g.rows, g.out_features});
  if (y.numel() == 0) return result;
  if (act == Activation::None && !b.defined()) {  // y = x · Wᵀ, rounded once by cuBLAS
    at::mm_out(y, x, weight.t());
    return result;
  }
  const bool half_type = y.scalar_type() == at::kHalf || y.scalar_type() == at::kBFloat16;
  at::Tensor z = y;  // the product: y itself, or a float buffer for the half types (see the header)
  if (half_type) {
    z = at::empty({g.rows, g.out_features}, y.options().dtype(at::kFloat));
    if (g.in_features == 0) {
      z.zero_();
    } else {
      at::mm_out(z, x, weight.t(), at::kFloat);
    }
  } else {
    at::mm_out(y, x, weight.t());
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "dlunits_linear_cuda", [&] {
    using product_t = std::conditional_t<std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>,
                                         float, scalar_t>;
    TORCH_INTERNAL_ASSERT(z.scalar_type() == c10::CppTypeToScalarType<product_t>::value);
    dispatch_activation(act, [&](auto tag) {
      dispatch_index_type(y.numel(), [&](auto index_tag) {
        using index_t = decltype(index_tag);
        forward_epilogue_kernel<scalar_t, product_t, decltype(tag)::value, index_t>
            <<<epilogue_blocks(y.numel()), kEpilogueThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
                z.const_data_ptr<product_t>(), y.data_ptr<scalar_t>(), b.defined() ? b.data_ptr<scalar_t>() : nullptr,
                static_cast<index_t>(y.numel()), static_cast<index_t>(g.out_features));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  return result;
}

at::Tensor linear_activation_backward_cuda(const at::Tensor& grad_output, const at::Tensor& output,
                                           c10::string_view activation) {
  check_linear_activation_backward(grad_output, output, activation);
  const Activation act = activation_from_string(activation);
  const c10::cuda::CUDAGuard device_guard(grad_output.device());
  const at::Tensor dy = grad_output.contiguous();
  const at::Tensor y = output.contiguous();
  at::Tensor gz = at::empty(dy.sizes(), dy.options());
  if (gz.numel() == 0) return gz;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(),
                                  "dlunits_linear_activation_backward_cuda", [&] {
    dispatch_activation(act, [&](auto tag) {
      dispatch_index_type(gz.numel(), [&](auto index_tag) {
        using index_t = decltype(index_tag);
        backward_epilogue_kernel<scalar_t, decltype(tag)::value, index_t>
            <<<epilogue_blocks(gz.numel()), kEpilogueThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
                dy.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), gz.data_ptr<scalar_t>(),
                static_cast<index_t>(gz.numel()));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
  return gz;
}

at::Tensor linear_backward_input_cuda(const at::Tensor& grad_output, const at::Tensor& weight) {
  const LinearGeometry g = check_linear_backward_input(grad_output, weight);
  const c10::cuda::CUDAGuard device_guard(grad_output.device());
  at::Tensor grad_input = at::empty(g.input_sizes(), grad_output.options());
  at::Tensor dx = grad_input.view({g.rows, g.in_features});
  if (dx.numel() > 0) at::mm_out(dx, grad_output.reshape({g.rows, g.out_features}), weight);
  return grad_input;
}

at::Tensor linear_backward_weight_cuda(const at::Tensor& grad_output, const at::Tensor& input) {
  const LinearGeometry g = check_linear_backward_weight(grad_output, input);
  const c10::cuda::CUDAGuard device_guard(grad_output.device());
  at::Tensor dw = at::empty({g.out_features, g.in_features}, grad_output.options());
  if (dw.numel() == 0) return dw;
  if (g.rows == 0) return dw.zero_();
  at::mm_out(dw, grad_output.reshape({g.rows, g.out_features}).t(), input.reshape({g.rows, g.in_features}));
  return dw;
}

at::Tensor linear_backward_bias_cuda(const at::Tensor& grad_output) {
  const int64_t N = check_linear_backward_bias(grad_output);
  const c10::cuda::CUDAGuard device_guard(grad_output.device());
  const at::Tensor gz = grad_output.contiguous();
  at::Tensor db = at::empty({N}, gz.options());
  if (N == 0) return db;
  const int64_t M = gz.numel() / N;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gz.scalar_type(), "dlunits_linear_backward_bias_cuda",
                                  [&] {
    dispatch_index_type(gz.numel(), [&](auto index_tag) {
      using index_t = decltype(index_tag);
      const dim3 block(kReduceColumns, kReduceRows);
      bias_grad_kernel<scalar_t, index_t>
          <<<static_cast<unsigned>(ceil_div(N, kReduceColumns)), block, 0, at::cuda::getCurrentCUDAStream()>>>(
              gz.data_ptr<scalar_t>(), db.data_ptr<scalar_t>(), static_cast<index_t>(M), static_cast<index_t>(N));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return db;
}

}  // namespace
}  // namespace dlunits

TORCH_LIBRARY_IMPL(dlunits, CUDA, m) {
  m.impl("linear", &dlunits::linear_cuda);
  m.impl("linear_activation_backward", &dlunits::linear_activation_backward_cuda);
  m.impl("linear_backward_input", &dlunits::linear_backward_input_cuda);
  m.impl("linear_backward_weight", &dlunits::linear_backward_weight_cuda);
  m.impl("linear_backward_bias", &dlunits::linear_backward_bias_cuda);
}
