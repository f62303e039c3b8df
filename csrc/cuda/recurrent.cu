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
// Persistent kernels: a padded sequence (every step has the whole batch) without a
// projection runs its whole recurrence in one cooperative launch where it fits,
// forward and backward through time (each described above its kernel).
// Block k owns hidden units j0 .. j0 + U - 1 (U = ceil(H / SMs)) and keeps their G·U
// rows of W_hh in shared memory for all T steps; per step it computes those rows'
// dot products with every h_{t-1} (warp per dot product, shuffle reduction), then the
// gates, c_t and h_t of its units, writes h_t, and the grid synchronises (grid.sync()
// orders the writes before the next step's reads). It needs cooperative launch, every
// block co-resident (one per SM suffices), and shared memory G·U·H elements + G·U·B
// accumulators within 48 KiB: e.g. H = 256, B = 16 on 132 SMs: U = 2, 8.5 KiB. Other sizes,
// packed sequences, projections and single steps take the per-step path (one fused
// launch and one cuBLAS product per step). The weight gradients stay whole-sequence
// cuBLAS products after the backward kernel.
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
#include <cooperative_groups.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <utility>

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

// --- the persistent forward ------------------------------------------------------------------------------------------

constexpr int kPersistentThreads = 256;
constexpr size_t kPersistentSharedBytes = 48 * 1024;

// G gates (1: RNN, 4: LSTM); index math in int32 (the launcher checks T·B·G·H < 2^30).
template <typename scalar_t, int G>
__global__ void __launch_bounds__(kPersistentThreads) persistent_forward_kernel(PersistentForward<scalar_t> p,
                                                                                   int units) {
  using acc_t = at::opmath_type<scalar_t>;
  using M = DeviceMath<acc_t>;
  namespace cg = cooperative_groups;
  cg::grid_group grid = cg::this_grid();
  extern __shared__ __align__(16) unsigned char shared_raw[];
  const int H = static_cast<int>(p.hidden), B = static_cast<int>(p.batch), T = static_cast<int>(p.steps);
  const int GH = G * H;
  const int rows = G * units;                                      // this block's rows of W_hh
  acc_t* pre = reinterpret_cast<acc_t*>(shared_raw);               // [rows, B] h_{t-1} · W_hhᵀ
  scalar_t* w = reinterpret_cast<scalar_t*>(pre + rows * B);       // [rows, H] local row r = k·U + u
  const int j0 = blockIdx.x * units;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;

  for (int e = threadIdx.x; e < rows * H; e += blockDim.x) {
    const int r = e / H, i = e - r * H, k = r / units, j = j0 + r % units;
    w[e] = j < H ? p.weight_hh[(k * H + j) * H + i] : scalar_t(0);
  }
  __syncthreads();

  for (int s = 0; s < T; ++s) {
    const int t = p.reverse ? T - 1 - s : s;
    const int prev = p.reverse ? t + 1 : t - 1;
    const scalar_t* h_prev = s == 0 ? p.h0 : p.output + prev * B * H;
    for (int o = warp; o < rows * B; o += warps) {
      const int r = o / B, b = o - r * B;
      acc_t sum = 0;
      for (int i = lane; i < H; i += 32) sum += acc_t(w[r * H + i]) * acc_t(h_prev[b * H + i]);
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
      if (lane == 0) pre[o] = sum;
    }
    __syncthreads();
    for (int q = threadIdx.x; q < units * B; q += blockDim.x) {
      const int u = q / B, b = q - u * B, j = j0 + u;
      if (j >= H) continue;
      const int row = t * B + b;
      acc_t z[G];
#pragma unroll
      for (int k = 0; k < G; ++k) {
        z[k] = pre[(k * units + u) * B + b] + acc_t(p.input_proj[row * GH + k * H + j]) + acc_t(p.bias[k * H + j]);
      }
      acc_t h;
      if constexpr (G == 4) {
        const acc_t i = M::sigmoid(z[0]), f = M::sigmoid(z[1]), g = M::tanh(z[2]), o = M::sigmoid(z[3]);
        const acc_t c = f * acc_t(p.c_state[b * H + j]) + i * g;
        h = o * M::tanh(c);
        p.gates[row * GH + j] = static_cast<scalar_t>(i);
        p.gates[row * GH + H + j] = static_cast<scalar_t>(f);
        p.gates[row * GH + 2 * H + j] = static_cast<scalar_t>(g);
        p.gates[row * GH + 3 * H + j] = static_cast<scalar_t>(o);
        p.cells[row * H + j] = static_cast<scalar_t>(c);
        p.c_state[b * H + j] = static_cast<scalar_t>(c);
      } else {
        h = p.activation == RnnActivation::Tanh ? M::tanh(z[0]) : (z[0] > acc_t(0) ? z[0] : acc_t(0));
      }
      p.output[row * H + j] = static_cast<scalar_t>(h);
      if (s == T - 1) p.h_state[b * H + j] = static_cast<scalar_t>(h);
    }
    grid.sync();  // also a block barrier: pre is free for the next step
  }
}

// --- the persistent backward through time ----------------------------------------------------------------------------
// Block k owns hidden units j0 .. j0 + U - 1 and keeps the G·H × U columns of W_hh for them
// (wt[u·G·H + r] = W_hh[r, j0 + u]). Per step, in the backward order:
//   dh[b, j] = Σ_r dZ_{later step}[b, r] · W_hh[r, j]   (grad_h_n at the first), a warp per (b, j)
//   then the fused gate gradients of its (b, j), as lstm_backward_kernel / rnn_backward_kernel,
// and a grid sync; after the last step grad_h0 = dZ_first · W_hh the same way.

// dh[u·B + b] for this block's units, from the dZ rows of step `step` (a warp per output).
template <typename scalar_t, typename acc_t>
__device__ void hidden_gradient_from(const scalar_t* wt, const scalar_t* grad_gates, int step, int units, int B,
                                     int GH, acc_t* dh) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  for (int o = warp; o < units * B; o += warps) {
    const int u = o / B, b = o - u * B;
    const scalar_t* dz = grad_gates + (step * B + b) * GH;
    acc_t sum = 0;
    for (int r = lane; r < GH; r += 32) sum += acc_t(wt[u * GH + r]) * acc_t(dz[r]);
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_down_sync(0xffffffffu, sum, offset);
    if (lane == 0) dh[o] = sum;
  }
}

template <typename scalar_t, int G>
__global__ void __launch_bounds__(kPersistentThreads) persistent_backward_kernel(PersistentBackward<scalar_t> p,
                                                                                    int units) {
  using acc_t = at::opmath_type<scalar_t>;
  using M = DeviceMath<acc_t>;
  namespace cg = cooperative_groups;
  cg::grid_group grid = cg::this_grid();
  extern __shared__ __align__(16) unsigned char shared_raw[];
  const int H = static_cast<int>(p.hidden), B = static_cast<int>(p.batch), T = static_cast<int>(p.steps);
  const int GH = G * H;
  acc_t* dh = reinterpret_cast<acc_t*>(shared_raw);                // [U, B]
  scalar_t* wt = reinterpret_cast<scalar_t*>(dh + units * B);      // [U, G·H]
  const int j0 = blockIdx.x * units;

  for (int e = threadIdx.x; e < units * GH; e += blockDim.x) {
    const int u = e / GH, r = e - u * GH, j = j0 + u;
    wt[e] = j < H ? p.weight_hh[r * H + j] : scalar_t(0);
  }
  __syncthreads();

  for (int s = 0; s < T; ++s) {
    const int t = p.reverse ? s : T - 1 - s;           // backward order: the forward's, reversed
    const int later = p.reverse ? t - 1 : t + 1;       // the step processed just before (its dZ is ready)
    if (s == 0) {
      for (int q = threadIdx.x; q < units * B; q += blockDim.x) {
        const int u = q / B, b = q - u * B, j = j0 + u;
        dh[q] = j < H ? acc_t(p.grad_h[b * H + j]) : acc_t(0);
      }
    } else {
      hidden_gradient_from(wt, p.grad_gates, later, units, B, GH, dh);
    }
    __syncthreads();
    const int before = p.reverse ? t + 1 : t - 1;      // the forward's previous step (c_{t-1})
    const bool has_before = before >= 0 && before < T;
    for (int q = threadIdx.x; q < units * B; q += blockDim.x) {
      const int u = q / B, b = q - u * B, j = j0 + u;
      if (j >= H) continue;
      const int row = t * B + b;
      const acc_t dh_t = acc_t(p.grad_output[row * H + j]) + dh[q];
      scalar_t* dz = p.grad_gates + row * GH;
      if constexpr (G == 4) {
        const scalar_t* gates = p.gates + row * GH;
        const acc_t i = acc_t(gates[j]), f = acc_t(gates[H + j]), g = acc_t(gates[2 * H + j]),
                    o = acc_t(gates[3 * H + j]);
        const acc_t c_prev = acc_t(has_before ? p.cells[before * B * H + b * H + j] : p.c0[b * H + j]);
        const acc_t tanh_c = M::tanh(acc_t(p.cells[row * H + j]));
        const acc_t dc = acc_t(p.grad_c[b * H + j]) + dh_t * o * (acc_t(1) - tanh_c * tanh_c);
        dz[j] = static_cast<scalar_t>(dc * g * i * (acc_t(1) - i));
        dz[H + j] = static_cast<scalar_t>(dc * c_prev * f * (acc_t(1) - f));
        dz[2 * H + j] = static_cast<scalar_t>(dc * i * (acc_t(1) - g * g));
        dz[3 * H + j] = static_cast<scalar_t>(dh_t * tanh_c * o * (acc_t(1) - o));
        p.grad_c[b * H + j] = static_cast<scalar_t>(dc * f);
      } else {
        const acc_t h = acc_t(p.output[row * H + j]);
        const acc_t slope =
            p.activation == RnnActivation::Tanh ? acc_t(1) - h * h : (h > acc_t(0) ? acc_t(1) : acc_t(0));
        dz[j] = static_cast<scalar_t>(dh_t * slope);
      }
    }
    grid.sync();  // every dZ_t written before the next step reads it; also frees dh
  }
  // grad_h0 = dZ of the last step processed (the forward's first) · W_hh, for this block's units.
  hidden_gradient_from(wt, p.grad_gates, p.reverse ? T - 1 : 0, units, B, GH, dh);
  __syncthreads();
  for (int q = threadIdx.x; q < units * B; q += blockDim.x) {
    const int u = q / B, b = q - u * B, j = j0 + u;
    if (j < H) p.grad_h[b * H + j] = static_cast<scalar_t>(dh[q]);
  }
}

// The launch conditions of the persistent kernels: cooperative launch, T·B·G·H < 2^30 (int32
// indices), shared memory within kPersistentSharedBytes, every block resident. Returns the
// blocks and units per block, or 0 blocks when the sizes do not fit.
template <typename scalar_t, int G, typename Kernel>
std::pair<int, int> persistent_grid(Kernel kernel, int64_t steps, int64_t batch, int64_t hidden, size_t* shared) {
  using acc_t = at::opmath_type<scalar_t>;
  if (steps * batch * G * hidden >= (int64_t(1) << 30)) return {0, 0};
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  if (!prop->cooperativeLaunch) return {0, 0};
  const int sms = prop->multiProcessorCount;
  const int units = static_cast<int>((hidden + sms - 1) / sms);
  const int blocks = static_cast<int>((hidden + units - 1) / units);
  // G·U rows (forward) or columns (backward) of W_hh, and G·U·B accumulators (the backward uses U·B).
  *shared = size_t(G) * units * (hidden * sizeof(scalar_t) + batch * sizeof(acc_t));
  if (*shared > kPersistentSharedBytes) return {0, 0};
  int per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kPersistentThreads, *shared));
  if (int64_t(per_sm) * sms < blocks) return {0, 0};  // grid.sync() needs every block resident
  return {blocks, units};
}

// A cooperative launch, or false when the device cannot hold the whole grid at once after all
// (fewer SMs than it reports, e.g. under MPS): the caller then runs the per-step path.
inline bool launch_cooperative(const void* kernel, int blocks, void** args, size_t shared) {
  const cudaError_t status = cudaLaunchCooperativeKernel(kernel, dim3(blocks), dim3(kPersistentThreads), args,
                                                         shared, at::cuda::getCurrentCUDAStream());
  if (status == cudaErrorCooperativeLaunchTooLarge) {
    (void)cudaGetLastError();  // clear the error: nothing was launched
    return false;
  }
  C10_CUDA_CHECK(status);
  return true;
}

template <typename scalar_t, int G>
bool launch_persistent_backward(const PersistentBackward<scalar_t>& p) {
  const auto kernel = persistent_backward_kernel<scalar_t, G>;
  size_t shared = 0;
  const auto [blocks, units] = persistent_grid<scalar_t, G>(kernel, p.steps, p.batch, p.hidden, &shared);
  if (blocks == 0) return false;
  PersistentBackward<scalar_t> params = p;
  int units_arg = units;
  void* args[] = {&params, &units_arg};
  return launch_cooperative(reinterpret_cast<const void*>(kernel), blocks, args, shared);
}

template <typename scalar_t, int G>
bool launch_persistent_forward(const PersistentForward<scalar_t>& p) {
  const auto kernel = persistent_forward_kernel<scalar_t, G>;
  size_t shared = 0;
  const auto [blocks, units] = persistent_grid<scalar_t, G>(kernel, p.steps, p.batch, p.hidden, &shared);
  if (blocks == 0) return false;
  PersistentForward<scalar_t> params = p;
  int units_arg = units;
  void* args[] = {&params, &units_arg};
  return launch_cooperative(reinterpret_cast<const void*>(kernel), blocks, args, shared);
}

// Blocks for n elements, one per thread, capped (the kernels stride over the rest).
int blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65535)));
}

bool fits_int32(int64_t n) { return n < std::numeric_limits<int32_t>::max() / 2; }

// Launches kernel<scalar_t, index_t> with a thread per element of n, on the current stream;
// index_t is int32_t when every index the kernel forms stays below index_bound's int32 limit.
#define DLUNITS_LAUNCH(kernel, n, index_bound, ...)                                              \
  do {                                                                                           \
    const auto stream = at::cuda::getCurrentCUDAStream();                                        \
    if (fits_int32(index_bound)) {                                                               \
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

  // A cell is the per-step path: one cuBLAS product for the input, one for the state.
  template <typename scalar_t>
  static bool cell_forward(const CellForward<scalar_t>&) {
    return false;
  }

  template <typename scalar_t>
  static bool persistent_forward(const PersistentForward<scalar_t>& p) {
    if (p.steps < 2) return false;  // one step (a cell) is no recurrence: the step kernels
    return p.gate_count == 4 ? launch_persistent_forward<scalar_t, 4>(p) : launch_persistent_forward<scalar_t, 1>(p);
  }

  template <typename scalar_t>
  static bool persistent_backward(const PersistentBackward<scalar_t>& p) {
    if (p.steps < 2) return false;
    return p.gate_count == 4 ? launch_persistent_backward<scalar_t, 4>(p) : launch_persistent_backward<scalar_t, 1>(p);
  }

  // The largest index a step kernel forms is rows·G·H (the gates): 1 gate for the RNN, 4 for the LSTM.
  template <typename scalar_t>
  static void rnn_forward_step(const RnnForwardStep<scalar_t>& s) {
    DLUNITS_LAUNCH(rnn_forward_kernel, s.rows * s.hidden, s.rows * s.hidden, s);
  }

  template <typename scalar_t>
  static void rnn_backward_step(const RnnBackwardStep<scalar_t>& s) {
    DLUNITS_LAUNCH(rnn_backward_kernel, s.rows * s.hidden, s.rows * s.hidden, s);
  }

  template <typename scalar_t>
  static void lstm_forward_step(const LstmForwardStep<scalar_t>& s) {
    DLUNITS_LAUNCH(lstm_forward_kernel, s.rows * s.hidden, 4 * s.rows * s.hidden, s);
  }

  template <typename scalar_t>
  static void lstm_backward_step(const LstmBackwardStep<scalar_t>& s) {
    DLUNITS_LAUNCH(lstm_backward_kernel, s.rows * s.hidden, 4 * s.rows * s.hidden, s);
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

TORCH_LIBRARY_IMPL(dlunits, CUDA, m) { dlunits::register_recurrent_ops<dlunits::CudaKernels>(m); }
