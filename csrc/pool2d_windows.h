// dlunits — the windows of 2-D pooling, one spatial axis at a time.
//
// Shared by the CPU and CUDA pooling kernels. A pooling window is the product
// of one window per axis, so everything here is 1-D. Along an axis of `in`
// input positions and `out` output positions, output o pools:
//
//   fixed windows (max/avg pooling):  start = o·stride - pad, taps start + j·dilation,
//                                     j = 0..kernel-1, of which those inside [0, in) count;
//   adaptive windows:                 [floor(o·in/out), ceil((o+1)·in/out)), torch's rule.
//
// taps(o) gives the taps of o that lie inside the input, in increasing order,
// which is the order torch scans them in (and so decides ties and NaNs by).
// covering(i) gives the outputs whose windows may contain input position i:
// the backward passes of the CUDA kernels gather over it, so that each gradient
// element is written by exactly one thread.
//
// index_t is int32_t where every product below fits (the CUDA kernels check
// that), int64_t otherwise.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>
#include <limits>

namespace dlunits {

// count positions first, first + step, ... (count may be 0, see PoolAxis::taps).
template <typename index_t>
struct Taps {
  index_t first, count, step;
};

template <typename index_t>
struct PoolAxis {
  index_t in, out;
  index_t kernel, stride, pad, dilation;  // fixed windows; unused when adaptive
  bool adaptive;

  // The taps of output o inside the input. A fixed window whose every tap falls
  // in the padding (possible only with dilation > 1, e.g. in = 1, kernel 2,
  // dilation 3, pad 2) has count 0, and first is where torch would put its index.
  C10_HOST_DEVICE Taps<index_t> taps(index_t o) const {
    if (adaptive) {
      const index_t first = o * in / out;
      const index_t end = ((o + 1) * in + out - 1) / out;
      return {first, end - first, 1};
    }
    const index_t start = o * stride - pad;
    const index_t skipped = start < 0 ? (dilation - 1 - start) / dilation : 0;  // taps before 0
    const index_t first = start + skipped * dilation;
    index_t count = 0;
    if (first < in) {
      const index_t end = (in - 1 - start) / dilation + 1;  // taps before `in`
      count = (end < kernel ? end : kernel) - skipped;
      if (count < 0) count = 0;
    }
    return {first, count, dilation};
  }

  // Fixed windows: the window's extent clipped to the padded input, [start, min(start + kernel, in + pad)),
  // which is avg_pool2d's divisor along this axis when padding counts (count_include_pad).
  C10_HOST_DEVICE index_t span_with_padding(index_t o) const {
    const index_t start = o * stride - pad;
    const index_t end = start + kernel < in + pad ? start + kernel : in + pad;
    return end - start;
  }

  // The outputs [first, last] (empty when first > last) whose windows may contain input
  // position i; with dilation > 1 a window may step over i, which hits() tells.
  C10_HOST_DEVICE void covering(index_t i, index_t& first, index_t& last) const {
    if (adaptive) {
      first = i * out / in;
      last = ((i + 1) * out - 1) / in;
    } else {
      const index_t lowest_start = i + pad - (kernel - 1) * dilation;  // o·stride >= this
      first = lowest_start <= 0 ? 0 : (lowest_start + stride - 1) / stride;
      last = (i + pad) / stride;
    }
    if (last > out - 1) last = out - 1;
  }

  C10_HOST_DEVICE bool hits(index_t o, index_t i) const {
    return adaptive || dilation == 1 || (i + pad - o * stride) % dilation == 0;
  }
};

// torch's max over a window: a later tap takes over when it is greater or NaN, so ties go to
// the first tap and any NaN gives NaN. Values are compared as acc_t (float for half types,
// which represents them exactly). Element (ih, iw) of the plane is at (ih·width + iw)·element_stride;
// index is torch's ih·width + iw. A window with no tap keeps -inf and torch's index.
template <typename acc_t, typename index_t>
struct WindowArgmax {
  acc_t value;
  index_t index;
};

template <typename acc_t, typename scalar_t, typename index_t>
C10_HOST_DEVICE inline WindowArgmax<acc_t, index_t> window_argmax(const scalar_t* plane, index_t width,
                                                                   index_t element_stride, const Taps<index_t>& th,
                                                                   const Taps<index_t>& tw) {
  WindowArgmax<acc_t, index_t> best{-std::numeric_limits<acc_t>::infinity(), th.first * width + tw.first};
  for (index_t i = 0, ih = th.first; i < th.count; ++i, ih += th.step) {
    for (index_t j = 0, iw = tw.first; j < tw.count; ++j, iw += tw.step) {
      const index_t position = ih * width + iw;
      const acc_t v = static_cast<acc_t>(plane[position * element_stride]);
      if (v > best.value || v != v) best = {v, position};  // v != v: NaN
    }
  }
  return best;
}

}  // namespace dlunits
