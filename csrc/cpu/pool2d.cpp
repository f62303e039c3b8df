// dlunits — 2-D max and average pooling on the CPU, fixed and adaptive windows.
//
// forward   max: y[p, oh, ow] = max over the window's taps of x[p, ih, iw]
//                (torch's rule: a later tap wins when greater or NaN, so ties go to
//                the first tap and a NaN anywhere gives NaN);
//           avg: y[p, oh, ow] = Σ x[p, ih, iw] over the taps / divisor(oh, ow)
// backward  max: dx[p, argmax(oh, ow)] += dy[p, oh, ow], the argmax recomputed
//                from x (see pool2d_ops.h);
//           avg: dx[p, ih, iw] += dy[p, oh, ow] / divisor(oh, ow) for every tap.
// Windows and taps: pool2d_windows.h; per-axis tap tables are built once per call.
//
// Cost: about one compare (max) or add (avg) per tap, so pooling is bound by
// memory. Minimum bytes: forward x + y (+ 8 bytes per output for kept indices);
// backward dy + x (max) + dx.
//
// Threads never share a gradient element: the backward passes scatter within a
// plane (NCHW) or a block of channels of one sample (NHWC), and each of those
// belongs to one thread.
//
// Two loop orders per layout:
//   NCHW, fixed windows: row by row. For each tap (kh, kw) the outputs of a row
//        read input columns ow·stride + kw·dilation - pad, so the inner loop runs
//        over ow with a constant stride and vectorises; the (kh, kw) loops outside
//        it keep torch's per-window scan order.
//   NCHW adaptive windows, and the reference for both: one window at a time.
//   NHWC: one window at a time, the inner loop over contiguous channels.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "../pool2d_ops.h"

namespace dlunits {
namespace {

using Axis = PoolAxis<int64_t>;

std::vector<Taps<int64_t>> taps_table(const Axis& a) {
  std::vector<Taps<int64_t>> table(a.out);
  for (int64_t o = 0; o < a.out; ++o) table[o] = a.taps(o);
  return table;
}

// avg pooling's divisor along one axis (before any divisor_override).
std::vector<int64_t> divisor_table(const Axis& a, const AvgDivisor& divisor) {
  std::vector<int64_t> table(a.out);
  for (int64_t o = 0; o < a.out; ++o) {
    table[o] = divisor.count_include_pad && !a.adaptive ? a.span_with_padding(o) : a.taps(o).count;
  }
  return table;
}

struct Divisors {
  std::vector<int64_t> h, w;
  int64_t override_value;
  int64_t at(int64_t oh, int64_t ow) const { return override_value != 0 ? override_value : h[oh] * w[ow]; }
};

Divisors divisors(const Pool2dGeometry& g, const AvgDivisor& divisor) {
  return {divisor_table(g.h, divisor), divisor_table(g.w, divisor), divisor.override_value};
}

// Tap kw of a fixed-window axis: outputs [lo, hi) read input column o·stride + offset.
struct TapColumn {
  int64_t lo, hi, offset;
};

std::vector<TapColumn> tap_columns(const Axis& a) {
  std::vector<TapColumn> columns(a.kernel);
  for (int64_t k = 0; k < a.kernel; ++k) {
    const int64_t offset = k * a.dilation - a.pad;
    const int64_t lo = offset >= 0 ? 0 : (-offset + a.stride - 1) / a.stride;
    const int64_t hi = a.in - 1 - offset >= 0 ? std::min(a.out, (a.in - 1 - offset) / a.stride + 1) : 0;
    columns[k] = {lo, std::max(lo, hi), offset};
  }
  return columns;
}

template <typename scalar_t>
inline bool takes_over(scalar_t value, scalar_t best) {
  return value > best || value != value;  // value != value: NaN
}

constexpr int64_t kGrainElements = 32768;

int64_t grain(int64_t elements_per_item) {
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, elements_per_item));
}

// --- NCHW, one window at a time (adaptive windows; reference for the row kernels) -------------

template <typename scalar_t>
WindowArgmax<scalar_t, int64_t> window_max(const scalar_t* plane, int64_t width, const Taps<int64_t>& th,
                                           const Taps<int64_t>& tw) {
  return window_argmax<scalar_t>(plane, width, int64_t{1}, th, tw);
}

template <typename scalar_t>
void max_forward_plane_by_window(const scalar_t* x, scalar_t* y, int64_t* indices, const Pool2dGeometry& g,
                                 const std::vector<Taps<int64_t>>& rows, const std::vector<Taps<int64_t>>& cols) {
  for (int64_t oh = 0; oh < g.h.out; ++oh) {
    for (int64_t ow = 0; ow < g.w.out; ++ow) {
      const auto best = window_max(x, g.w.in, rows[oh], cols[ow]);
      y[oh * g.w.out + ow] = best.value;
      if (indices) indices[oh * g.w.out + ow] = best.index;
    }
  }
}

template <typename scalar_t>
void max_backward_plane_by_window(const scalar_t* dy, const scalar_t* x, scalar_t* dx, const Pool2dGeometry& g,
                                  const std::vector<Taps<int64_t>>& rows, const std::vector<Taps<int64_t>>& cols) {
  for (int64_t oh = 0; oh < g.h.out; ++oh) {
    if (rows[oh].count == 0) continue;
    for (int64_t ow = 0; ow < g.w.out; ++ow) {
      if (cols[ow].count == 0) continue;  // a window entirely in the padding reads nothing
      dx[window_max(x, g.w.in, rows[oh], cols[ow]).index] += dy[oh * g.w.out + ow];
    }
  }
}

// Σ of n consecutive elements in two vectors of kLanes partial sums (two, so that consecutive
// vector adds do not wait on each other), reduced pairwise.
constexpr int64_t kLanes = 8;

template <typename scalar_t>
scalar_t contiguous_sum(const scalar_t* __restrict__ p, int64_t n) {
  scalar_t even[kLanes] = {}, odd[kLanes] = {};
  int64_t j = 0;
  for (; j + 2 * kLanes <= n; j += 2 * kLanes) {
    for (int64_t lane = 0; lane < kLanes; ++lane) {
      even[lane] += p[j + lane];
      odd[lane] += p[j + kLanes + lane];
    }
  }
  for (; j < n; ++j) even[j % kLanes] += p[j];
  for (int64_t lane = 0; lane < kLanes; ++lane) even[lane] += odd[lane];
  for (int64_t width = kLanes / 2; width > 0; width /= 2) {
    for (int64_t lane = 0; lane < width; ++lane) even[lane] += even[lane + width];
  }
  return even[0];
}

// Σ over a window of a plane. Adaptive windows are contiguous along W, and a window of whole
// rows (global average pooling) is one contiguous block.
template <typename scalar_t>
scalar_t window_sum(const scalar_t* plane, int64_t width, const Taps<int64_t>& th, const Taps<int64_t>& tw) {
  if (tw.step == 1 && tw.count == width && th.step == 1) {
    return contiguous_sum(plane + th.first * width, th.count * width);
  }
  scalar_t sum = 0;
  for (int64_t i = 0, ih = th.first; i < th.count; ++i, ih += th.step) {
    const scalar_t* row = plane + ih * width + tw.first;
    if (tw.step == 1) {
      sum += contiguous_sum(row, tw.count);
    } else {
      for (int64_t j = 0; j < tw.count; ++j) sum += row[j * tw.step];
    }
  }
  return sum;
}

template <typename scalar_t>
void avg_forward_plane_by_window(const scalar_t* x, scalar_t* y, const Pool2dGeometry& g,
                                 const std::vector<Taps<int64_t>>& rows, const std::vector<Taps<int64_t>>& cols,
                                 const Divisors& div) {
  for (int64_t oh = 0; oh < g.h.out; ++oh) {
    const auto& th = rows[oh];
    for (int64_t ow = 0; ow < g.w.out; ++ow) {
      y[oh * g.w.out + ow] = window_sum(x, g.w.in, th, cols[ow]) / static_cast<scalar_t>(div.at(oh, ow));
    }
  }
}

template <typename scalar_t>
void avg_backward_plane_by_window(const scalar_t* dy, scalar_t* dx, const Pool2dGeometry& g,
                                  const std::vector<Taps<int64_t>>& rows, const std::vector<Taps<int64_t>>& cols,
                                  const Divisors& div) {
  for (int64_t oh = 0; oh < g.h.out; ++oh) {
    const auto& th = rows[oh];
    for (int64_t ow = 0; ow < g.w.out; ++ow) {
      const auto& tw = cols[ow];
      const scalar_t share = dy[oh * g.w.out + ow] / static_cast<scalar_t>(div.at(oh, ow));
      for (int64_t i = 0, ih = th.first; i < th.count; ++i, ih += th.step) {
        scalar_t* __restrict__ row = dx + ih * g.w.in + tw.first;
        const int64_t count = tw.count;
        if (tw.step == 1) {  // adaptive windows: a contiguous run, one vector loop
          for (int64_t j = 0; j < count; ++j) row[j] += share;
        } else {
          for (int64_t j = 0; j < count; ++j) row[j * tw.step] += share;
        }
      }
    }
  }
}

// --- NCHW, fixed windows, row by row ------------------------------------------------------------

// The per-call tables of the row kernels.
struct RowTables {
  std::vector<Taps<int64_t>> rows, cols;
  std::vector<TapColumn> tap_cols;
};

RowTables row_tables(const Pool2dGeometry& g) {
  return {taps_table(g.h), taps_table(g.w), g.w.adaptive ? std::vector<TapColumn>{} : tap_columns(g.w)};
}

// One output row of max pooling: y_row and, when index_row is given, the argmax of each window.
template <typename scalar_t>
void max_row(const scalar_t* x, scalar_t* y_row, int64_t* index_row, const Pool2dGeometry& g,
             const RowTables& t, int64_t oh) {
  const auto& th = t.rows[oh];
  const int64_t stride = g.w.stride;
  std::fill(y_row, y_row + g.w.out, -std::numeric_limits<scalar_t>::infinity());
  if (index_row) {
    for (int64_t ow = 0; ow < g.w.out; ++ow) index_row[ow] = th.first * g.w.in + t.cols[ow].first;
  }
  // Branch-free selects, and restrict pointers, so that both loops vectorise.
  scalar_t* __restrict__ best = y_row;
  int64_t* __restrict__ best_index = index_row;
  for (int64_t i = 0, ih = th.first; i < th.count; ++i, ih += th.step) {
    const scalar_t* x_row = x + ih * g.w.in;
    for (const TapColumn& c : t.tap_cols) {
      const scalar_t* __restrict__ tap = x_row + c.offset;
      const int64_t lo = c.lo, hi = c.hi;  // locals: the int64 index stores could alias c
      if (best_index) {
        const int64_t position = ih * g.w.in + c.offset;
        for (int64_t ow = lo; ow < hi; ++ow) {
          const scalar_t v = tap[ow * stride];
          const bool take = takes_over(v, best[ow]);
          best[ow] = take ? v : best[ow];
          best_index[ow] = take ? position + ow * stride : best_index[ow];
        }
      } else {
        for (int64_t ow = lo; ow < hi; ++ow) {
          const scalar_t v = tap[ow * stride];
          best[ow] = takes_over(v, best[ow]) ? v : best[ow];
        }
      }
    }
  }
}

template <typename scalar_t>
void max_forward_plane_by_row(const scalar_t* x, scalar_t* y, int64_t* indices, const Pool2dGeometry& g,
                              const RowTables& t) {
  for (int64_t oh = 0; oh < g.h.out; ++oh) {
    max_row(x, y + oh * g.w.out, indices ? indices + oh * g.w.out : nullptr, g, t, oh);
  }
}

template <typename scalar_t>
void max_backward_plane_by_row(const scalar_t* dy, const scalar_t* x, scalar_t* dx, const Pool2dGeometry& g,
                               const RowTables& t, scalar_t* value_row, int64_t* index_row) {
  for (int64_t oh = 0; oh < g.h.out; ++oh) {
    if (t.rows[oh].count == 0) continue;
    max_row(x, value_row, index_row, g, t, oh);
    const scalar_t* dy_row = dy + oh * g.w.out;
    for (int64_t ow = 0; ow < g.w.out; ++ow) {
      if (t.cols[ow].count != 0) dx[index_row[ow]] += dy_row[ow];
    }
  }
}

template <typename scalar_t>
void avg_forward_plane_by_row(const scalar_t* x, scalar_t* y, const Pool2dGeometry& g, const RowTables& t,
                              const Divisors& div) {
  const int64_t stride = g.w.stride;
  for (int64_t oh = 0; oh < g.h.out; ++oh) {
    const auto& th = t.rows[oh];
    scalar_t* y_row = y + oh * g.w.out;
    std::fill(y_row, y_row + g.w.out, scalar_t(0));
    for (int64_t i = 0, ih = th.first; i < th.count; ++i, ih += th.step) {
      const scalar_t* x_row = x + ih * g.w.in;
      for (const TapColumn& c : t.tap_cols) {
        const scalar_t* tap = x_row + c.offset;
        for (int64_t ow = c.lo; ow < c.hi; ++ow) y_row[ow] += tap[ow * stride];
      }
    }
    for (int64_t ow = 0; ow < g.w.out; ++ow) y_row[ow] /= static_cast<scalar_t>(div.at(oh, ow));
  }
}

template <typename scalar_t>
void avg_backward_plane_by_row(const scalar_t* dy, scalar_t* dx, const Pool2dGeometry& g, const RowTables& t,
                               const Divisors& div, scalar_t* share_row) {
  const int64_t stride = g.w.stride;
  for (int64_t oh = 0; oh < g.h.out; ++oh) {
    const auto& th = t.rows[oh];
    for (int64_t ow = 0; ow < g.w.out; ++ow) {
      share_row[ow] = dy[oh * g.w.out + ow] / static_cast<scalar_t>(div.at(oh, ow));
    }
    for (int64_t i = 0, ih = th.first; i < th.count; ++i, ih += th.step) {
      scalar_t* dx_row = dx + ih * g.w.in;
      for (const TapColumn& c : t.tap_cols) {
        scalar_t* tap = dx_row + c.offset;
        for (int64_t ow = c.lo; ow < c.hi; ++ow) tap[ow * stride] += share_row[ow];
      }
    }
  }
}

// --- NHWC: one window at a time, channels innermost ------------------------------------------------

// Channels per backward task: one sample's block of channels belongs to one thread.
constexpr int64_t kChannelBlock = 64;

template <typename scalar_t>
void max_window_channels(const scalar_t* x_sample, const Pool2dGeometry& g, const Taps<int64_t>& th,
                         const Taps<int64_t>& tw, int64_t c0, int64_t channels, scalar_t* __restrict__ best,
                         int64_t* __restrict__ best_index) {
  const int64_t C = g.channels;
  std::fill(best, best + channels, -std::numeric_limits<scalar_t>::infinity());
  if (best_index) std::fill(best_index, best_index + channels, th.first * g.w.in + tw.first);
  for (int64_t i = 0, ih = th.first; i < th.count; ++i, ih += th.step) {
    for (int64_t j = 0, iw = tw.first; j < tw.count; ++j, iw += tw.step) {
      const int64_t position = ih * g.w.in + iw;
      const scalar_t* __restrict__ v = x_sample + position * C + c0;
      if (best_index) {
        for (int64_t c = 0; c < channels; ++c) {
          const bool take = takes_over(v[c], best[c]);
          best[c] = take ? v[c] : best[c];
          best_index[c] = take ? position : best_index[c];
        }
      } else {
        for (int64_t c = 0; c < channels; ++c) best[c] = takes_over(v[c], best[c]) ? v[c] : best[c];
      }
    }
  }
}

template <typename scalar_t>
void max_forward_nhwc(const scalar_t* x, scalar_t* y, int64_t* indices, const Pool2dGeometry& g) {
  const auto rows = taps_table(g.h), cols = taps_table(g.w);
  const int64_t C = g.channels, in_plane = g.h.in * g.w.in, out_plane = g.h.out * g.w.out;
  at::parallel_for(0, g.batch * out_plane, grain(C), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p / out_plane, oh = (p % out_plane) / g.w.out, ow = p % g.w.out;
      max_window_channels(x + n * in_plane * C, g, rows[oh], cols[ow], 0, C, y + p * C,
                          indices ? indices + p * C : nullptr);
    }
  });
}

template <typename scalar_t>
void max_backward_nhwc(const scalar_t* dy, const scalar_t* x, scalar_t* dx, const Pool2dGeometry& g) {
  const auto rows = taps_table(g.h), cols = taps_table(g.w);
  const int64_t C = g.channels, in_plane = g.h.in * g.w.in, out_plane = g.h.out * g.w.out;
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  at::parallel_for(0, g.batch * blocks, 1, [&](int64_t t0, int64_t t1) {
    scalar_t best[kChannelBlock];
    int64_t best_index[kChannelBlock];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / blocks, c0 = (t % blocks) * kChannelBlock, channels = std::min(kChannelBlock, C - c0);
      const scalar_t* x_sample = x + n * in_plane * C;
      scalar_t* dx_sample = dx + n * in_plane * C;
      for (int64_t position = 0; position < in_plane; ++position) {
        std::fill(dx_sample + position * C + c0, dx_sample + position * C + c0 + channels, scalar_t(0));
      }
      for (int64_t oh = 0; oh < g.h.out; ++oh) {
        for (int64_t ow = 0; ow < g.w.out; ++ow) {
          if (rows[oh].count == 0 || cols[ow].count == 0) continue;
          max_window_channels(x_sample, g, rows[oh], cols[ow], c0, channels, best, best_index);
          const scalar_t* g_out = dy + ((n * out_plane) + oh * g.w.out + ow) * C + c0;
          for (int64_t c = 0; c < channels; ++c) dx_sample[best_index[c] * C + c0 + c] += g_out[c];
        }
      }
    }
  });
}

template <typename scalar_t>
void avg_forward_nhwc(const scalar_t* x, scalar_t* y, const Pool2dGeometry& g, const Divisors& div) {
  const auto rows = taps_table(g.h), cols = taps_table(g.w);
  const int64_t C = g.channels, in_plane = g.h.in * g.w.in, out_plane = g.h.out * g.w.out;
  at::parallel_for(0, g.batch * out_plane, grain(C), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p / out_plane, oh = (p % out_plane) / g.w.out, ow = p % g.w.out;
      const auto &th = rows[oh], &tw = cols[ow];
      scalar_t* sum = y + p * C;
      std::fill(sum, sum + C, scalar_t(0));
      for (int64_t i = 0, ih = th.first; i < th.count; ++i, ih += th.step) {
        for (int64_t j = 0, iw = tw.first; j < tw.count; ++j, iw += tw.step) {
          const scalar_t* v = x + (n * in_plane + ih * g.w.in + iw) * C;
          for (int64_t c = 0; c < C; ++c) sum[c] += v[c];
        }
      }
      const scalar_t divisor = static_cast<scalar_t>(div.at(oh, ow));
      for (int64_t c = 0; c < C; ++c) sum[c] /= divisor;
    }
  });
}

template <typename scalar_t>
void avg_backward_nhwc(const scalar_t* dy, scalar_t* dx, const Pool2dGeometry& g, const Divisors& div) {
  const auto rows = taps_table(g.h), cols = taps_table(g.w);
  const int64_t C = g.channels, in_plane = g.h.in * g.w.in, out_plane = g.h.out * g.w.out;
  const int64_t blocks = (C + kChannelBlock - 1) / kChannelBlock;
  at::parallel_for(0, g.batch * blocks, 1, [&](int64_t t0, int64_t t1) {
    scalar_t share[kChannelBlock];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t n = t / blocks, c0 = (t % blocks) * kChannelBlock, channels = std::min(kChannelBlock, C - c0);
      scalar_t* dx_sample = dx + n * in_plane * C;
      for (int64_t position = 0; position < in_plane; ++position) {
        std::fill(dx_sample + position * C + c0, dx_sample + position * C + c0 + channels, scalar_t(0));
      }
      for (int64_t oh = 0; oh < g.h.out; ++oh) {
        for (int64_t ow = 0; ow < g.w.out; ++ow) {
          const auto &th = rows[oh], &tw = cols[ow];
          const scalar_t* g_out = dy + ((n * out_plane) + oh * g.w.out + ow) * C + c0;
          const scalar_t divisor = static_cast<scalar_t>(div.at(oh, ow));
          for (int64_t c = 0; c < channels; ++c) share[c] = g_out[c] / divisor;
          for (int64_t i = 0, ih = th.first; i < th.count; ++i, ih += th.step) {
            for (int64_t j = 0, iw = tw.first; j < tw.count; ++j, iw += tw.step) {
              scalar_t* target = dx_sample + (ih * g.w.in + iw) * C + c0;
              for (int64_t c = 0; c < channels; ++c) target[c] += share[c];
            }
          }
        }
      }
    }
  });
}

// --- the four kernels that pool2d_ops.h registers ----------------------------------------------------

struct CpuPool2dKernels {
  static void max_forward(const at::Tensor& x, const at::Tensor& y, const at::Tensor& indices,
                          const Pool2dGeometry& g, bool channels_last) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dlunits.max_pool2d", [&] {
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      scalar_t* yp = y.mutable_data_ptr<scalar_t>();
      int64_t* ip = indices.defined() ? indices.mutable_data_ptr<int64_t>() : nullptr;
      if (channels_last) return max_forward_nhwc(xp, yp, ip, g);
      const int64_t in_plane = g.h.in * g.w.in, out_plane = g.h.out * g.w.out;
      const RowTables t = row_tables(g);
      at::parallel_for(0, g.planes(), grain(in_plane), [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
          int64_t* plane_indices = ip ? ip + p * out_plane : nullptr;
          if (g.h.adaptive) {
            max_forward_plane_by_window(xp + p * in_plane, yp + p * out_plane, plane_indices, g, t.rows, t.cols);
          } else {
            max_forward_plane_by_row(xp + p * in_plane, yp + p * out_plane, plane_indices, g, t);
          }
        }
      });
    });
  }

  static void max_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& dx, const Pool2dGeometry& g,
                           bool channels_last) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dlunits.max_pool2d_backward", [&] {
      const scalar_t* dyp = dy.const_data_ptr<scalar_t>();
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
      if (channels_last) return max_backward_nhwc(dyp, xp, dxp, g);
      const int64_t in_plane = g.h.in * g.w.in, out_plane = g.h.out * g.w.out;
      const RowTables t = row_tables(g);
      at::parallel_for(0, g.planes(), grain(in_plane), [&](int64_t p0, int64_t p1) {
        std::vector<scalar_t> value_row(g.w.out);
        std::vector<int64_t> index_row(g.w.out);
        for (int64_t p = p0; p < p1; ++p) {
          scalar_t* dx_plane = dxp + p * in_plane;
          std::fill(dx_plane, dx_plane + in_plane, scalar_t(0));
          if (g.h.adaptive) {
            max_backward_plane_by_window(dyp + p * out_plane, xp + p * in_plane, dx_plane, g, t.rows, t.cols);
          } else {
            max_backward_plane_by_row(dyp + p * out_plane, xp + p * in_plane, dx_plane, g, t, value_row.data(),
                                      index_row.data());
          }
        }
      });
    });
  }

  static void avg_forward(const at::Tensor& x, const at::Tensor& y, const Pool2dGeometry& g,
                          const AvgDivisor& divisor, bool channels_last) {
    const Divisors div = divisors(g, divisor);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dlunits.avg_pool2d", [&] {
      const scalar_t* xp = x.const_data_ptr<scalar_t>();
      scalar_t* yp = y.mutable_data_ptr<scalar_t>();
      if (channels_last) return avg_forward_nhwc(xp, yp, g, div);
      const int64_t in_plane = g.h.in * g.w.in, out_plane = g.h.out * g.w.out;
      const RowTables t = row_tables(g);
      at::parallel_for(0, g.planes(), grain(in_plane), [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
          if (g.h.adaptive) {
            avg_forward_plane_by_window(xp + p * in_plane, yp + p * out_plane, g, t.rows, t.cols, div);
          } else {
            avg_forward_plane_by_row(xp + p * in_plane, yp + p * out_plane, g, t, div);
          }
        }
      });
    });
  }

  static void avg_backward(const at::Tensor& dy, const at::Tensor& dx, const Pool2dGeometry& g,
                           const AvgDivisor& divisor, bool channels_last) {
    const Divisors div = divisors(g, divisor);
    AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "dlunits.avg_pool2d_backward", [&] {
      const scalar_t* dyp = dy.const_data_ptr<scalar_t>();
      scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
      if (channels_last) return avg_backward_nhwc(dyp, dxp, g, div);
      const int64_t in_plane = g.h.in * g.w.in, out_plane = g.h.out * g.w.out;
      const RowTables t = row_tables(g);
      at::parallel_for(0, g.planes(), grain(in_plane), [&](int64_t p0, int64_t p1) {
        std::vector<scalar_t> share_row(g.w.out);
        for (int64_t p = p0; p < p1; ++p) {
          scalar_t* dx_plane = dxp + p * in_plane;
          std::fill(dx_plane, dx_plane + in_plane, scalar_t(0));
          if (g.h.adaptive) {
            avg_backward_plane_by_window(dyp + p * out_plane, dx_plane, g, t.rows, t.cols, div);
          } else {
            avg_backward_plane_by_row(dyp + p * out_plane, dx_plane, g, t, div, share_row.data());
          }
        }
      });
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(dlunits, CPU, m) { register_pool2d_ops<CpuPool2dKernels>(m); }

}  // namespace dlunits
