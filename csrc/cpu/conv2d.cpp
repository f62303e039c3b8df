// dlunits — 2-D convolution on the CPU: im2col + GEMM.
//
// For each sample n and group g, with K = C/groups·KH·KW and L = OH·OW
// (the columns go in blocks of output rows, ~512 KiB each, so that im2col's
// output is still in cache when the GEMM reads it):
//   forward          col = im2col(x[n, g])          [K, L]
//                    y[n, g] = W[g] · col + b        [OC/groups, L]
//   backward input   col = W[g]ᵀ · dy[n, g]          [K, L]
//                    dx[n, g] = col2im(col)          (the adjoint of im2col)
//   backward weight  dW[g] += dy[n, g] · colᵀ        [OC/groups, K]
//   backward bias    db[o] = Σ_{n, l} dy[n, o, l]
// A 1×1 kernel with stride 1 and no padding skips im2col: col is x[n, g] itself.
// One input channel per group (depthwise) skips the GEMM: a direct loop per plane.
//
// Matrix products go through at::mm_out / at::addmm_ (BLAS), which the project
// allows for im2col schemes; im2col, col2im, the bias and the reductions are ours.
//
// Threads: with at least one sample per thread, at::parallel_for splits the
// batch and every chunk owns its column buffer (and, for dW, its accumulator,
// summed afterwards in chunk order, so results do not depend on scheduling).
// With fewer samples than threads, samples run in turn, im2col / col2im split
// over channels (each channel's plane belongs to one thread) and BLAS threads
// the product.
//
// Cost: forward 2·N·OC·L·K FLOPs, each of backward input and weight the same.
// Minimum bytes: x, W and y once each (and b). The column buffer costs K·L per
// thread and, for K·L ≫ C·H·W, that extra traffic is what a direct kernel avoids.
//
// Layout: kernels compute on contiguous NCHW; a channels_last input is made
// contiguous first and the result is given back in torch's memory format.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../shape_checks.h"

namespace dlunits {
namespace {

// Output columns ow whose input column ow·stride + offset lies in [0, size):
// the half-open range [lo, hi), clamped to [0, out_size).
struct ValidRange {
  int64_t lo, hi;
};

inline ValidRange valid_output_range(int64_t offset, int64_t stride, int64_t size, int64_t out_size) {
  // ow·stride + offset >= 0      <=>  ow >= ceil(-offset / stride)
  // ow·stride + offset <= size-1 <=>  ow <= floor((size - 1 - offset) / stride)
  const int64_t lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  const int64_t last = size - 1 - offset;
  const int64_t hi = last < 0 ? 0 : last / stride + 1;
  const int64_t lo_c = std::min(lo, out_size);
  return {lo_c, std::max(lo_c, std::min(hi, out_size))};
}

// One kernel tap (kh, kw): its index kh·KW + kw, the offsets that take output
// (oh, ow) to input (oh·sh + h_offset, ow·sw + w_offset), and the output rows and
// columns for which that input lies inside the image.
struct Tap {
  int64_t index, h_offset, w_offset;
  ValidRange rows, cols;
};

template <typename F>
void for_each_tap(const Conv2dGeometry& g, F f) {
  for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
    const int64_t h_offset = kh * g.dilation_h - g.pad_top;
    const ValidRange rows = valid_output_range(h_offset, g.stride_h, g.in_h, g.out_h);
    for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
      const int64_t w_offset = kw * g.dilation_w - g.pad_left;
      f(Tap{kh * g.kernel_w + kw, h_offset, w_offset, rows,
            valid_output_range(w_offset, g.stride_w, g.in_w, g.out_w)});
    }
  }
}

// The valid output rows of ValidRange `rows` that fall in the block [begin, end).
inline ValidRange clip(ValidRange rows, int64_t begin, int64_t end) {
  const int64_t lo = std::min(std::max(rows.lo, begin), end);
  return {lo, std::max(lo, std::min(rows.hi, end))};
}

// Output rows go through im2col and the GEMM in blocks of rows_per_block, so that
// a block's columns (K × rows·OW, about 512 KiB) are still in cache when the GEMM
// reads them back; but never fewer than 256 columns, below which the GEMM itself
// runs slowly.
template <typename scalar_t>
int64_t rows_per_block(const Conv2dGeometry& g) {
  constexpr int64_t kBlockBytes = 512 * 1024, kMinColumns = 256;
  const int64_t row_bytes = std::max<int64_t>(1, g.patch_size() * g.out_w * int64_t(sizeof(scalar_t)));
  const int64_t rows = std::max(kBlockBytes / row_bytes, (kMinColumns + g.out_w - 1) / g.out_w);
  return std::max<int64_t>(1, std::min(g.out_h, rows));
}

// col[c·KH·KW + tap, (oh - oh_begin)·OW + ow] = x[c, oh·sh - pt + kh·dh, ow·sw - pl + kw·dw],
// 0 outside, for the output rows [oh_begin, oh_end) and the channels [c_begin, c_end) of one
// group's input x [C/groups, H, W].
template <typename scalar_t>
void im2col(const scalar_t* x, const Conv2dGeometry& g, scalar_t* col, int64_t c_begin, int64_t c_end,
            int64_t oh_begin, int64_t oh_end) {
  const int64_t OW = g.out_w, width = (oh_end - oh_begin) * OW, taps = g.kernel_h * g.kernel_w;
  for (int64_t c = c_begin; c < c_end; ++c) {
    const scalar_t* plane = x + c * g.in_h * g.in_w;
    for_each_tap(g, [&](const Tap& t) {
      const ValidRange rows = clip(t.rows, oh_begin, oh_end);
      scalar_t* out = col + (c * taps + t.index) * width;
      std::fill(out, out + (rows.lo - oh_begin) * OW, scalar_t(0));
      for (int64_t oh = rows.lo; oh < rows.hi; ++oh) {
        const scalar_t* in = plane + (oh * g.stride_h + t.h_offset) * g.in_w + t.w_offset;
        scalar_t* out_row = out + (oh - oh_begin) * OW;
        std::fill(out_row, out_row + t.cols.lo, scalar_t(0));
        if (g.stride_w == 1) {
          std::copy(in + t.cols.lo, in + t.cols.hi, out_row + t.cols.lo);
        } else {
          for (int64_t ow = t.cols.lo; ow < t.cols.hi; ++ow) out_row[ow] = in[ow * g.stride_w];
        }
        std::fill(out_row + t.cols.hi, out_row + OW, scalar_t(0));
      }
      std::fill(out + (rows.hi - oh_begin) * OW, out + width, scalar_t(0));
    });
  }
}

// The adjoint of im2col: dx[c, ih, iw] += col[...] for every (tap, oh, ow) that
// read (ih, iw), for the output rows [oh_begin, oh_end) and the channels
// [c_begin, c_end). Accumulates: dx starts zeroed.
template <typename scalar_t>
void col2im(const scalar_t* col, const Conv2dGeometry& g, scalar_t* dx, int64_t c_begin, int64_t c_end,
            int64_t oh_begin, int64_t oh_end) {
  const int64_t OW = g.out_w, width = (oh_end - oh_begin) * OW, taps = g.kernel_h * g.kernel_w;
  for (int64_t c = c_begin; c < c_end; ++c) {
    scalar_t* plane = dx + c * g.in_h * g.in_w;
    for_each_tap(g, [&](const Tap& t) {
      const ValidRange rows = clip(t.rows, oh_begin, oh_end);
      const scalar_t* in = col + (c * taps + t.index) * width;
      for (int64_t oh = rows.lo; oh < rows.hi; ++oh) {
        scalar_t* out = plane + (oh * g.stride_h + t.h_offset) * g.in_w + t.w_offset;
        const scalar_t* in_row = in + (oh - oh_begin) * OW;
        if (g.stride_w == 1) {
          for (int64_t ow = t.cols.lo; ow < t.cols.hi; ++ow) out[ow] += in_row[ow];
        } else {
          for (int64_t ow = t.cols.lo; ow < t.cols.hi; ++ow) out[ow * g.stride_w] += in_row[ow];
        }
      }
    });
  }
}

// Runs body(n, col, within_sample) for every sample, with a column buffer of
// col_numel elements of its own per chunk of samples. within_sample says whether
// the body may itself split work over threads (true when samples run one at a time).
template <typename Body>
void for_each_sample(const Conv2dGeometry& g, const at::TensorOptions& options, int64_t col_numel, Body body) {
  if (g.batch >= at::get_num_threads()) {
    at::parallel_for(0, g.batch, 1, [&](int64_t begin, int64_t end) {
      at::Tensor col = at::empty({col_numel}, options);
      for (int64_t n = begin; n < end; ++n) body(n, col, /*within_sample=*/false);
    });
  } else {
    at::Tensor col = at::empty({col_numel}, options);
    for (int64_t n = 0; n < g.batch; ++n) body(n, col, /*within_sample=*/true);
  }
}

// Calls f(c_begin, c_end) over one group's channels, split over threads or not.
template <typename F>
void over_channels(const Conv2dGeometry& g, bool parallel, F f) {
  if (parallel) {
    at::parallel_for(0, g.in_channels_per_group(), 1, f);
  } else {
    f(0, g.in_channels_per_group());
  }
}

// Calls f(oh_begin, oh_end, col) for each block of output rows, with col a [K, rows·OW]
// view of col_buffer.
template <typename F>
void over_row_blocks(const Conv2dGeometry& g, int64_t block_rows, at::Tensor& col_buffer, F f) {
  const int64_t K = g.patch_size();
  for (int64_t oh0 = 0; oh0 < g.out_h; oh0 += block_rows) {
    const int64_t oh1 = std::min(g.out_h, oh0 + block_rows);
    at::Tensor col = col_buffer.narrow(0, 0, K * (oh1 - oh0) * g.out_w).view({K, (oh1 - oh0) * g.out_w});
    f(oh0, oh1, col);
  }
}

// ---------------------------------------------------------------------------
// Direct path for one input channel per group (depthwise convolution, with or
// without a channel multiplier, and any convolution of a 1-channel input): a
// GEMM of depth KH·KW is all overhead there, so each plane is computed directly,
// one kernel tap at a time over whole rows (contiguous, vectorisable for stride 1).
// Each thread owns whole output planes (forward, dx) or whole filters (dW).
// ---------------------------------------------------------------------------

template <typename scalar_t>
void single_channel_forward(const scalar_t* x, const scalar_t* w, const scalar_t* b, scalar_t* y,
                            const Conv2dGeometry& g) {
  const int64_t multiplier = g.out_channels_per_group(), taps = g.kernel_h * g.kernel_w;
  const int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
  at::parallel_for(0, g.batch * g.out_channels, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p / g.out_channels, o = p % g.out_channels, c = o / multiplier;
      const scalar_t* in = x + (n * g.in_channels + c) * in_plane;
      scalar_t* out = y + p * out_plane;
      std::fill(out, out + out_plane, b != nullptr ? b[o] : scalar_t(0));
      for_each_tap(g, [&](const Tap& t) {
        const scalar_t tap = w[o * taps + t.index];
        for (int64_t oh = t.rows.lo; oh < t.rows.hi; ++oh) {
          const scalar_t* in_row = in + (oh * g.stride_h + t.h_offset) * g.in_w + t.w_offset;
          scalar_t* out_row = out + oh * g.out_w;
          if (g.stride_w == 1) {
            for (int64_t ow = t.cols.lo; ow < t.cols.hi; ++ow) out_row[ow] += tap * in_row[ow];
          } else {
            for (int64_t ow = t.cols.lo; ow < t.cols.hi; ++ow) out_row[ow] += tap * in_row[ow * g.stride_w];
          }
        }
      });
    }
  });
}

template <typename scalar_t>
void single_channel_backward_input(const scalar_t* dy, const scalar_t* w, scalar_t* dx, const Conv2dGeometry& g) {
  const int64_t multiplier = g.out_channels_per_group(), taps = g.kernel_h * g.kernel_w;
  const int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
  at::parallel_for(0, g.batch * g.in_channels, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n = p / g.in_channels, c = p % g.in_channels;
      scalar_t* out = dx + p * in_plane;
      std::fill(out, out + in_plane, scalar_t(0));
      for (int64_t o = c * multiplier; o < (c + 1) * multiplier; ++o) {
        const scalar_t* grad = dy + (n * g.out_channels + o) * out_plane;
        for_each_tap(g, [&](const Tap& t) {
          const scalar_t tap = w[o * taps + t.index];
          for (int64_t oh = t.rows.lo; oh < t.rows.hi; ++oh) {
            scalar_t* out_row = out + (oh * g.stride_h + t.h_offset) * g.in_w + t.w_offset;
            const scalar_t* grad_row = grad + oh * g.out_w;
            if (g.stride_w == 1) {
              for (int64_t ow = t.cols.lo; ow < t.cols.hi; ++ow) out_row[ow] += tap * grad_row[ow];
            } else {
              for (int64_t ow = t.cols.lo; ow < t.cols.hi; ++ow) out_row[ow * g.stride_w] += tap * grad_row[ow];
            }
          }
        });
      }
    }
  });
}

template <typename scalar_t>
void single_channel_backward_weight(const scalar_t* dy, const scalar_t* x, scalar_t* dw, const Conv2dGeometry& g) {
  const int64_t multiplier = g.out_channels_per_group(), taps = g.kernel_h * g.kernel_w;
  const int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
  at::parallel_for(0, g.out_channels, 1, [&](int64_t o0, int64_t o1) {
    std::vector<scalar_t> lanes(g.out_w);
    for (int64_t o = o0; o < o1; ++o) {
      const int64_t c = o / multiplier;
      for_each_tap(g, [&](const Tap& t) {
        // Products accumulate lane-wise in lanes[ow] (vectorisable: no reduction in
        // the inner loop), summed once at the end.
        std::fill(lanes.begin(), lanes.end(), scalar_t(0));
        for (int64_t n = 0; n < g.batch; ++n) {
          const scalar_t* in = x + (n * g.in_channels + c) * in_plane;
          const scalar_t* grad = dy + (n * g.out_channels + o) * out_plane;
          for (int64_t oh = t.rows.lo; oh < t.rows.hi; ++oh) {
            const scalar_t* in_row = in + (oh * g.stride_h + t.h_offset) * g.in_w + t.w_offset;
            const scalar_t* grad_row = grad + oh * g.out_w;
            if (g.stride_w == 1) {
              for (int64_t ow = t.cols.lo; ow < t.cols.hi; ++ow) lanes[ow] += grad_row[ow] * in_row[ow];
            } else {
              for (int64_t ow = t.cols.lo; ow < t.cols.hi; ++ow) lanes[ow] += grad_row[ow] * in_row[ow * g.stride_w];
            }
          }
        }
        double sum = 0;
        for (int64_t ow = t.cols.lo; ow < t.cols.hi; ++ow) sum += lanes[ow];
        dw[o * taps + t.index] = static_cast<scalar_t>(sum);
      });
    }
  });
}

template <typename scalar_t>
void conv2d_forward_kernel(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                           at::Tensor& y, const Conv2dGeometry& g) {
  const int64_t Cg = g.in_channels_per_group(), OCg = g.out_channels_per_group();
  const int64_t K = g.patch_size(), L = g.out_h * g.out_w;
  const scalar_t* b = bias.defined() ? bias.data_ptr<scalar_t>() : nullptr;
  if (Cg == 1) {
    single_channel_forward(x.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), b, y.data_ptr<scalar_t>(), g);
    return;
  }
  const at::Tensor w = weight.view({g.groups, OCg, K});
  const int64_t block_rows = rows_per_block<scalar_t>(g);
  const int64_t col_numel = g.is_pointwise() ? 0 : K * block_rows * g.out_w;
  for_each_sample(g, x.options(), col_numel, [&](int64_t n, at::Tensor& col_buffer, bool within_sample) {
    for (int64_t group = 0; group < g.groups; ++group) {
      const at::Tensor x_g = x[n].narrow(0, group * Cg, Cg);
      at::Tensor y_g = y[n].narrow(0, group * OCg, OCg).view({OCg, L});
      if (g.is_pointwise()) {
        at::mm_out(y_g, w[group], x_g.view({Cg, L}));
        continue;
      }
      const scalar_t* x_ptr = x_g.data_ptr<scalar_t>();
      over_row_blocks(g, block_rows, col_buffer, [&](int64_t oh0, int64_t oh1, at::Tensor& col) {
        scalar_t* col_ptr = col.data_ptr<scalar_t>();
        over_channels(g, within_sample, [&](int64_t c0, int64_t c1) { im2col(x_ptr, g, col_ptr, c0, c1, oh0, oh1); });
        at::Tensor y_block = y_g.narrow(1, oh0 * g.out_w, col.size(1));
        at::mm_out(y_block, w[group], col);
      });
    }
    if (b != nullptr) {
      scalar_t* y_n = y[n].data_ptr<scalar_t>();
      for (int64_t o = 0; o < g.out_channels; ++o) {
        scalar_t* row = y_n + o * L;
        for (int64_t l = 0; l < L; ++l) row[l] += b[o];
      }
    }
  });
}

template <typename scalar_t>
void conv2d_backward_input_kernel(const at::Tensor& dy, const at::Tensor& weight, at::Tensor& dx,
                                  const Conv2dGeometry& g) {
  const int64_t Cg = g.in_channels_per_group(), OCg = g.out_channels_per_group();
  const int64_t K = g.patch_size(), L = g.out_h * g.out_w;
  if (Cg == 1) {
    single_channel_backward_input(dy.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), g);
    return;
  }
  const at::Tensor w = weight.view({g.groups, OCg, K});
  const int64_t block_rows = rows_per_block<scalar_t>(g);
  const int64_t col_numel = g.is_pointwise() ? 0 : K * block_rows * g.out_w;
  for_each_sample(g, dy.options(), col_numel, [&](int64_t n, at::Tensor& col_buffer, bool within_sample) {
    for (int64_t group = 0; group < g.groups; ++group) {
      const at::Tensor dy_g = dy[n].narrow(0, group * OCg, OCg).view({OCg, L});
      at::Tensor dx_g = dx[n].narrow(0, group * Cg, Cg);
      if (g.is_pointwise()) {
        at::Tensor dx_flat = dx_g.view({Cg, L});
        at::mm_out(dx_flat, w[group].t(), dy_g);
        continue;
      }
      scalar_t* dx_ptr = dx_g.data_ptr<scalar_t>();  // zeroed by the caller; blocks accumulate
      over_row_blocks(g, block_rows, col_buffer, [&](int64_t oh0, int64_t oh1, at::Tensor& col) {
        at::mm_out(col, w[group].t(), dy_g.narrow(1, oh0 * g.out_w, col.size(1)));
        const scalar_t* col_ptr = col.data_ptr<scalar_t>();
        over_channels(g, within_sample, [&](int64_t c0, int64_t c1) { col2im(col_ptr, g, dx_ptr, c0, c1, oh0, oh1); });
      });
    }
  });
}

template <typename scalar_t>
void conv2d_backward_weight_kernel(const at::Tensor& dy, const at::Tensor& x, at::Tensor& dw,
                                   const Conv2dGeometry& g) {
  const int64_t Cg = g.in_channels_per_group(), OCg = g.out_channels_per_group();
  const int64_t K = g.patch_size(), L = g.out_h * g.out_w;
  const int64_t block_rows = rows_per_block<scalar_t>(g);
  const int64_t col_numel = g.is_pointwise() ? 0 : K * block_rows * g.out_w;
  if (Cg == 1) {
    single_channel_backward_weight(dy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), dw.data_ptr<scalar_t>(), g);
    return;
  }

  // dW accumulated over the samples [begin, end) into acc [groups, OC/groups, K].
  auto accumulate = [&](int64_t begin, int64_t end, at::Tensor& acc, at::Tensor& col_buffer, bool within_sample) {
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t group = 0; group < g.groups; ++group) {
        const at::Tensor x_g = x[n].narrow(0, group * Cg, Cg);
        const at::Tensor dy_g = dy[n].narrow(0, group * OCg, OCg).view({OCg, L});
        at::Tensor acc_g = acc[group];
        if (g.is_pointwise()) {
          acc_g.addmm_(dy_g, x_g.view({Cg, L}).t());
          continue;
        }
        const scalar_t* x_ptr = x_g.data_ptr<scalar_t>();
        over_row_blocks(g, block_rows, col_buffer, [&](int64_t oh0, int64_t oh1, at::Tensor& col) {
          scalar_t* col_ptr = col.data_ptr<scalar_t>();
          over_channels(g, within_sample, [&](int64_t c0, int64_t c1) { im2col(x_ptr, g, col_ptr, c0, c1, oh0, oh1); });
          acc_g.addmm_(dy_g.narrow(1, oh0 * g.out_w, col.size(1)), col.t());
        });
      }
    }
  };

  at::Tensor dw_groups = dw.view({g.groups, OCg, K});
  dw_groups.zero_();
  const int64_t chunks = std::min<int64_t>(g.batch, at::get_num_threads());
  if (chunks <= 1 || g.batch < at::get_num_threads()) {
    at::Tensor col = at::empty({col_numel}, x.options());
    accumulate(0, g.batch, dw_groups, col, /*within_sample=*/true);
    return;
  }
  // One accumulator per chunk of samples, summed in chunk order.
  at::Tensor partial = at::zeros({chunks, g.groups, OCg, K}, x.options());
  const int64_t per_chunk = (g.batch + chunks - 1) / chunks;
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    at::Tensor col = at::empty({col_numel}, x.options());
    for (int64_t chunk = c0; chunk < c1; ++chunk) {
      at::Tensor acc = partial[chunk];
      accumulate(chunk * per_chunk, std::min(g.batch, (chunk + 1) * per_chunk), acc, col, false);
    }
  });
  const scalar_t* p = partial.data_ptr<scalar_t>();
  scalar_t* out = dw_groups.data_ptr<scalar_t>();
  const int64_t numel = dw_groups.numel();
  at::parallel_for(0, numel, 4096, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      scalar_t sum = p[i];
      for (int64_t chunk = 1; chunk < chunks; ++chunk) sum += p[chunk * numel + i];
      out[i] = sum;
    }
  });
}

// db[o] = Σ_{n, l} dy[n, o, l], accumulated in double; each thread owns whole channels.
template <typename scalar_t>
void conv2d_backward_bias_kernel(const at::Tensor& dy, at::Tensor& db) {
  const int64_t N = dy.size(0), C = dy.size(1), L = dy.size(2) * dy.size(3);
  const scalar_t* in = dy.data_ptr<scalar_t>();
  scalar_t* out = db.data_ptr<scalar_t>();
  constexpr int64_t kLanes = 64;  // lane-wise partial sums: the inner loop vectorises
  at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double lanes[kLanes] = {};
      for (int64_t n = 0; n < N; ++n) {
        const scalar_t* row = in + (n * C + c) * L;
        int64_t l = 0;
        for (; l + kLanes <= L; l += kLanes)
          for (int64_t j = 0; j < kLanes; ++j) lanes[j] += row[l + j];
        for (; l < L; ++l) lanes[l % kLanes] += row[l];
      }
      double sum = 0;
      for (double lane : lanes) sum += lane;
      out[c] = static_cast<scalar_t>(sum);
    }
  });
}

at::Tensor conv2d_cpu(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const Conv2dGeometry g = check_conv2d(input, weight, bias, stride, padding, dilation, groups);
  // Detached: the at::mm_out calls below (some on worker threads) must record no graph.
  const at::Tensor x = input.detach().contiguous();
  const at::Tensor w = weight.detach().contiguous();
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->detach().contiguous() : at::Tensor();
  at::Tensor y = at::empty(g.output_sizes(), x.options());
  if (y.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dlunits_conv2d_cpu",
                               [&] { conv2d_forward_kernel<scalar_t>(x, w, b, y, g); });
  }
  return y.contiguous(conv2d_output_memory_format(input, weight));
}

at::Tensor conv2d_backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                     c10::SymIntArrayRef input_size, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const Conv2dGeometry g =
      check_conv2d_backward_input(grad_output, weight, input_size, stride, padding, dilation, groups);
  const at::Tensor dy = grad_output.detach().contiguous();
  at::Tensor dx = at::zeros(g.input_sizes(), dy.options());
  if (dx.numel() > 0 && dy.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "dlunits_conv2d_backward_input_cpu", [&] {
      conv2d_backward_input_kernel<scalar_t>(dy, weight.detach().contiguous(), dx, g);
    });
  }
  return dx.contiguous(grad_output.suggest_memory_format());
}

at::Tensor conv2d_backward_weight_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                      c10::SymIntArrayRef weight_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const Conv2dGeometry g =
      check_conv2d_backward_weight(grad_output, input, weight_size, stride, padding, dilation, groups);
  at::Tensor dw = at::zeros(g.weight_sizes(), grad_output.options());
  if (dw.numel() > 0 && grad_output.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "dlunits_conv2d_backward_weight_cpu", [&] {
      conv2d_backward_weight_kernel<scalar_t>(grad_output.detach().contiguous(), input.detach().contiguous(), dw,
                                              g);
    });
  }
  return dw;
}

at::Tensor conv2d_backward_bias_cpu(const at::Tensor& grad_output) {
  check_conv2d_backward_bias(grad_output);
  const at::Tensor dy = grad_output.contiguous();
  at::Tensor db = at::zeros({dy.size(1)}, dy.options());
  if (dy.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "dlunits_conv2d_backward_bias_cpu",
                               [&] { conv2d_backward_bias_kernel<scalar_t>(dy, db); });
  }
  return db;
}

}  // namespace
}  // namespace dlunits

TORCH_LIBRARY_IMPL(dlunits, CPU, m) {
  m.impl("conv2d", &dlunits::conv2d_cpu);
  m.impl("conv2d_backward_input", &dlunits::conv2d_backward_input_cpu);
  m.impl("conv2d_backward_weight", &dlunits::conv2d_backward_weight_cpu);
  m.impl("conv2d_backward_bias", &dlunits::conv2d_backward_bias_cpu);
}
