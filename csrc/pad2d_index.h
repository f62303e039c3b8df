// dlunits — index maps of reflect / replicate / circular padding, for one axis.
//
// Shared by the CPU and CUDA pad2d kernels. An axis of `size` input elements is
// padded with `before` elements in front and `after` behind; padded position p
// reads input element pad_source_index(p). 2-D padding is this map applied to
// each axis independently.
//
//   reflect   (before, after < size):  ... 2 1 | 0 1 2 ... n-1 | n-2 n-3 ...
//   replicate (any before, after):     ... 0 0 | 0 1 2 ... n-1 | n-1 n-1 ...
//   circular  (before, after <= size): ... n-2 n-1 | 0 1 ... n-1 | 0 1 ...
//
// The backward pass gathers: input element i sums the gradient of every padded
// position that reads it. pad_reader_ranges lists those positions as at most
// three half-open ranges, so each gradient element is written by one thread.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

#include "shape_checks.h"

namespace dlunits {

C10_HOST_DEVICE inline int64_t pad_source_index(int64_t p, int64_t before, int64_t size, PadMode mode) {
  int64_t q = p - before;  // position relative to the first input element
  switch (mode) {
    case PadMode::Reflect:
      if (q < 0) q = -q;
      if (q >= size) q = 2 * (size - 1) - q;
      return q;
    case PadMode::Replicate:
      return q < 0 ? 0 : (q >= size ? size - 1 : q);
    case PadMode::Circular:
    default:
      return ((q % size) + size) % size;
  }
}

struct PadReaderRanges {
  int count;
  int64_t begin[3];
  int64_t end[3];
};

// The padded positions p in [0, before + size + after) with pad_source_index(p) == i.
C10_HOST_DEVICE inline PadReaderRanges pad_reader_ranges(int64_t i, int64_t before, int64_t after, int64_t size,
                                                         PadMode mode) {
  PadReaderRanges r;
  r.count = 0;
  const int64_t padded = before + size + after;
  auto add = [&r](int64_t b, int64_t e) {
    r.begin[r.count] = b;
    r.end[r.count] = e;
    ++r.count;
  };
  switch (mode) {
    case PadMode::Reflect:
      add(before + i, before + i + 1);                          // itself
      if (i >= 1 && i <= before) add(before - i, before - i + 1);  // mirrored in front
      if (i <= size - 2 && i >= size - 1 - after) {              // mirrored behind
        const int64_t p = before + 2 * (size - 1) - i;
        add(p, p + 1);
      }
      break;
    case PadMode::Replicate:
      if (size == 1) {
        add(0, padded);
      } else if (i == 0) {
        add(0, before + 1);
      } else if (i == size - 1) {
        add(before + size - 1, padded);
      } else {
        add(before + i, before + i + 1);
      }
      break;
    case PadMode::Circular:
    default:
      add(before + i, before + i + 1);                       // itself
      if (i >= size - before) add(before + i - size, before + i - size + 1);  // wrapped to the front
      if (i < after) add(before + i + size, before + i + size + 1);           // wrapped to the back
      break;
  }
  return r;
}

}  // namespace dlunits
