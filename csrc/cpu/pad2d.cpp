// dlunits — reflect / replicate / circular padding on the CPU (Conv2d's padding_mode).
//
// forward   y[p, oh, ow] = x[p, src_h(oh), src_w(ow)]          (a gather)
// backward  dx[p, ih, iw] = Σ dy[p, oh, ow] over src_h(oh) = ih, src_w(ow) = iw
// The per-axis maps src_h, src_w and their inverses are in pad2d_index.h and
// are computed once per call. The backward is a gather too: every dx element
// is summed by one thread, in a fixed order.
// Cost: no FLOPs to speak of; bytes: x and y once each.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../pad2d_index.h"
#include "../shape_checks.h"

namespace dlunits {
namespace {

std::vector<int64_t> source_map(int64_t padded, int64_t before, int64_t size, PadMode mode) {
  std::vector<int64_t> map(padded);
  for (int64_t p = 0; p < padded; ++p) map[p] = pad_source_index(p, before, size, mode);
  return map;
}

std::vector<PadReaderRanges> reader_map(int64_t size, int64_t before, int64_t after, PadMode mode) {
  std::vector<PadReaderRanges> map(size);
  for (int64_t i = 0; i < size; ++i) map[i] = pad_reader_ranges(i, before, after, size, mode);
  return map;
}

template <typename scalar_t>
void pad2d_forward_kernel(const scalar_t* x, scalar_t* y, const Pad2dGeometry& g) {
  const auto rows = source_map(g.out_h, g.pad_top, g.in_h, g.mode);
  const auto cols = source_map(g.out_w, g.pad_left, g.in_w, g.mode);
  at::parallel_for(0, g.planes * g.out_h, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t plane = r / g.out_h, oh = r % g.out_h;
      const scalar_t* in = x + (plane * g.in_h + rows[oh]) * g.in_w;
      scalar_t* out = y + r * g.out_w;
      for (int64_t ow = 0; ow < g.out_w; ++ow) out[ow] = in[cols[ow]];
    }
  });
}

template <typename scalar_t>
void pad2d_backward_kernel(const scalar_t* dy, scalar_t* dx, const Pad2dGeometry& g) {
  const auto rows = reader_map(g.in_h, g.pad_top, g.pad_bottom, g.mode);
  const auto cols = reader_map(g.in_w, g.pad_left, g.pad_right, g.mode);
  at::parallel_for(0, g.planes * g.in_h, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t plane = r / g.in_h, ih = r % g.in_h;
      const scalar_t* in = dy + plane * g.out_h * g.out_w;
      scalar_t* out = dx + r * g.in_w;
      const PadReaderRanges& rh = rows[ih];
      for (int64_t iw = 0; iw < g.in_w; ++iw) {
        const PadReaderRanges& rw = cols[iw];
        scalar_t sum = 0;
        for (int a = 0; a < rh.count; ++a)
          for (int64_t oh = rh.begin[a]; oh < rh.end[a]; ++oh)
            for (int b = 0; b < rw.count; ++b)
              for (int64_t ow = rw.begin[b]; ow < rw.end[b]; ++ow) sum += in[oh * g.out_w + ow];
        out[iw] = sum;
      }
    }
  });
}

at::Tensor pad2d_cpu(const at::Tensor& input, at::IntArrayRef padding, c10::string_view mode) {
  const Pad2dGeometry g = check_pad2d(input, padding, mode);
  const at::Tensor x = input.contiguous();
  at::Tensor y = at::empty(pad2d_output_sizes(x.sizes(), g), x.options());
  if (y.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dlunits_pad2d_cpu", [&] {
      pad2d_forward_kernel<scalar_t>(x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), g);
    });
  }
  return y.contiguous(pad2d_memory_format(input, mode));
}

at::Tensor pad2d_backward_cpu(const at::Tensor& grad_output, at::IntArrayRef padding, c10::string_view mode) {
  const Pad2dGeometry g = check_pad2d_backward(grad_output, padding, mode);
  const at::Tensor dy = grad_output.contiguous();
  at::Tensor dx = at::empty(pad2d_input_sizes(dy, g), dy.options());
  if (dx.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(dy.scalar_type(), "dlunits_pad2d_backward_cpu", [&] {
      pad2d_backward_kernel<scalar_t>(dy.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), g);
    });
  }
  return dx.contiguous(pad2d_memory_format(grad_output, mode));
}

}  // namespace
}  // namespace dlunits

TORCH_LIBRARY_IMPL(dlunits, CPU, m) {
  m.impl("pad2d", &dlunits::pad2d_cpu);
  m.impl("pad2d_backward", &dlunits::pad2d_backward_cpu);
}
