// dlunits — the recurrent units on CUDA: RNNCell, LSTMCell, and one layer and
// direction of RNN and LSTM over a whole (possibly packed) sequence.
//
// The recurrence (step order, matrix products, saved tensors) is
// csrc/recurrent_driver.h, shared with the CPU; its header comment has the
// equations, FLOPs and bytes. Its matrix products (the input projection of all
// steps at once, h_{t-1}·W_hhᵀ per step, the weight gradients) go through
// at::mm / at::mm_out, i.e. cuBLAS, as the project allows for the gate
// pre-activations. This file is the fused step kernels:
//   forward   one thread per (row, hidden unit) reads the G pre-activations of
//             X_t and h_{t-1}·W_hhᵀ and the bias, computes every gate, c_t and
//             h_t, and writes the saved gates, c_t, h_t and the running state;
//   backward  one thread per (row, hidden unit) reads the upstream gradients and
//             the saved gates and cells and writes every gate's pre-activation
//             gradient and dc_{t-1};
// plus the bias gradient: one thread per column sums the rows in order
// (deterministic, no atomics). So a step is one cuBLAS product and one launch
// forward, one launch and one product backward.
//
// Not here yet: a persistent kernel that keeps W_hh on chip across time steps
// (one launch per layer and direction). Every size runs the per-step path.
//
// Precision: float and double compute in their own type; float16 and bfloat16
// load, compute in float, and store rounded. Index math is int32 when
// rows·G·H < 2^31 (every index a kernel forms is below that), int64 otherwise.
// Launches go on the current stream under a device guard, each followed by a
// launch check.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "../recurrent_driver.h"

namespace dlunits {
namespace {

constexpr int kThreads = 256;

template <typename T>
struct DeviceMath;

template <>
struct DeviceMath<float> {
  __device__ static float sigmoid(float x) { return 1.0f / (1.0f + ::expf(-x)); }
  __device__ static float tanh(float x) { return ::tanhf(x); }
};

template <>
struct DeviceMath<double> {
  __device__ static double sigmoid(double x) { return 1.0 / (1.0 + ::exp(-x)); }
  __device__ static double tanh(double x) { return ::tanh(x); }
};

template <typename scalar_t, typename index_t>
__global__ void rnn_forward_kernel(RnnForwardStep<scalar_t> s) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t H = s.hidden, n = s.rows * H;
  for (index_t e = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t j = e % H;
    const acc_t z = acc_t(s.input_proj[e]) + acc_t(s.hidden_proj[e]) + acc_t(s.bias[j]);
    const acc_t h = s.activation == RnnActivation::Tanh ? DeviceMath<acc_t>::tanh(z) : (z > acc_t(0) ? z : acc_t(0));
    s.output[e] = static_cast<scalar_t>(h);
    s.h_state[e] = static_cast<scalar_t>(h);
  }
}

template <typename scalar_t, typename index_t>
__global__ void rnn_backward_kernel(RnnBackwardStep<scalar_t> s) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t n = s.rows * static_cast<index_t>(s.hidden);
  for (index_t e = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const acc_t dh = acc_t(s.grad_output[e]) + acc_t(s.grad_state[e]);
    const acc_t h = acc_t(s.output[e]);
    const acc_t slope = s.activation == RnnActivation::Tanh ? acc_t(1) - h * h : (h > acc_t(0) ? acc_t(1) : acc_t(0));
    s.grad_gates[e] = static_cast<scalar_t>(dh * slope);
  }
}

template <typename scalar_t, typename index_t>
__global__ void lstm_forward_kernel(LstmForwardStep<scalar_t> s) {
  using acc_t = at::opmath_type<scalar_t>;
  using M = DeviceMath<acc_t>;
  const index_t H = s.hidden, n = s.rows * H;
  for (index_t e = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t b = e / H, j = e - b * H;
    const index_t g0 = b * 4 * H + j;  // gate k of (b, j) is at g0 + k·H
    acc_t z[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      z[k] = acc_t(s.input_proj[g0 + k * H]) + acc_t(s.hidden_proj[g0 + k * H]) +
             acc_t(s.bias[k * H + j]);
    }
    const acc_t i = M::sigmoid(z[0]), f = M::sigmoid(z[1]), g = M::tanh(z[2]), o = M::sigmoid(z[3]);
    const acc_t c = f * acc_t(s.c_state[e]) + i * g;
    const acc_t h = o * M::tanh(c);
    s.gates[g0] = static_cast<scalar_t>(i);
    s.gates[g0 + H] = static_cast<scalar_t>(f);
    s.gates[g0 + 2 * H] = static_cast<scalar_t>(g);
    s.gates[g0 + 3 * H] = static_cast<scalar_t>(o);
    s.c_state[e] = static_cast<scalar_t>(c);
    s.cells[e] = static_cast<scalar_t>(c);
    s.hidden_out[e] = static_cast<scalar_t>(h);
    if (s.h_state) s.h_state[e] = static_cast<scalar_t>(h);
  }
}

template <typename scalar_t, typename index_t>
__global__ void lstm_backward_kernel(LstmBackwardStep<scalar_t> s) {
  using acc_t = at::opmath_type<scalar_t>;
  using M = DeviceMath<acc_t>;
  const index_t H = s.hidden, n = s.rows * H;
  for (index_t e = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t b = e / H, j = e - b * H;
    const index_t g0 = b * 4 * H + j;
    const acc_t dh = acc_t(s.grad_hidden[e]) + (s.grad_state ? acc_t(s.grad_state[e]) : acc_t(0));
    const acc_t i = acc_t(s.gates[g0]), f = acc_t(s.gates[g0 + H]), g = acc_t(s.gates[g0 + 2 * H]),
                o = acc_t(s.gates[g0 + 3 * H]);
    const acc_t c_prev = acc_t(b < s.c_prev_rows ? s.c_prev[e] : s.c0[e]);
    const acc_t tanh_c = M::tanh(acc_t(s.cells[e]));
    const acc_t dc = acc_t(s.grad_c_state[e]) + dh * o * (acc_t(1) - tanh_c * tanh_c);
    s.grad_gates[g0] = static_cast<scalar_t>(dc * g * i * (acc_t(1) - i));
    s.grad_gates[g0 + H] = static_cast<scalar_t>(dc * c_prev * f * (acc_t(1) - f));
    s.grad_gates[g0 + 2 * H] = static_cast<scalar_t>(dc * i * (acc_t(1) - g * g));
    s.grad_gates[g0 + 3 * H] = static_cast<scalar_t>(dh * tanh_c * o * (acc_t(1) - o));
    s.grad_c_state[e] = static_cast<scalar_t>(dc * f);
    if (s.hidden_out) s.hidden_out[e] = static_cast<scalar_t>(o * tanh_c);
  }
}

// out[j] = Σ_r m[r, j], rows in order: neighbouring threads read neighbouring columns.
template <typename scalar_t, typename index_t>
__global__ void column_sum_kernel(const scalar_t* m, index_t rows, index_t cols, scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  for (index_t j = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; j < cols;
       j += static_cast<index_t>(gridDim.x) * blockDim.x) {
    acc_t sum = 0;
    for (index_t r = 0; r < rows; ++r) sum += acc_t(m[r * cols + j]);
    out[j] = static_cast<scalar_t>(sum);
  }
}

// Blocks for n elements, one per thread, capped (the kernels stride over the rest).
int blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65535)));
}

bool fits_int32(int64_t n) { return n < std::numeric_limits<int32_t>::max() / 2; }

// Launches kernel<scalar_t, index_t> over n elements on the current stream.
#define DLUNITS_LAUNCH(kernel, n, ...)                                                           \
  do {                                                                                           \
    const auto stream = at::cuda::getCurrentCUDAStream();                                        \
    if (fits_int32(n)) {                                                                         \
      kernel<scalar_t, int32_t><<<blocks_for(n), kThreads, 0, stream>>>(__VA_ARGS__);            \
    } else {                                                                                     \
      kernel<scalar_t, int64_t><<<blocks_for(n), kThreads, 0, stream>>>(__VA_ARGS__);            \
    }                                                                                            \
    C10_CUDA_KERNEL_LAUNCH_CHECK();                                                              \
  } while (0)

struct CudaKernels {
  struct DeviceGuard {
    c10::cuda::CUDAGuard guard;
    explicit DeviceGuard(const at::Tensor& t) : guard(t.device()) {}
  };

  // The largest index a step kernel forms is rows·4H (the gates), so n for the index type is that.
  template <typename scalar_t>
  static void rnn_forward_step(const RnnForwardStep<scalar_t>& s) {
    DLUNITS_LAUNCH(rnn_forward_kernel, s.rows * s.hidden, s);
  }

  template <typename scalar_t>
  static void rnn_backward_step(const RnnBackwardStep<scalar_t>& s) {
    DLUNITS_LAUNCH(rnn_backward_kernel, s.rows * s.hidden, s);
  }

  template <typename scalar_t>
  static void lstm_forward_step(const LstmForwardStep<scalar_t>& s) {
    const int64_t n = s.rows * s.hidden;
    const auto stream = at::cuda::getCurrentCUDAStream();
    if (fits_int32(4 * n)) {
      lstm_forward_kernel<scalar_t, int32_t><<<blocks_for(n), kThreads, 0, stream>>>(s);
    } else {
      lstm_forward_kernel<scalar_t, int64_t><<<blocks_for(n), kThreads, 0, stream>>>(s);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <typename scalar_t>
  static void lstm_backward_step(const LstmBackwardStep<scalar_t>& s) {
    const int64_t n = s.rows * s.hidden;
    const auto stream = at::cuda::getCurrentCUDAStream();
    if (fits_int32(4 * n)) {
      lstm_backward_kernel<scalar_t, int32_t><<<blocks_for(n), kThreads, 0, stream>>>(s);
    } else {
      lstm_backward_kernel<scalar_t, int64_t><<<blocks_for(n), kThreads, 0, stream>>>(s);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <typename scalar_t>
  static void column_sum(const scalar_t* m, int64_t rows, int64_t cols, scalar_t* out) {
    const auto stream = at::cuda::getCurrentCUDAStream();
    if (fits_int32(rows * cols)) {
      column_sum_kernel<scalar_t, int32_t><<<blocks_for(cols), kThreads, 0, stream>>>(
          m, static_cast<int32_t>(rows), static_cast<int32_t>(cols), out);
    } else {
      column_sum_kernel<scalar_t, int64_t><<<blocks_for(cols), kThreads, 0, stream>>>(m, rows, cols, out);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace
}  // namespace dlunits

TORCH_LIBRARY_IMPL(dlunits, CUDA, m) {
  using K = dlunits::CudaKernels;
  m.impl("rnn_cell", &dlunits::rnn_cell_op<K>);
  m.impl("rnn_cell_backward", &dlunits::rnn_cell_backward_op<K>);
  m.impl("lstm_cell", &dlunits::lstm_cell_op<K>);
  m.impl("lstm_cell_backward", &dlunits::lstm_cell_backward_op<K>);
  m.impl("rnn_layer", &dlunits::rnn_layer_op<K>);
  m.impl("rnn_layer_backward", &dlunits::rnn_layer_backward_op<K>);
  m.impl("lstm_layer", &dlunits::lstm_layer_op<K>);
  m.impl("lstm_layer_backward", &dlunits::lstm_layer_backward_op<K>);
}
