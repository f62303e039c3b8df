// dlunits — 2-D max and average pooling on CUDA, fixed and adaptive windows.
//
// forward   one thread per output element, in the output's memory order (NCHW or
//           NHWC, so consecutive threads write consecutive addresses):
//           max: the window's argmax by torch's rule (window_argmax, pool2d_windows.h), except
//                that a channels_last fixed window with no tap above -inf gets index 0, as from
//                torch's CUDA channels_last kernel (torch's other kernels: the window's first index);
//           avg: the window's sum / divisor, summed in float for half types.
// backward  one thread per input element, a gather over the outputs whose windows
//           cover it (PoolAxis::covering): no atomics, a fixed summation order, and
//           so the same result on every run.
//           max: a first pass writes each window's argmax (int32 or int64, as the index
//                math) to a scratch buffer, recomputed from x (see pool2d_ops.h); then
//                dx[i] = Σ dy[o] over the covering windows whose argmax is i (channels_last: over
//                every window of the covering range, as torch's CUDA channels_last backward, so
//                that an index 0 from a window that steps over element 0 lands there too);
//           avg: dx[i] = Σ dy[o] / divisor(o) over the covering windows.
// Cost: memory-bound. Minimum bytes: forward x + y (+ 8 per output for kept
// indices); backward dy + dx (max: + x, and the scratch argmax written and read).
// Index math is int32 when every offset and every product of the window math
// fits (pool2d_fits_int32), int64 otherwise.
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

#include "../pool2d_ops.h"
#include "launch.cuh"

namespace dlunits {
namespace {

// The problem as the kernels see it, in index_t.
template <typename index_t>
struct PoolProblem {
  index_t channels;
  PoolAxis<index_t> h, w;
  bool channels_last;
  // avg pooling's divisor (unused by max pooling)
  bool count_include_pad;
  index_t divisor_override;  // 0: none

  // Where plane (n, c) starts, and the distance between its consecutive elements.
  C10_HOST_DEVICE index_t plane_offset(index_t n, index_t c, index_t height, index_t width) const {
    return channels_last ? n * height * width * channels + c : (n * channels + c) * height * width;
  }
  C10_HOST_DEVICE index_t element_stride() const { return channels_last ? channels : 1; }

  // Splits a linear index in memory order into (n, c, row, col) of a (·, channels, height, width) tensor.
  C10_HOST_DEVICE void split(index_t i, index_t height, index_t width, index_t& n, index_t& c, index_t& row,
                             index_t& col) const {
    if (channels_last) {
      c = i % channels;
      i /= channels;
      col = i % width;
      i /= width;
      row = i % height;
      n = i / height;
    } else {
      col = i % width;
      i /= width;
      row = i % height;
      i /= height;
      c = i % channels;
      n = i / channels;
    }
  }

  C10_HOST_DEVICE index_t divisor(index_t oh, index_t ow) const {
    if (divisor_override != 0) return divisor_override;
    if (count_include_pad && !h.adaptive) return h.span_with_padding(oh) * w.span_with_padding(ow);
    return h.taps(oh).count * w.taps(ow).count;
  }
};

template <typename index_t>
PoolAxis<index_t> narrow_axis(const PoolAxis<int64_t>& a) {
  return {static_cast<index_t>(a.in),     static_cast<index_t>(a.out),      static_cast<index_t>(a.kernel),
          static_cast<index_t>(a.stride), static_cast<index_t>(a.pad),      static_cast<index_t>(a.dilation),
          a.adaptive};
}

template <typename index_t>
PoolProblem<index_t> pool_problem(const Pool2dGeometry& g, bool channels_last, const AvgDivisor& divisor) {
  return {static_cast<index_t>(g.channels), narrow_axis<index_t>(g.h),  narrow_axis<index_t>(g.w), channels_last,
          divisor.count_include_pad,        static_cast<index_t>(divisor.override_value)};
}

// int32 index math is safe when every element offset fits, and so do the window products:
// adaptive windows multiply o·in and (i+1)·out; fixed ones reach o·stride + (kernel-1)·dilation.
bool pool2d_fits_int32(const Pool2dGeometry& g, const AvgDivisor& divisor) {
  constexpr int64_t limit = std::numeric_limits<int32_t>::max();
  const int64_t elements = g.planes() * std::max(g.h.in * g.w.in, g.h.out * g.w.out);
  bool fits = elements < limit && divisor.override_value < limit && divisor.override_value > -limit;
  for (const PoolAxis<int64_t>* a : {&g.h, &g.w}) {
    const int64_t reach = a->adaptive ? (a->in + 1) * (a->out + 1)
                                      : (a->out + 1) * a->stride + a->in + a->pad + a->kernel * a->dilation;
    fits = fits && reach < limit;
  }
  // a fixed window's height times width (avg's divisor) is at most (in + 2·pad)² per axis pair
  fits = fits && (g.h.in + 2 * g.h.pad) * (g.w.in + 2 * g.w.pad) < limit;
  return fits;
}

// --- kernels ------------------------------------------------------------------------------------------

// Each output's max and its argmax (ih·W + iw). y may be null (the backward's first pass keeps
// only the argmax), and so may argmax (the forward without indices).
template <typename scalar_t, typename index_t, typename argmax_t>
__global__ void max_pool2d_forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                                          argmax_t* __restrict__ argmax, const PoolProblem<index_t> p,
                                          int64_t numel) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t linear = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; linear < numel;
       linear += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    index_t n, c, oh, ow;
    p.split(static_cast<index_t>(linear), p.h.out, p.w.out, n, c, oh, ow);
    auto best = window_argmax<acc_t>(x + p.plane_offset(n, c, p.h.in, p.w.in), p.w.in, p.element_stride(),
                                     p.h.taps(oh), p.w.taps(ow));
    // Matches torch's CUDA channels_last kernel: index 0 when no tap replaced the initial -inf.
    if (p.channels_last && !p.h.adaptive && best.value == -std::numeric_limits<acc_t>::infinity()) best.index = 0;
    if (y != nullptr) y[linear] = static_cast<scalar_t>(best.value);
    if (argmax != nullptr) argmax[linear] = best.index;
  }
}

// The gather of the backward: dx at position i sums dy over the covering windows whose argmax
// (from the first pass, in the output's layout) is i. Recomputing each window's argmax here
// instead would cost (windows covering i) × (taps per window) reads: (H·W)² per plane for
// global max pooling.
template <typename scalar_t, typename index_t>
__global__ void max_pool2d_backward_kernel(const scalar_t* __restrict__ dy, const index_t* __restrict__ argmax,
                                           scalar_t* __restrict__ dx, const PoolProblem<index_t> p, int64_t numel) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t linear = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; linear < numel;
       linear += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    index_t n, c, ih, iw;
    p.split(static_cast<index_t>(linear), p.h.in, p.w.in, n, c, ih, iw);
    const index_t out_plane = p.plane_offset(n, c, p.h.out, p.w.out);
    const index_t position = ih * p.w.in + iw;
    index_t oh_first, oh_last, ow_first, ow_last;
    p.h.covering(ih, oh_first, oh_last);
    p.w.covering(iw, ow_first, ow_last);
    // A window's argmax is one of its taps, so hits() only spares loads, except for a channels_last window's
    // index 0 (no tap above -inf, see the forward): torch's CUDA channels_last backward tests no hit, and so
    // sends that gradient to element 0 whenever the window's range covers it, even if the window steps over it.
    const bool test_hits = !p.channels_last;
    acc_t sum = 0;
    for (index_t oh = oh_first; oh <= oh_last; ++oh) {
      if (test_hits && !p.h.hits(oh, ih)) continue;
      for (index_t ow = ow_first; ow <= ow_last; ++ow) {
        if (test_hits && !p.w.hits(ow, iw)) continue;
        const index_t o = out_plane + (oh * p.w.out + ow) * p.element_stride();
        if (argmax[o] == position) sum += static_cast<acc_t>(dy[o]);
      }
    }
    dx[linear] = static_cast<scalar_t>(sum);
  }
}

template <typename scalar_t, typename index_t>
__global__ void avg_pool2d_forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                                          const PoolProblem<index_t> p, int64_t numel) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t linear = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; linear < numel;
       linear += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    index_t n, c, oh, ow;
    p.split(static_cast<index_t>(linear), p.h.out, p.w.out, n, c, oh, ow);
    const scalar_t* x_plane = x + p.plane_offset(n, c, p.h.in, p.w.in);
    const Taps<index_t> th = p.h.taps(oh), tw = p.w.taps(ow);
    acc_t sum = 0;
    for (index_t i = 0, ih = th.first; i < th.count; ++i, ih += th.step) {
      for (index_t j = 0, iw = tw.first; j < tw.count; ++j, iw += tw.step) {
        sum += static_cast<acc_t>(x_plane[(ih * p.w.in + iw) * p.element_stride()]);
      }
    }
    y[linear] = static_cast<scalar_t>(sum / static_cast<acc_t>(p.divisor(oh, ow)));
  }
}

template <typename scalar_t, typename index_t>
__global__ void avg_pool2d_backward_kernel(const scalar_t* __restrict__ dy, scalar_t* __restrict__ dx,
                                           const PoolProblem<index_t> p, int64_t numel) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t linear = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; linear < numel;
       linear += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    index_t n, c, ih, iw;
    p.split(static_cast<index_t>(linear), p.h.in, p.w.in, n, c, ih, iw);
    const scalar_t* dy_plane = dy + p.plane_offset(n, c, p.h.out, p.w.out);
    index_t oh_first, oh_last, ow_first, ow_last;
    p.h.covering(ih, oh_first, oh_last);
    p.w.covering(iw, ow_first, ow_last);
    acc_t sum = 0;
    for (index_t oh = oh_first; oh <= oh_last; ++oh) {
      for (index_t ow = ow_first; ow <= ow_last; ++ow) {
        // avg pooling has no dilation, so every covering window contains (ih, iw)
        sum += static_cast<acc_t>(dy_plane[(oh * p.w.out + ow) * p.element_stride()]) /
               static_cast<acc_t>(p.divisor(oh, ow));
      }
    }
    dx[linear] = static_cast<scalar_t>(sum);
  }
}

// --- launches -----------------------------------------------------------------------------------------

// Calls body.template operator()<index_t>(problem) with the narrowest safe index type.
template <typename Body>
void with_index_type(const Pool2dGeometry& g, bool channels_last, const AvgDivisor& divisor, const Body& body) {
  if (pool2d_fits_int32(g, divisor)) {
    body(pool_problem<int32_t>(g, channels_last, divisor));
  } else {
    body(pool_problem<int64_t>(g, channels_last, divisor));
  }
}

struct CudaPool2dKernels {
  static void max_forward(const at::Tensor& x, const at::Tensor& y, const at::Tensor& indices,
                          const Pool2dGeometry& g, bool channels_last) {
    const c10::cuda::CUDAGuard device_guard(x.device());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dlunits.max_pool2d_cuda", [&] {
      with_index_type(g, channels_last, AvgDivisor{false, 0}, [&](const auto& problem) {
        using index_t = decltype(problem.channels);
        launch_elementwise(max_pool2d_forward_kernel<scalar_t, index_t, int64_t>, y.numel(),
                           x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
                           indices.defined() ? indices.mutable_data_ptr<int64_t>() : nullptr, problem);
      });
    });
  }

  // Two passes: each window's argmax (one thread per output, 4 or 8 bytes per output), then the gather.
  static void max_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& dx, const Pool2dGeometry& g,
                           bool channels_last) {
    const c10::cuda::CUDAGuard device_guard(x.device());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dlunits.max_pool2d_backward_cuda",
                                    [&] {
      with_index_type(g, channels_last, AvgDivisor{false, 0}, [&](const auto& problem) {
        using index_t = decltype(problem.channels);
        const at::Tensor argmax =
            at::empty({dy.numel()}, x.options().dtype(std::is_same_v<index_t, int32_t> ? at::kInt : at::kLong));
        index_t* argmax_data = static_cast<index_t*>(argmax.mutable_data_ptr());
        launch_elementwise(max_pool2d_forward_kernel<scalar_t, index_t, index_t>, dy.numel(),
                           x.const_data_ptr<scalar_t>(), static_cast<scalar_t*>(nullptr), argmax_data, problem);
        launch_elementwise(max_pool2d_backward_kernel<scalar_t, index_t>, dx.numel(), dy.const_data_ptr<scalar_t>(),
                           static_cast<const index_t*>(argmax_data), dx.mutable_data_ptr<scalar_t>(), problem);
      });
    });
  }

  static void avg_forward(const at::Tensor& x, const at::Tensor& y, const Pool2dGeometry& g,
                          const AvgDivisor& divisor, bool channels_last) {
    const c10::cuda::CUDAGuard device_guard(x.device());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dlunits.avg_pool2d_cuda", [&] {
      with_index_type(g, channels_last, divisor, [&](const auto& problem) {
        using index_t = decltype(problem.channels);
        launch_elementwise(avg_pool2d_forward_kernel<scalar_t, index_t>, y.numel(), x.const_data_ptr<scalar_t>(),
                           y.mutable_data_ptr<scalar_t>(), problem);
      });
    });
  }

  static void avg_backward(const at::Tensor& dy, const at::Tensor& dx, const Pool2dGeometry& g,
                           const AvgDivisor& divisor, bool channels_last) {
    const c10::cuda::CUDAGuard device_guard(dy.device());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dy.scalar_type(), "dlunits.avg_pool2d_backward_cuda",
                                    [&] {
      with_index_type(g, channels_last, divisor, [&](const auto& problem) {
        using index_t = decltype(problem.channels);
        launch_elementwise(avg_pool2d_backward_kernel<scalar_t, index_t>, dx.numel(), dy.const_data_ptr<scalar_t>(),
                           dx.mutable_data_ptr<scalar_t>(), problem);
      });
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(dlunits, CUDA, m) { register_pool2d_ops<CudaPool2dKernels>(m); }

}  // namespace dlunits
