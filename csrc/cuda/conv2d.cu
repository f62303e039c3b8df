// dlunits — 2-D convolution on CUDA: implicit GEMM, ours end to end (no cuBLAS, no cuDNN).
//
// Each pass is a matrix product whose operands are never materialised: the
// kernel reads them straight from the tensors. Per group g, with K = C/groups·KH·KW:
//   forward          y[m, o]  = Σ_k x̂[m, k] · W[o, k]                 m = (n, oh, ow), k = (c, kh, kw)
//   backward input   dx[m, c] = Σ_k dŷ[m, k] · W[o, c, kh, kw]         m = (n, ih, iw), k = (o, kh, kw)
//   backward weight  dW[o, j] = Σ_k dy[n, o, oh, ow] · x̂[k, j]         j = (c, kh, kw), k = (n, oh, ow)
//   backward bias    db[o]    = Σ_{n, oh, ow} dy[n, o, oh, ow]
// x̂ is the unfolded input (0 in the padding); dŷ reads dy back through the
// convolution: dy[n, o, (ih + pad - kh·d) / s, ...] where that division is exact
// and in range, 0 elsewhere. Backward input is thus a gather: every dx element
// is written once, by one thread.
//
// One tiled kernel serves the three products. A block of 256 threads computes a
// 64×64 tile of the result, staging 16-deep slices of both operands in shared
// memory; each thread accumulates a 4×4 sub-tile whose rows are 16 apart, so
// that neighbouring threads store neighbouring outputs. Accumulation is in
// float for float16/bfloat16/float32 and in double for float64.
//
// The weight gradient reduces over N·OH·OW, far more than its few output tiles
// can keep a GPU busy with; the reduction is split over blocks (split-K) into
// partial sums that a second kernel adds in a fixed order: deterministic, no atomics.
//
// Cost: 2·N·OC·OH·OW·K FLOPs per pass; minimum bytes: x, W and y once each.
// Index math is int32 when every tensor it touches has fewer than 2^30
// elements (a margin for tile edges), int64 otherwise. Launches go on the current stream under a device
// guard, each followed by a launch check.
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

#include "../shape_checks.h"

namespace dlunits {
namespace {

constexpr int kTile = 64;                  // rows and columns of a block's result tile
constexpr int kDepth = 16;                 // depth of the operand slices staged in shared memory
constexpr int kSub = 4;                    // each thread accumulates kSub × kSub results
constexpr int kLanes = kTile / kSub;       // 16 threads along each tile dimension
constexpr int kThreads = kLanes * kLanes;  // 256

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The geometry in the index type the kernels compute in.
template <typename index_t>
struct ConvShape {
  index_t N, C, H, W, OC, KH, KW, OH, OW;
  index_t stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w;
  index_t Cg, OCg;

  explicit ConvShape(const Conv2dGeometry& g)
      : N(g.batch), C(g.in_channels), H(g.in_h), W(g.in_w), OC(g.out_channels), KH(g.kernel_h),
        KW(g.kernel_w), OH(g.out_h), OW(g.out_w), stride_h(g.stride_h), stride_w(g.stride_w),
        pad_top(g.pad_top), pad_left(g.pad_left), dilation_h(g.dilation_h), dilation_w(g.dilation_w),
        Cg(g.in_channels_per_group()), OCg(g.out_channels_per_group()) {}

  // x̂[pixel, patch] of group g: the input under tap (kh, kw) of channel c, with
  // patch = (c, kh, kw), at output pixel = (n, oh, ow); 0 in the padding.
  template <typename acc_t, typename scalar_t>
  __device__ acc_t unfolded_input(const scalar_t* x, index_t g, index_t pixel, index_t patch) const {
    const index_t ow = pixel % OW, oh = (pixel / OW) % OH, n = pixel / (OW * OH);
    const index_t kw = patch % KW, kh = (patch / KW) % KH, c = patch / (KW * KH);
    const index_t ih = oh * stride_h - pad_top + kh * dilation_h;
    const index_t iw = ow * stride_w - pad_left + kw * dilation_w;
    if (ih < 0 || ih >= H || iw < 0 || iw >= W) return acc_t(0);
    return static_cast<acc_t>(x[((n * C + g * Cg + c) * H + ih) * W + iw]);
  }
};

// Sizes of the product C[rows, cols] = Σ_{k < depth} A[row, k] · B[k, col], per group.
template <typename index_t>
struct GemmExtent {
  index_t rows, cols, depth;
};

// ---------------------------------------------------------------------------
// The three products. Each says how to read A and B and where a result goes;
// k_fastest says whether consecutive k are adjacent in memory (the loader then
// walks k fastest, for coalesced reads).
// ---------------------------------------------------------------------------

template <typename scalar_t, typename index_t>
struct ForwardProblem {
  using acc_t = at::opmath_type<scalar_t>;
  static constexpr bool kAKFastest = false;  // A = x̂: m (ow) is the contiguous direction
  static constexpr bool kBKFastest = true;   // B = W[o, k]: k contiguous
  const scalar_t* x;
  const scalar_t* weight;
  const scalar_t* bias;  // may be null
  scalar_t* y;
  ConvShape<index_t> s;

  __device__ acc_t a(index_t g, index_t m, index_t k) const { return s.template unfolded_input<acc_t>(x, g, m, k); }
  __device__ acc_t b(index_t g, index_t k, index_t o) const {
    return static_cast<acc_t>(weight[(g * s.OCg + o) * (s.Cg * s.KH * s.KW) + k]);
  }
  __device__ void store(index_t g, index_t /*split*/, index_t m, index_t o, acc_t v) const {
    const index_t oc = g * s.OCg + o;
    if (bias != nullptr) v += static_cast<acc_t>(bias[oc]);
    const index_t ow = m % s.OW, oh = (m / s.OW) % s.OH, n = m / (s.OW * s.OH);
    y[((n * s.OC + oc) * s.OH + oh) * s.OW + ow] = static_cast<scalar_t>(v);
  }
};

template <typename scalar_t, typename index_t>
struct BackwardInputProblem {
  using acc_t = at::opmath_type<scalar_t>;
  static constexpr bool kAKFastest = false;  // A = dŷ: m (iw) is the contiguous direction
  static constexpr bool kBKFastest = true;   // B = W[o, c, kh, kw] with k = (o, kh, kw): kw contiguous
  const scalar_t* grad_output;
  const scalar_t* weight;
  scalar_t* grad_input;
  ConvShape<index_t> s;

  __device__ acc_t a(index_t g, index_t m, index_t k) const {
    const index_t iw = m % s.W, ih = (m / s.W) % s.H, n = m / (s.W * s.H);
    const index_t kw = k % s.KW, kh = (k / s.KW) % s.KH, o = k / (s.KW * s.KH);
    const index_t th = ih + s.pad_top - kh * s.dilation_h;  // = oh · stride_h, if such an oh exists
    const index_t tw = iw + s.pad_left - kw * s.dilation_w;
    if (th < 0 || tw < 0 || th % s.stride_h != 0 || tw % s.stride_w != 0) return acc_t(0);
    const index_t oh = th / s.stride_h, ow = tw / s.stride_w;
    if (oh >= s.OH || ow >= s.OW) return acc_t(0);
    return static_cast<acc_t>(grad_output[((n * s.OC + g * s.OCg + o) * s.OH + oh) * s.OW + ow]);
  }
  __device__ acc_t b(index_t g, index_t k, index_t c) const {
    const index_t kw = k % s.KW, kh = (k / s.KW) % s.KH, o = k / (s.KW * s.KH);
    return static_cast<acc_t>(weight[(((g * s.OCg + o) * s.Cg + c) * s.KH + kh) * s.KW + kw]);
  }
  __device__ void store(index_t g, index_t /*split*/, index_t m, index_t c, acc_t v) const {
    const index_t iw = m % s.W, ih = (m / s.W) % s.H, n = m / (s.W * s.H);
    grad_input[((n * s.C + g * s.Cg + c) * s.H + ih) * s.W + iw] = static_cast<scalar_t>(v);
  }
};

template <typename scalar_t, typename index_t>
struct BackwardWeightProblem {
  using acc_t = at::opmath_type<scalar_t>;
  static constexpr bool kAKFastest = true;  // A = dy[n, o, oh, ow] with k = (n, oh, ow): ow contiguous
  static constexpr bool kBKFastest = true;  // B = x̂[k, j]: consecutive k are consecutive ow
  const scalar_t* grad_output;
  const scalar_t* x;
  acc_t* partial;  // [splits, OC, Cg·KH·KW]
  ConvShape<index_t> s;

  __device__ acc_t a(index_t g, index_t o, index_t k) const {
    const index_t ow = k % s.OW, oh = (k / s.OW) % s.OH, n = k / (s.OW * s.OH);
    return static_cast<acc_t>(grad_output[((n * s.OC + g * s.OCg + o) * s.OH + oh) * s.OW + ow]);
  }
  __device__ acc_t b(index_t g, index_t k, index_t j) const { return s.template unfolded_input<acc_t>(x, g, k, j); }
  __device__ void store(index_t g, index_t split, index_t o, index_t j, acc_t v) const {
    const index_t patch = s.Cg * s.KH * s.KW;
    partial[(split * s.OC + g * s.OCg + o) * patch + j] = v;
  }
};

// ---------------------------------------------------------------------------
// The tiled product. blockIdx.x / y pick the result tile; z walks (group, split)
// pairs. Split `split` covers k in [split·split_depth, (split+1)·split_depth).
// ---------------------------------------------------------------------------

template <class Problem, typename index_t>
__global__ void __launch_bounds__(kThreads)
    implicit_gemm_kernel(const Problem p, const GemmExtent<index_t> e, const index_t groups, const index_t splits,
                         const index_t split_depth) {
  using acc_t = typename Problem::acc_t;
  // One padding column: operands stored k-fastest would otherwise put 16 consecutive threads in one bank.
  __shared__ acc_t a_tile[kDepth][kTile + 1];
  __shared__ acc_t b_tile[kDepth][kTile + 1];
  const int lane_m = threadIdx.x % kLanes, lane_n = threadIdx.x / kLanes;
  const index_t m0 = static_cast<index_t>(blockIdx.x) * kTile;
  const index_t n0 = static_cast<index_t>(blockIdx.y) * kTile;

  for (index_t z = blockIdx.z; z < groups * splits; z += gridDim.z) {
    const index_t g = z / splits, split = z % splits;
    const index_t k_begin = split * split_depth;
    const index_t k_end = e.depth - k_begin < split_depth ? e.depth : k_begin + split_depth;

    acc_t acc[kSub][kSub];
#pragma unroll
    for (int i = 0; i < kSub; ++i)
#pragma unroll
      for (int j = 0; j < kSub; ++j) acc[i][j] = acc_t(0);

    for (index_t k0 = k_begin; k0 < k_end; k0 += kDepth) {
      for (int i = threadIdx.x; i < kTile * kDepth; i += kThreads) {
        const int a_k = Problem::kAKFastest ? i % kDepth : i / kTile;
        const int a_m = Problem::kAKFastest ? i / kDepth : i % kTile;
        const index_t am = m0 + a_m, ak = k0 + a_k;
        a_tile[a_k][a_m] = (am < e.rows && ak < k_end) ? p.a(g, am, ak) : acc_t(0);
        const int b_k = Problem::kBKFastest ? i % kDepth : i / kTile;
        const int b_n = Problem::kBKFastest ? i / kDepth : i % kTile;
        const index_t bn = n0 + b_n, bk = k0 + b_k;
        b_tile[b_k][b_n] = (bn < e.cols && bk < k_end) ? p.b(g, bk, bn) : acc_t(0);
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kDepth; ++kk) {
        acc_t a_frag[kSub], b_frag[kSub];
#pragma unroll
        for (int i = 0; i < kSub; ++i) a_frag[i] = a_tile[kk][lane_m + i * kLanes];
#pragma unroll
        for (int j = 0; j < kSub; ++j) b_frag[j] = b_tile[kk][lane_n + j * kLanes];
#pragma unroll
        for (int i = 0; i < kSub; ++i)
#pragma unroll
          for (int j = 0; j < kSub; ++j) acc[i][j] += a_frag[i] * b_frag[j];
      }
      __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < kSub; ++i) {
#pragma unroll
      for (int j = 0; j < kSub; ++j) {
        const index_t m = m0 + lane_m + i * kLanes, n = n0 + lane_n + j * kLanes;
        if (m < e.rows && n < e.cols) p.store(g, split, m, n, acc[i][j]);
      }
    }
  }
}

template <class Problem, typename index_t>
void launch_implicit_gemm(const Problem& p, const GemmExtent<index_t>& e, int64_t groups, int64_t splits) {
  const int64_t split_depth = ceil_div(ceil_div(e.depth, splits), kDepth) * kDepth;
  const int64_t row_tiles = ceil_div(e.rows, kTile), col_tiles = ceil_div(e.cols, kTile);
  TORCH_CHECK(row_tiles <= std::numeric_limits<int32_t>::max() && col_tiles <= 65535,
              "dlunits.conv2d (CUDA): problem too large for one launch: ", row_tiles, " × ", col_tiles,
              " tiles of ", kTile, "×", kTile);
  const dim3 grid(static_cast<unsigned>(row_tiles), static_cast<unsigned>(col_tiles),
                  static_cast<unsigned>(std::min<int64_t>(groups * splits, 65535)));
  implicit_gemm_kernel<Problem, index_t><<<grid, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      p, e, static_cast<index_t>(groups), static_cast<index_t>(splits), static_cast<index_t>(split_depth));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// dw[i] = Σ_split partial[split, i], in split order.
template <typename scalar_t, typename acc_t>
__global__ void sum_partials_kernel(const acc_t* partial, scalar_t* out, int64_t numel, int64_t splits) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < numel;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    acc_t sum = 0;
    for (int64_t s = 0; s < splits; ++s) sum += partial[s * numel + i];
    out[i] = static_cast<scalar_t>(sum);
  }
}

// db[c] = Σ_{n, l} dy[n, c, l]: one block per channel, a fixed-order tree reduction.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    conv2d_backward_bias_kernel(const scalar_t* grad_output, scalar_t* grad_bias, int64_t N, int64_t C, int64_t L) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t partial[kThreads];
  const int64_t c = blockIdx.x;
  acc_t sum = 0;
  for (int64_t n = 0; n < N; ++n) {
    const scalar_t* row = grad_output + (n * C + c) * L;
    for (int64_t l = threadIdx.x; l < L; l += kThreads) sum += static_cast<acc_t>(row[l]);
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) partial[threadIdx.x] += partial[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) grad_bias[c] = static_cast<scalar_t>(partial[0]);
}

// Calls f(int32_t{}) when every count is below 2^30, f(int64_t{}) otherwise. The
// margin keeps tile-edge indices (up to a tile past the end) from overflowing int32.
template <typename F>
void dispatch_index_type(std::initializer_list<int64_t> counts, F&& f) {
  const bool fits =
      std::all_of(counts.begin(), counts.end(), [](int64_t c) { return c < (int64_t{1} << 30); });
  if (fits) {
    f(int32_t{});
  } else {
    f(int64_t{});
  }
}

at::Tensor conv2d_cuda(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const Conv2dGeometry g = check_conv2d(input, weight, bias, stride, padding, dilation, groups);
  const c10::cuda::CUDAGuard device_guard(input.device());
  const at::Tensor x = input.contiguous();
  const at::Tensor w = weight.contiguous();
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  at::Tensor y = at::empty(g.output_sizes(), x.options());
  if (y.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dlunits_conv2d_cuda", [&] {
      dispatch_index_type({x.numel(), w.numel(), y.numel()}, [&](auto index_tag) {
        using index_t = decltype(index_tag);
        const ForwardProblem<scalar_t, index_t> p{x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                                                   b.defined() ? b.data_ptr<scalar_t>() : nullptr,
                                                   y.data_ptr<scalar_t>(), ConvShape<index_t>(g)};
        const GemmExtent<index_t> e{static_cast<index_t>(g.batch * g.out_h * g.out_w),
                                    static_cast<index_t>(g.out_channels_per_group()),
                                    static_cast<index_t>(g.patch_size())};
        launch_implicit_gemm(p, e, g.groups, /*splits=*/1);
      });
    });
  }
  return y.contiguous(conv2d_output_memory_format(input, weight));
}

at::Tensor conv2d_backward_input_cuda(const at::Tensor& grad_output, const at::Tensor& weight,
                                      c10::SymIntArrayRef input_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const Conv2dGeometry g =
      check_conv2d_backward_input(grad_output, weight, input_size, stride, padding, dilation, groups);
  const c10::cuda::CUDAGuard device_guard(grad_output.device());
  const at::Tensor dy = grad_output.contiguous();
  const at::Tensor w = weight.contiguous();
  // Every element is written by the gather below (dy is non-empty whenever dx is).
  at::Tensor dx = at::empty(g.input_sizes(), dy.options());
  if (dx.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "dlunits_conv2d_backward_input_cuda",
                                    [&] {
      dispatch_index_type({dx.numel(), w.numel(), dy.numel()}, [&](auto index_tag) {
        using index_t = decltype(index_tag);
        const BackwardInputProblem<scalar_t, index_t> p{dy.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                                                         dx.data_ptr<scalar_t>(), ConvShape<index_t>(g)};
        const GemmExtent<index_t> e{static_cast<index_t>(g.batch * g.in_h * g.in_w),
                                    static_cast<index_t>(g.in_channels_per_group()),
                                    static_cast<index_t>(g.out_channels_per_group() * g.kernel_h * g.kernel_w)};
        launch_implicit_gemm(p, e, g.groups, /*splits=*/1);
      });
    });
  }
  return dx.contiguous(grad_output.suggest_memory_format());
}

at::Tensor conv2d_backward_weight_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                       c10::SymIntArrayRef weight_size, at::IntArrayRef stride,
                                       at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const Conv2dGeometry g =
      check_conv2d_backward_weight(grad_output, input, weight_size, stride, padding, dilation, groups);
  const c10::cuda::CUDAGuard device_guard(grad_output.device());
  at::Tensor dw = at::zeros(g.weight_sizes(), grad_output.options());
  if (dw.numel() == 0 || grad_output.numel() == 0) return dw;
  const at::Tensor dy = grad_output.contiguous();
  const at::Tensor x = input.contiguous();

  // Enough (group, split) blocks to fill the GPU twice over, each at least 512 deep.
  const int64_t depth = g.batch * g.out_h * g.out_w;
  const int64_t tiles = ceil_div(g.out_channels_per_group(), kTile) * ceil_div(g.patch_size(), kTile) * g.groups;
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t splits = std::max<int64_t>(1, std::min(ceil_div(2 * sms, tiles), ceil_div(depth, 512)));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "dlunits_conv2d_backward_weight_cuda",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_dtype = c10::CppTypeToScalarType<acc_t>::value;
    at::Tensor partial = at::empty({splits, dw.numel()}, dy.options().dtype(acc_dtype));
    dispatch_index_type({x.numel(), dy.numel(), partial.numel()}, [&](auto index_tag) {
      using index_t = decltype(index_tag);
      const BackwardWeightProblem<scalar_t, index_t> p{dy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                                                        partial.data_ptr<acc_t>(), ConvShape<index_t>(g)};
      const GemmExtent<index_t> e{static_cast<index_t>(g.out_channels_per_group()),
                                  static_cast<index_t>(g.patch_size()), static_cast<index_t>(depth)};
      launch_implicit_gemm(p, e, g.groups, splits);
    });
    const int64_t blocks = std::min<int64_t>(ceil_div(dw.numel(), kThreads), 4096);
    sum_partials_kernel<scalar_t, acc_t><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        partial.data_ptr<acc_t>(), dw.data_ptr<scalar_t>(), dw.numel(), splits);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return dw;
}

at::Tensor conv2d_backward_bias_cuda(const at::Tensor& grad_output) {
  check_conv2d_backward_bias(grad_output);
  const c10::cuda::CUDAGuard device_guard(grad_output.device());
  const at::Tensor dy = grad_output.contiguous();
  const int64_t N = dy.size(0), C = dy.size(1), L = dy.size(2) * dy.size(3);
  at::Tensor db = at::zeros({C}, dy.options());
  if (dy.numel() == 0) return db;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "dlunits_conv2d_backward_bias_cuda",
                                  [&] {
    conv2d_backward_bias_kernel<scalar_t><<<static_cast<unsigned>(C), kThreads, 0,
                                            at::cuda::getCurrentCUDAStream()>>>(dy.data_ptr<scalar_t>(),
                                                                                db.data_ptr<scalar_t>(), N, C, L);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return db;
}

}  // namespace
}  // namespace dlunits

TORCH_LIBRARY_IMPL(dlunits, CUDA, m) {
  m.impl("conv2d", &dlunits::conv2d_cuda);
  m.impl("conv2d_backward_input", &dlunits::conv2d_backward_input_cuda);
  m.impl("conv2d_backward_weight", &dlunits::conv2d_backward_weight_cuda);
  m.impl("conv2d_backward_bias", &dlunits::conv2d_backward_bias_cuda);
}
