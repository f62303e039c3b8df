// dlunits — the recurrent units on CUDA: RNNCell, LSTMCell, and one layer and
// direction of RNN and LSTM over a whole (possibly packed) sequence.
//
// The recurrence (step order, matrix products, saved tensors) is
// csrc/recurrent_driver.h, shared with the CPU; its header comment has the
// equations, FLOPs and bytes. Its matrix products (the input projection of all
// steps at once, h_{t-1}·W_hhᵀ per step, the weight gradients) go through
// at::mm / at::mm_out, i.e. cuBLAS, as the project allows for the gate
// pre-activations (a cell's two products go into one buffer, the second through
// addmm_, cuBLAS with beta = 1). This file is the fused step kernels:
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
// Persistent kernels: a padded sequence (every step has the whole batch) of at most 32 rows
// without a projection runs its whole recurrence in one cooperative launch where it fits, forward
// and backward through time (each described above its kernel). Block k owns hidden units
// j0 .. j0 + U - 1 (U = ceil(H / SMs)) and keeps their G·U rows of W_hh in shared memory
// for all T steps; per step it stages the operand every block shares (h_{t-1} forward, the
// later step's dZ backward) into shared memory in tiles of batch rows, forms its units' dot
// products from there (a warp per weight row and 4 batch rows), runs the fused gate pass of
// its units, and the grid synchronises (grid.sync() orders the writes before the next step's
// reads). It needs cooperative launch, every block co-resident (one per SM), and shared
// memory (up to the device's opt-in limit, 227 KiB on Hopper) for the weights plus at least
// one staged batch row: e.g. H = 256, B = 16 on 132 SMs: U = 2, 25 KiB forward, 75 KiB
// backward; float32 LSTM weights past about H = 1250 do not fit. Other sizes,
// packed sequences, projections and single steps take the per-step path (one fused launch
// and one cuBLAS product per step); DLUNITS_CUDA_PERSISTENT=0 sends every sequence there.
// The weight gradients stay whole-sequence cuBLAS products after the backward kernel.
//
// A cell is two cuBLAS products into one buffer and cell_forward_kernel. DLUNITS_CUDA_FUSED_CELL=1
// runs it as one launch of ours instead (fused_cell_kernel: the persistent forward's step without
// the persistence), for a batch of at most 32: a cell is bound by its host time, and a launch of
// ours costs a fifth of a cuBLAS call's. It is opt-in until a GPU run has tested and timed it
// (written, compiled and checked against a NumPy model of its index math without a GPU).
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
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
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

// The RNN's ReLU and its derivative as torch's: NaN stays NaN (z < 0 is false for it), and the slope
// is threshold_backward's [h > 0] written as !(h <= 0), 1 for NaN.
template <typename acc_t>
__device__ acc_t relu(acc_t z) {
  return z < acc_t(0) ? acc_t(0) : z;
}

template <typename acc_t>
__device__ acc_t relu_slope(acc_t h) {
  return h <= acc_t(0) ? acc_t(0) : acc_t(1);
}

// The LSTM's gates for one (row, unit) from their pre-activations z (i, f, g, o) and c_{t-1}: stores
// the activated gates H apart from `gates`, sets c to c_t, and returns h_t = o ⊙ tanh(c_t).
template <typename scalar_t, typename acc_t, typename index_t>
__device__ acc_t lstm_gate_pass(const acc_t (&z)[4], acc_t c_prev, scalar_t* gates, index_t H, acc_t& c) {
  using M = DeviceMath<acc_t>;
  const acc_t i = M::sigmoid(z[0]), f = M::sigmoid(z[1]), g = M::tanh(z[2]), o = M::sigmoid(z[3]);
  c = f * c_prev + i * g;
  gates[0] = static_cast<scalar_t>(i);
  gates[H] = static_cast<scalar_t>(f);
  gates[2 * H] = static_cast<scalar_t>(g);
  gates[3 * H] = static_cast<scalar_t>(o);
  return o * M::tanh(c);
}

// h_t of unit u, batch row bl, from pre-activations staged in shared memory as [G·units, bt] (gate k of
// unit u in row k·units + u): the LSTM's gate pass (c_prev in, gates written, c out) or the RNN's
// activation. Shared by the persistent forward and the one-launch cell.
template <typename scalar_t, int G, typename acc_t>
__device__ acc_t staged_unit_output(const acc_t* pre, int units, int bt, int u, int bl, RnnActivation activation,
                                    acc_t c_prev, scalar_t* gates, int64_t H, acc_t& c) {
  if constexpr (G == 4) {
    const acc_t z[4] = {pre[u * bt + bl], pre[(units + u) * bt + bl], pre[(2 * units + u) * bt + bl],
                        pre[(3 * units + u) * bt + bl]};
    return lstm_gate_pass<scalar_t>(z, c_prev, gates, H, c);
  } else {
    const acc_t z = pre[u * bt + bl];
    return activation == RnnActivation::Tanh ? DeviceMath<acc_t>::tanh(z) : relu(z);
  }
}

template <typename scalar_t, typename index_t>
__global__ void rnn_forward_kernel(RnnForwardStep<scalar_t> s) {
  using acc_t = at::opmath_type<scalar_t>;
  const index_t H = s.hidden, n = s.rows * H;
  for (index_t e = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t j = e % H;
    const acc_t z = acc_t(s.input_proj[e]) + acc_t(s.hidden_proj[e]) + acc_t(s.bias[j]);
    const acc_t h = s.activation == RnnActivation::Tanh ? DeviceMath<acc_t>::tanh(z) : relu(z);
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
    const acc_t slope = s.activation == RnnActivation::Tanh ? acc_t(1) - h * h : relu_slope(h);
    s.grad_gates[e] = static_cast<scalar_t>(dh * slope);
  }
}

template <typename scalar_t, typename index_t>
__global__ void lstm_forward_kernel(LstmForwardStep<scalar_t> s) {
  using acc_t = at::opmath_type<scalar_t>;
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
    acc_t c;
    const acc_t h = lstm_gate_pass<scalar_t>(z, acc_t(s.c_state[e]), s.gates + g0, H, c);
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

// A cell's step, whole (CudaKernels::cell_forward): pre = x·W_ihᵀ + h0·W_hhᵀ from two cuBLAS products
// into one buffer (the second accumulating), then this pass, which adds both biases and reads c0 and
// writes c_n itself, so that a cell is three launches with nothing combined or copied before them.
template <typename scalar_t>
struct CellStep {
  const scalar_t* pre;      // [rows, G·H]
  const scalar_t* bias_ih;  // [G·H], or null
  const scalar_t* bias_hh;  // [G·H], or null
  const scalar_t* c0;       // [rows, H]  (LSTM)
  scalar_t* output;         // [rows, H]
  scalar_t* h_n;            // [rows, H]
  scalar_t* c_n;            // [rows, H]  (LSTM)
  scalar_t* gates;          // [rows, 4H] (LSTM)
  scalar_t* cells;          // [rows, H]  (LSTM)
  int64_t rows, hidden;
  bool lstm;
  RnnActivation activation;
};

template <typename scalar_t, typename index_t>
__global__ void cell_forward_kernel(CellStep<scalar_t> s) {
  using acc_t = at::opmath_type<scalar_t>;
  using M = DeviceMath<acc_t>;
  const index_t H = s.hidden, n = s.rows * H, G = s.lstm ? 4 : 1;
  for (index_t e = blockIdx.x * static_cast<index_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<index_t>(gridDim.x) * blockDim.x) {
    const index_t b = e / H, j = e - b * H;
    const index_t g0 = b * G * H + j;  // gate k of (b, j) is at g0 + k·H
    const auto z = [&](index_t k) {
      return acc_t(s.pre[g0 + k * H]) + (s.bias_ih ? acc_t(s.bias_ih[k * H + j]) : acc_t(0)) +
             (s.bias_hh ? acc_t(s.bias_hh[k * H + j]) : acc_t(0));
    };
    acc_t h;
    if (!s.lstm) {
      const acc_t z0 = z(0);
      h = s.activation == RnnActivation::Tanh ? M::tanh(z0) : relu(z0);
    } else {
      const acc_t zs[4] = {z(0), z(1), z(2), z(3)};
      acc_t c;
      h = lstm_gate_pass<scalar_t>(zs, acc_t(s.c0[e]), s.gates + g0, H, c);
      s.c_n[e] = static_cast<scalar_t>(c);
      s.cells[e] = static_cast<scalar_t>(c);
    }
    s.output[e] = static_cast<scalar_t>(h);
    s.h_n[e] = static_cast<scalar_t>(h);
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

// --- the persistent kernels ------------------------------------------------------------------------------------------
// One cooperative launch per layer and direction runs every step; block k owns hidden units
// j0 .. j0 + U - 1 (U = ceil(H / SMs)) and keeps their part of W_hh in shared memory for all T
// steps. A step reads what every block wrote in the step before (h_{t-1} forward, dZ backward), so
// steps are separated by grid.sync(), which also orders those global writes before the reads.
// Within a step, the operand all blocks share (h_{t-1}, or dZ of the later step) is staged into
// shared memory in tiles of Bt batch rows, coalesced, together with what the step reads that does
// not depend on the recurrence (the input projection and bias forward; the saved gates, cells and
// grad_output backward), so those loads are in flight at once instead of one latency each. Each
// warp then forms the dot products of one W_hh row (column, backward) with 4 staged batch rows, so
// one weight load feeds 4 FMAs and 4 shuffle reductions run interleaved.

constexpr int kPersistentThreads = 256;
constexpr int kBatchPerWarp = 4;
// Above this batch the per-step path is faster: each block stages and multiplies every batch
// row, while cuBLAS spreads a large batch's product over the whole GPU (H200, float32, T=100,
// 512/512: B=128 forward 12.1 ms persistent against 4.0 ms per step; 256/256: B=16 0.98 against
// 2.6 ms).
constexpr int64_t kPersistentMaxBatch = 32;

// The shared-memory plan of a persistent launch: Bt batch rows per tile and the bytes of
// shared memory.
struct PersistentPlan {
  int blocks = 0, units = 0, batch_tile = 0;
  size_t shared = 0;
};

// sum over lanes, the result in lane 0.
template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// out[q] += Σ_i w[i] · x[q·len + i] for the 4 rows q of x from row `first` (rows past `rows`
// repeat the last and are not written), a warp over i: the dot products of one weight row with
// 4 staged rows.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void warp_dot4(const scalar_t* w, const scalar_t* x, int len, int first, int rows,
                                          acc_t* out) {
  const int lane = threadIdx.x % 32;
  const scalar_t* x0 = x + first * len;
  const scalar_t* x1 = x + min(first + 1, rows - 1) * len;
  const scalar_t* x2 = x + min(first + 2, rows - 1) * len;
  const scalar_t* x3 = x + min(first + 3, rows - 1) * len;
  acc_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (int i = lane; i < len; i += 32) {
    const acc_t wi = acc_t(w[i]);
    a0 += wi * acc_t(x0[i]);
    a1 += wi * acc_t(x1[i]);
    a2 += wi * acc_t(x2[i]);
    a3 += wi * acc_t(x3[i]);
  }
  a0 = warp_sum(a0);
  a1 = warp_sum(a1);
  a2 = warp_sum(a2);
  a3 = warp_sum(a3);
  if (lane == 0) {
    out[first] += a0;
    if (first + 1 < rows) out[first + 1] += a1;
    if (first + 2 < rows) out[first + 2] += a2;
    if (first + 3 < rows) out[first + 3] += a3;
  }
}

// dots(r, first) for every weight row r < rows and group of kBatchPerWarp staged batch rows from
// `first` (of bt), a warp per (r, group): the task loop of the kernels that use warp_dot4.
template <typename Dots>
__device__ __forceinline__ void warp_tasks(int rows, int bt, Dots dots) {
  const int warp = threadIdx.x / 32, warps = blockDim.x / 32;
  const int groups = (bt + kBatchPerWarp - 1) / kBatchPerWarp;
  for (int task = warp; task < rows * groups; task += warps) {
    const int r = task / groups;
    dots(r, (task - r * groups) * kBatchPerWarp);
  }
}

// dst[e] = src[e] for e < n over the block, kCopyBatch elements of V per thread loaded before
// any is stored, so that each thread has that many loads in flight: the staged operand comes from
// L2 every step, and latency, not bandwidth, bounds its copy.
constexpr int kCopyBatch = 8;

template <typename V>
__device__ __forceinline__ void copy_batched(V* dst, const V* src, int n) {
  for (int base = threadIdx.x; base < n; base += blockDim.x * kCopyBatch) {
    V v[kCopyBatch];
#pragma unroll
    for (int k = 0; k < kCopyBatch; ++k) {
      if (base + k * static_cast<int>(blockDim.x) < n) v[k] = src[base + k * blockDim.x];
    }
#pragma unroll
    for (int k = 0; k < kCopyBatch; ++k) {
      if (base + k * static_cast<int>(blockDim.x) < n) dst[base + k * blockDim.x] = v[k];
    }
  }
}

// The same in 16-byte pieces where both ends are 16-byte aligned and n elements fill whole pieces.
template <typename scalar_t>
__device__ __forceinline__ void block_copy(scalar_t* dst, const scalar_t* src, int n) {
  const auto address = reinterpret_cast<uintptr_t>(dst) | reinterpret_cast<uintptr_t>(src);
  if (address % 16 == 0 && (n * sizeof(scalar_t)) % 16 == 0) {
    copy_batched(reinterpret_cast<int4*>(dst), reinterpret_cast<const int4*>(src),
                 static_cast<int>(n * sizeof(scalar_t) / 16));
  } else {
    copy_batched(dst, src, n);
  }
}

// --- forward: per step and tile of Bt batch rows b0 .. b0 + Bt - 1,
//   stage   h_{t-1}[b0 .. b0 + Bt) into hs; pre[r, b] = X_t·W_ihᵀ + bias for this block's rows r;
//   dots    pre[r, b] += W_hh[r] · h_{t-1}[b], a warp per (r, 4 batch rows);
//   gates   the fused pass of each (u, b): gates, c_t (kept in shared memory across steps), h_t.
// Shared memory: pre [G·U, Bt] and c [U, B] (acc_t), then W_hh rows [G·U, H] and hs [Bt, H].
// G gates (1: RNN, 4: LSTM); index math in int32 (the launcher checks T·B·G·H < 2^30).
template <typename scalar_t, int G>
__global__ void __launch_bounds__(kPersistentThreads) persistent_forward_kernel(PersistentForward<scalar_t> p,
                                                                                   int units, int batch_tile) {
  using acc_t = at::opmath_type<scalar_t>;
  namespace cg = cooperative_groups;
  cg::grid_group grid = cg::this_grid();
  extern __shared__ __align__(16) unsigned char shared_raw[];
  const int H = static_cast<int>(p.hidden), B = static_cast<int>(p.batch), T = static_cast<int>(p.steps);
  const int GH = G * H, rows = G * units, j0 = blockIdx.x * units;
  acc_t* pre = reinterpret_cast<acc_t*>(shared_raw);     // [rows, Bt], local row r = k·U + u
  acc_t* cs = pre + rows * batch_tile;                    // [U, B] c_{t-1} of this block's units (LSTM)
  scalar_t* w = reinterpret_cast<scalar_t*>(cs + (G == 4 ? units * B : 0));  // [rows, H]
  scalar_t* hs = w + rows * H;                            // [Bt, H]

  for (int e = threadIdx.x; e < rows * H; e += blockDim.x) {
    const int r = e / H, i = e - r * H, k = r / units, j = j0 + r % units;
    w[e] = j < H ? p.weight_hh[(k * H + j) * H + i] : scalar_t(0);
  }
  if constexpr (G == 4) {
    for (int q = threadIdx.x; q < units * B; q += blockDim.x) {
      const int u = q / B, b = q - u * B, j = j0 + u;
      cs[q] = j < H ? acc_t(p.c_state[b * H + j]) : acc_t(0);
    }
  }

  for (int s = 0; s < T; ++s) {
    const int t = p.reverse ? T - 1 - s : s;
    const int prev = p.reverse ? t + 1 : t - 1;
    const scalar_t* h_prev = s == 0 ? p.h0 : p.output + prev * B * H;
    for (int b0 = 0; b0 < B; b0 += batch_tile) {
      const int bt = min(batch_tile, B - b0);
      __syncthreads();  // the previous tile's (or step's) readers of hs and pre are done
      block_copy(hs, h_prev + b0 * H, bt * H);
      for (int e = threadIdx.x; e < rows * bt; e += blockDim.x) {
        const int r = e / bt, b = b0 + e - r * bt, k = r / units, j = j0 + r % units;
        pre[e] = j < H ? acc_t(p.input_proj[(t * B + b) * GH + k * H + j]) + acc_t(p.bias[k * H + j]) : acc_t(0);
      }
      __syncthreads();
      warp_tasks(rows, bt, [&](int r, int first) { warp_dot4(w + r * H, hs, H, first, bt, pre + r * bt); });
      __syncthreads();
      for (int q = threadIdx.x; q < units * bt; q += blockDim.x) {
        const int u = q / bt, bl = q - u * bt, b = b0 + bl, j = j0 + u;
        if (j >= H) continue;
        const int row = t * B + b;
        acc_t c = acc_t(0);
        const acc_t h = staged_unit_output<scalar_t, G>(pre, units, bt, u, bl, p.activation,
                                                        G == 4 ? cs[u * B + b] : acc_t(0),
                                                        G == 4 ? p.gates + row * GH + j : nullptr, H, c);
        if constexpr (G == 4) {
          cs[u * B + b] = c;
          p.cells[row * H + j] = static_cast<scalar_t>(c);
          if (s == T - 1) p.c_state[b * H + j] = static_cast<scalar_t>(c);
        }
        p.output[row * H + j] = static_cast<scalar_t>(h);
        if (s == T - 1) p.h_state[b * H + j] = static_cast<scalar_t>(h);
      }
    }
    grid.sync();  // every h_t written before any block stages it
  }
}

// --- a cell in one launch (opt-in for now: DLUNITS_CUDA_FUSED_CELL=1; CudaKernels::cell_forward).
// A cell step is bound by the host: on the H200's host the two cuBLAS calls of cell_forward cost
// ~26 µs each, a launch of ours ~5. Here the products and the gate pass are one launch. Block k
// owns hidden units j0 .. j0 + U - 1 (U = kFusedCellUnits) and, per tile of Bt batch rows,
//   stage  x and h0 of the tile into shared memory ([Bt, I], [Bt, H]); pre[r, b] = b_ih + b_hh;
//   dots   pre[r, b] += W_ih[row r] · x_b + W_hh[row r] · h0_b, a warp per (r, 4 batch rows) as in the
//          persistent kernels, the weight rows read from global memory (each by one warp);
//   gates  the gate pass of each (u, b), as cell_forward_kernel.
// Shared memory: pre [G·U, Bt] (acc_t, padded to 16 bytes), then xs [Bt, I] and hs [Bt, H], within
// the default 48 KiB (no attribute call per launch). int32 indices: the launcher checks the sizes.
constexpr int kFusedCellUnits = 2;
constexpr int64_t kFusedCellShared = 48 * 1024;

template <typename scalar_t>
struct FusedCell {
  const scalar_t* input;      // [B, I]
  const scalar_t* h0;         // [B, H]
  const scalar_t* c0;         // [B, H]  (LSTM)
  const scalar_t* weight_ih;  // [G·H, I]
  const scalar_t* weight_hh;  // [G·H, H]
  const scalar_t* bias_ih;    // [G·H], or null
  const scalar_t* bias_hh;    // [G·H], or null
  scalar_t* output;           // [B, H]
  scalar_t* h_n;              // [B, H]
  scalar_t* c_n;              // [B, H]  (LSTM)
  scalar_t* gates;            // [B, 4H] (LSTM)
  scalar_t* cells;            // [B, H]  (LSTM)
  int64_t batch, input_size, hidden;
  RnnActivation activation;
};

__host__ __device__ inline int fused_cell_pre_bytes(int rows, int batch_tile, int acc_size) {
  return (rows * batch_tile * acc_size + 15) / 16 * 16;
}

template <typename scalar_t, int G>
__global__ void __launch_bounds__(kPersistentThreads) fused_cell_kernel(FusedCell<scalar_t> p, int batch_tile) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int U = kFusedCellUnits, rows = G * U;
  extern __shared__ __align__(16) unsigned char shared_raw[];
  const int H = static_cast<int>(p.hidden), I = static_cast<int>(p.input_size), B = static_cast<int>(p.batch);
  const int j0 = blockIdx.x * U;
  acc_t* pre = reinterpret_cast<acc_t*>(shared_raw);  // [rows, Bt], local row r = k·U + u
  scalar_t* xs = reinterpret_cast<scalar_t*>(
      shared_raw + fused_cell_pre_bytes(rows, batch_tile, static_cast<int>(sizeof(acc_t))));  // [Bt, I]
  scalar_t* hs = xs + batch_tile * I;                  // [Bt, H]
  for (int b0 = 0; b0 < B; b0 += batch_tile) {
    const int bt = min(batch_tile, B - b0);
    __syncthreads();  // the previous tile's readers of xs, hs and pre are done
    block_copy(xs, p.input + b0 * I, bt * I);
    block_copy(hs, p.h0 + b0 * H, bt * H);
    for (int e = threadIdx.x; e < rows * bt; e += blockDim.x) {
      const int r = e / bt, k = r / U, j = j0 + r % U;
      acc_t bias = acc_t(0);
      if (j < H && p.bias_ih) bias += acc_t(p.bias_ih[k * H + j]);
      if (j < H && p.bias_hh) bias += acc_t(p.bias_hh[k * H + j]);
      pre[e] = bias;
    }
    __syncthreads();
    warp_tasks(rows, bt, [&](int r, int first) {
      const int k = r / U, j = j0 + r % U;
      if (j >= H) return;  // warp-uniform: the task is the warp's
      warp_dot4(p.weight_ih + (k * H + j) * I, xs, I, first, bt, pre + r * bt);
      warp_dot4(p.weight_hh + (k * H + j) * H, hs, H, first, bt, pre + r * bt);
    });
    __syncthreads();
    for (int q = threadIdx.x; q < U * bt; q += blockDim.x) {
      const int u = q / bt, bl = q - u * bt, b = b0 + bl, j = j0 + u;
      if (j >= H) continue;
      const int e = b * H + j;
      acc_t c = acc_t(0);
      const acc_t h = staged_unit_output<scalar_t, G>(pre, U, bt, u, bl, p.activation,
                                                      G == 4 ? acc_t(p.c0[e]) : acc_t(0),
                                                      G == 4 ? p.gates + b * 4 * H + j : nullptr, H, c);
      if constexpr (G == 4) {
        p.c_n[e] = static_cast<scalar_t>(c);
        p.cells[e] = static_cast<scalar_t>(c);
      }
      p.output[e] = static_cast<scalar_t>(h);
      p.h_n[e] = static_cast<scalar_t>(h);
    }
  }
}

// DLUNITS_CUDA_FUSED_CELL=1 runs cells on fused_cell_kernel (read at each call, so that tests can
// switch it). Off by default until a GPU run has tested and timed it.
inline bool fused_cell_enabled() {
  const char* v = std::getenv("DLUNITS_CUDA_FUSED_CELL");
  return v != nullptr && std::string(v) == "1";
}

// The fused cell's launch: B ≤ kPersistentMaxBatch (above, cuBLAS spreads the products better),
// int32 indices, and at least one staged batch row in kFusedCellShared. False when it does not fit.
template <typename scalar_t, int G>
bool launch_fused_cell(const FusedCell<scalar_t>& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t B = p.batch, I = p.input_size, H = p.hidden, rows = G * kFusedCellUnits;
  const int64_t int32_limit = std::numeric_limits<int32_t>::max();
  if (B > kPersistentMaxBatch || G * H * std::max(I, H) >= int32_limit || B * G * H >= int32_limit) return false;
  const int64_t per_row = (I + H) * int64_t(sizeof(scalar_t)) + rows * int64_t(sizeof(acc_t));
  const int64_t tile = std::min<int64_t>(B, (kFusedCellShared - 16) / per_row);
  if (tile < 1) return false;
  const int batch_tile = static_cast<int>(tile);
  const size_t shared = static_cast<size_t>(fused_cell_pre_bytes(static_cast<int>(rows), batch_tile, sizeof(acc_t)) +
                                            tile * (I + H) * int64_t(sizeof(scalar_t)));
  const int blocks = static_cast<int>((H + kFusedCellUnits - 1) / kFusedCellUnits);
  fused_cell_kernel<scalar_t, G><<<blocks, kPersistentThreads, shared, at::cuda::getCurrentCUDAStream()>>>(
      p, batch_tile);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

// --- backward through time: block k keeps the G·H × U columns of W_hh of its units
// (wt[u·G·H + r] = W_hh[r, j0 + u]). Per step, in the backward order, and tile of Bt batch rows,
//   stage   dZ of the step processed before (the forward's next step) into zs, and this step's
//           grad_output, saved gates and cells of this block's (u, b) into saved;
//   dots    dh[u, b] = Σ_r dZ[b, r] · W_hh[r, j0 + u] (grad_h_n at the first step), a warp per
//           (u, 4 batch rows);
//   gates   the fused gate gradients of each (u, b), as lstm_backward_kernel / rnn_backward_kernel,
//           dc carried in shared memory across steps;
// and after the last step grad_h0 = dZ_first · W_hh the same way.
// Shared memory: dh [U, Bt], saved [S, U, Bt] and dc [U, B] (acc_t), then wt [U, G·H] and
// zs [Bt, G·H]. S = 7 values per (u, b) for the LSTM (grad_output, i, f, g, o, c_t, c_{t-1}),
// 2 for the RNN (grad_output, h_t).
template <int G>
constexpr int kSavedPerUnit = G == 4 ? 7 : 2;

template <typename scalar_t, int G>
__global__ void __launch_bounds__(kPersistentThreads) persistent_backward_kernel(PersistentBackward<scalar_t> p,
                                                                                    int units, int batch_tile) {
  using acc_t = at::opmath_type<scalar_t>;
  using M = DeviceMath<acc_t>;
  namespace cg = cooperative_groups;
  cg::grid_group grid = cg::this_grid();
  extern __shared__ __align__(16) unsigned char shared_raw[];
  const int H = static_cast<int>(p.hidden), B = static_cast<int>(p.batch), T = static_cast<int>(p.steps);
  const int GH = G * H, j0 = blockIdx.x * units, S = kSavedPerUnit<G>;
  acc_t* dh = reinterpret_cast<acc_t*>(shared_raw);   // [U, Bt]
  acc_t* saved = dh + units * batch_tile;             // [S, U, Bt]
  acc_t* dcs = saved + S * units * batch_tile;        // [U, B] dc carried to the step before (LSTM)
  scalar_t* wt = reinterpret_cast<scalar_t*>(dcs + (G == 4 ? units * B : 0));  // [U, G·H]
  scalar_t* zs = wt + units * GH;                     // [Bt, G·H]

  for (int e = threadIdx.x; e < units * GH; e += blockDim.x) {
    const int u = e / GH, r = e - u * GH, j = j0 + u;
    wt[e] = j < H ? p.weight_hh[r * H + j] : scalar_t(0);
  }
  if constexpr (G == 4) {
    for (int q = threadIdx.x; q < units * B; q += blockDim.x) {
      const int u = q / B, b = q - u * B, j = j0 + u;
      dcs[q] = j < H ? acc_t(p.grad_c[b * H + j]) : acc_t(0);
    }
  }

  // dh[u, bl] for the tile's rows b0 + bl: grad_h_n (dZ_later null) or dZ_later · W_hh.
  auto hidden_gradient = [&](const scalar_t* dz_later, int b0, int bt) {
    __syncthreads();  // the previous tile's readers of dh, saved and zs are done
    if (dz_later) block_copy(zs, dz_later + b0 * GH, bt * GH);
    for (int q = threadIdx.x; q < units * bt; q += blockDim.x) {
      const int u = q / bt, b = b0 + q - u * bt, j = j0 + u;
      dh[q] = dz_later || j >= H ? acc_t(0) : acc_t(p.grad_h[b * H + j]);
    }
  };
  auto hidden_gradient_dots = [&](const scalar_t* dz_later, int bt) {
    __syncthreads();
    if (!dz_later) return;
    warp_tasks(units, bt, [&](int u, int first) { warp_dot4(wt + u * GH, zs, GH, first, bt, dh + u * bt); });
    __syncthreads();
  };

  for (int s = 0; s < T; ++s) {
    const int t = p.reverse ? s : T - 1 - s;           // backward order: the forward's, reversed
    const int later = p.reverse ? t - 1 : t + 1;       // the step processed just before (its dZ is ready)
    const int before = p.reverse ? t + 1 : t - 1;      // the forward's previous step (c_{t-1})
    const bool has_before = before >= 0 && before < T;
    const scalar_t* dz_later = s == 0 ? nullptr : p.grad_gates + later * B * GH;
    for (int b0 = 0; b0 < B; b0 += batch_tile) {
      const int bt = min(batch_tile, B - b0), n = units * bt;
      hidden_gradient(dz_later, b0, bt);
      for (int q = threadIdx.x; q < n; q += blockDim.x) {
        const int u = q / bt, b = b0 + q - u * bt, j = min(j0 + u, H - 1);  // a padded unit reads a real one
        const int row = t * B + b;
        saved[q] = acc_t(p.grad_output[row * H + j]);
        if constexpr (G == 4) {
          const scalar_t* gates = p.gates + row * GH;
          saved[n + q] = acc_t(gates[j]);
          saved[2 * n + q] = acc_t(gates[H + j]);
          saved[3 * n + q] = acc_t(gates[2 * H + j]);
          saved[4 * n + q] = acc_t(gates[3 * H + j]);
          saved[5 * n + q] = acc_t(p.cells[row * H + j]);
          saved[6 * n + q] = acc_t(has_before ? p.cells[before * B * H + b * H + j] : p.c0[b * H + j]);
        } else {
          saved[n + q] = acc_t(p.output[row * H + j]);
        }
      }
      hidden_gradient_dots(dz_later, bt);
      for (int q = threadIdx.x; q < n; q += blockDim.x) {
        const int u = q / bt, b = b0 + q - u * bt, j = j0 + u;
        if (j >= H) continue;
        const acc_t dh_t = saved[q] + dh[q];
        scalar_t* dz = p.grad_gates + (t * B + b) * GH;
        if constexpr (G == 4) {
          const acc_t i = saved[n + q], f = saved[2 * n + q], g = saved[3 * n + q], o = saved[4 * n + q];
          const acc_t c_prev = saved[6 * n + q], tanh_c = M::tanh(saved[5 * n + q]);
          const acc_t dc = dcs[u * B + b] + dh_t * o * (acc_t(1) - tanh_c * tanh_c);
          dz[j] = static_cast<scalar_t>(dc * g * i * (acc_t(1) - i));
          dz[H + j] = static_cast<scalar_t>(dc * c_prev * f * (acc_t(1) - f));
          dz[2 * H + j] = static_cast<scalar_t>(dc * i * (acc_t(1) - g * g));
          dz[3 * H + j] = static_cast<scalar_t>(dh_t * tanh_c * o * (acc_t(1) - o));
          dcs[u * B + b] = dc * f;
        } else {
          const acc_t h = saved[n + q];
          const acc_t slope =
              p.activation == RnnActivation::Tanh ? acc_t(1) - h * h : relu_slope(h);
          dz[j] = static_cast<scalar_t>(dh_t * slope);
        }
      }
    }
    grid.sync();  // every dZ_t written before any block stages it
  }
  // grad_h0 = dZ of the last step processed (the forward's first) · W_hh; grad_c0 = the carried dc.
  const scalar_t* dz_first = p.grad_gates + (p.reverse ? T - 1 : 0) * B * GH;
  for (int b0 = 0; b0 < B; b0 += batch_tile) {
    const int bt = min(batch_tile, B - b0);
    hidden_gradient(dz_first, b0, bt);
    hidden_gradient_dots(dz_first, bt);
    for (int q = threadIdx.x; q < units * bt; q += blockDim.x) {
      const int u = q / bt, b = b0 + q - u * bt, j = j0 + u;
      if (j < H) p.grad_h[b * H + j] = static_cast<scalar_t>(dh[q]);
    }
  }
  if constexpr (G == 4) {
    for (int q = threadIdx.x; q < units * B; q += blockDim.x) {
      const int u = q / B, b = q - u * B, j = j0 + u;
      if (j < H) p.grad_c[b * H + j] = static_cast<scalar_t>(dcs[q]);
    }
  }
}

// DLUNITS_CUDA_PERSISTENT=0 turns the persistent kernels off (every sequence then takes the
// per-step path): for comparing the two paths, and a way around them should a device refuse them.
inline bool persistent_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("DLUNITS_CUDA_PERSISTENT");
    return v == nullptr || std::string(v) != "0";
  }();
  return enabled;
}

// The launch of a persistent kernel: B ≤ kPersistentMaxBatch, cooperative launch, T·B·G·H < 2^30
// (int32 indices), one block per group of U units and every block resident at once, and shared
// memory within the device's per-block limit for the weights, the per-(u, b) state and at least
// one staged batch row. Bt is as many batch rows as that limit holds, at most B. Returns 0 blocks
// when the sizes do not fit.
template <typename scalar_t, int G, typename Kernel>
PersistentPlan persistent_plan(Kernel kernel, int64_t steps, int64_t batch, int64_t hidden, bool backward) {
  using acc_t = at::opmath_type<scalar_t>;
  PersistentPlan plan;
  if (!persistent_enabled() || batch > kPersistentMaxBatch || steps * batch * G * hidden >= (int64_t(1) << 30)) {
    return plan;
  }
  const cudaDeviceProp* prop = at::cuda::getCurrentDeviceProperties();
  if (!prop->cooperativeLaunch) return plan;
  const int64_t sms = prop->multiProcessorCount;
  const int64_t units = (hidden + sms - 1) / sms;
  const int64_t GH = G * hidden;
  // Bytes independent of Bt: the weights and the carried state; bytes per staged batch row.
  const int64_t carried = G == 4 ? units * batch * int64_t(sizeof(acc_t)) : 0;
  const int64_t fixed = int64_t(sizeof(scalar_t)) * G * units * hidden + carried;
  const int64_t per_row = backward
      ? int64_t(sizeof(scalar_t)) * GH + int64_t(sizeof(acc_t)) * units * (1 + kSavedPerUnit<G>)
      : int64_t(sizeof(scalar_t)) * hidden + int64_t(sizeof(acc_t)) * G * units;
  const int64_t limit = static_cast<int64_t>(prop->sharedMemPerBlockOptin);
  const int64_t tile = std::min<int64_t>(batch, (limit - fixed) / per_row);
  if (tile < 1) return plan;
  const size_t shared = static_cast<size_t>(fixed + tile * per_row);
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)));
  const int blocks = static_cast<int>((hidden + units - 1) / units);
  int per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kPersistentThreads, shared));
  if (int64_t(per_sm) * sms < blocks) return plan;  // grid.sync() needs every block resident
  plan.blocks = blocks;
  plan.units = static_cast<int>(units);
  plan.batch_tile = static_cast<int>(tile);
  plan.shared = shared;
  return plan;
}

// A cooperative launch, or false when the device cannot hold the whole grid at once after all
// (fewer SMs than it reports, e.g. under MPS): the caller then runs the per-step path.
template <typename Params>
bool launch_cooperative(const void* kernel, const PersistentPlan& plan, const Params& p) {
  Params params = p;
  int units = plan.units, batch_tile = plan.batch_tile;
  void* args[] = {&params, &units, &batch_tile};
  const cudaError_t status = cudaLaunchCooperativeKernel(kernel, dim3(plan.blocks), dim3(kPersistentThreads), args,
                                                         plan.shared, at::cuda::getCurrentCUDAStream());
  if (status == cudaErrorCooperativeLaunchTooLarge) {
    (void)cudaGetLastError();  // clear the error: nothing was launched
    return false;
  }
  C10_CUDA_CHECK(status);
  return true;
}

template <typename scalar_t, int G>
bool launch_persistent_forward(const PersistentForward<scalar_t>& p) {
  const auto kernel = persistent_forward_kernel<scalar_t, G>;
  const PersistentPlan plan = persistent_plan<scalar_t, G>(kernel, p.steps, p.batch, p.hidden, false);
  return plan.blocks > 0 && launch_cooperative(reinterpret_cast<const void*>(kernel), plan, p);
}

template <typename scalar_t, int G>
bool launch_persistent_backward(const PersistentBackward<scalar_t>& p) {
  const auto kernel = persistent_backward_kernel<scalar_t, G>;
  const PersistentPlan plan = persistent_plan<scalar_t, G>(kernel, p.steps, p.batch, p.hidden, true);
  return plan.blocks > 0 && launch_cooperative(reinterpret_cast<const void*>(kernel), plan, p);
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

  // The kernels always write the LSTM's gates and cells (to scratch where they are not saved).
  static constexpr bool kSkipsSavedState = false;

  // A cell: fused_cell_kernel where enabled and the sizes fit; else two cuBLAS products into one
  // buffer, then cell_forward_kernel.
  template <typename scalar_t>
  static bool cell_forward(const CellForward& p) {
    const bool lstm = p.weight_ih.size(0) == 4 * p.h0.size(1);
    const auto pointer = [](const at::Tensor& t) { return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr; };
    if (fused_cell_enabled()) {
      const FusedCell<scalar_t> f{
          p.input.const_data_ptr<scalar_t>(), p.h0.const_data_ptr<scalar_t>(), lstm ? pointer(p.c0) : nullptr,
          p.weight_ih.const_data_ptr<scalar_t>(), p.weight_hh.const_data_ptr<scalar_t>(), pointer(p.bias_ih),
          pointer(p.bias_hh), p.output.mutable_data_ptr<scalar_t>(), p.h_n.mutable_data_ptr<scalar_t>(),
          lstm ? p.c_n.mutable_data_ptr<scalar_t>() : nullptr, lstm ? p.gates.mutable_data_ptr<scalar_t>() : nullptr,
          lstm ? p.cells.mutable_data_ptr<scalar_t>() : nullptr, p.input.size(0), p.input.size(1), p.h0.size(1),
          p.activation};
      if (lstm ? launch_fused_cell<scalar_t, 4>(f) : launch_fused_cell<scalar_t, 1>(f)) return true;
    }
    at::Tensor pre = at::empty({p.input.size(0), p.weight_ih.size(0)}, p.input.options());
    mm_into(pre, p.input, p.weight_ih.t());
    pre.addmm_(p.h0, p.weight_hh.t());
    const CellStep<scalar_t> s{pre.const_data_ptr<scalar_t>(), pointer(p.bias_ih), pointer(p.bias_hh),
                               lstm ? p.c0.const_data_ptr<scalar_t>() : nullptr, p.output.mutable_data_ptr<scalar_t>(),
                               p.h_n.mutable_data_ptr<scalar_t>(), lstm ? p.c_n.mutable_data_ptr<scalar_t>() : nullptr,
                               lstm ? p.gates.mutable_data_ptr<scalar_t>() : nullptr,
                               lstm ? p.cells.mutable_data_ptr<scalar_t>() : nullptr, p.h0.size(0), p.h0.size(1), lstm,
                               p.activation};
    DLUNITS_LAUNCH(cell_forward_kernel, s.rows * s.hidden, pre.numel(), s);
    return true;
  }

  // The input projection and the backward's products are the driver's cuBLAS calls (and column_sum_kernel for
  // the bias).
  template <typename scalar_t>
  static bool input_projection(const InputProjection<scalar_t>&) {
    return false;
  }

  template <typename scalar_t>
  static bool backward_product(const BackwardProduct<scalar_t>&) {
    return false;
  }

  template <typename scalar_t>
  static bool weight_gradients(const WeightGradients<scalar_t>&) {
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
