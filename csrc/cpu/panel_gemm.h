// dlunits — a small register-tiled matrix product for the CPU's recurrent steps.
//
//   C[m, n] (+)= Σ_k A[m, k] · B[k, n]
//
// A recurrent step multiplies a thin matrix (the batch's states, B ≈ 16 rows) by the
// same weight matrix at every step. BLAS treats each step as a new problem: it
// repacks the weights on every call (and MKL runs its generic kernel on AMD
// processors); at B = 16, H = 256 about a fifth of a step's product went to copying
// W_hh. Here the weights are packed once per sequence and each step is only the
// tiled product below.
//
// Layout. B is read as panels of L columns, one vector register (vector_math.h's
// kVectorBytes: 16 floats or 8 doubles with AVX-512, 8 or 4 otherwise): element (k, n)
// of B is at panel(n / L)[k · row_stride + n % L]. A packed panel has row_stride L and is
// zero-padded to L columns: pack_transposed packs Wᵀ for A · Wᵀ, pack_columns packs W for
// A · W. A is read by scalar broadcasts through
// (row, column) strides, so A can be a weight read in place, or a transpose, at no cost.
//
// Micro-kernel. A tile is MR rows by NP ≤ 3 panels: MR·NP vector accumulators, and per k NP
// panel loads and MR broadcasts of A, each feeding NP FMAs. MR ≤ 4 with AVX2's 16 registers
// (12 accumulators, 12 FMAs for 7 loads), MR ≤ 8 with AVX-512's 32 (24 accumulators, 24 FMAs
// for 11 loads; a single panel takes 16 rows, see max_rows). Twelve or more independent
// accumulators cover the FMA latency (4 cycles, 2 pipes: 8 are needed). Rows are split into
// balanced tiles (8 rows: 4 + 4 with AVX2, one tile with AVX-512), panels into threes, the
// last group of one or two. The panel rows are pinned in registers (keep_in_register):
// without that GCC folds them into the FMAs as memory operands, 20 loads per 12 FMAs, and
// the kernel ran at half speed. K is walked in chunks of kChunk so that the panels' chunk
// and the A rows' chunk stay in L1 across the row tiles.
//
// Measured on one Zen 3 core (AVX2, FMA peak ~93 GFLOP/s; a recurrent step's 8 rows against a
// packed W_hh of 1024 columns, K = 256): 84 GFLOP/s, against 66 for the earlier 6 + 2 rows by
// two panels (its 2-row tile, 4 accumulators, was latency-bound) and 55 for MKL's sgemm. Two
// threads on the two cores: 69 each, against 64. On a Sapphire Rapids core (AVX-512, 16 lanes):
// 117-148 GFLOP/s on the same step, the core's FMA roofline, 1.7-2.0x the AVX2 build of this
// file on the same core and 1.5-1.8x MKL's per-call sgemm (benchmarks/panel_gemm_widths.py;
// benchmarks/results/vm-cpu-recurrent-20261206/NOTES.md).
//
// Cost: 2·M·N·K FLOPs. Bytes: B once per call when the tile loop keeps it in cache
// (a panel group's chunk is reused by every row tile), A once per group from L1/L2, C
// once (twice per extra K chunk). With W's rows read in place as the panels (stride H,
// half a cache line each) a sequence's step was faster on MKL. A cell's backward reads
// W_hh so all the same (dh = dZ·W_hh split over two threads, where MKL's sgemm gains
// little from the second: csrc/cpu/recurrent.cpp), and its weight gradients (K thin,
// the batch) go through thin_depth_gemm below.
//
// Needs GCC's (12 or later) or Clang's vector extensions and __builtin_shufflevector.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "vector_math.h"

namespace dlunits {
namespace cpu {

// A[m, k] = data[m · row_stride + k · col_stride].
template <typename T>
struct MatrixA {
  const T* data;
  int64_t row_stride, col_stride;
};

// B[k, n] = data[(n / L) · panel_stride + k · row_stride + n % L], k < depth, n < cols.
template <typename T>
struct Panels {
  const T* data;
  int64_t panel_stride, row_stride, depth, cols;
  static constexpr int lanes = Simd<T>::lanes;
  int64_t count() const { return (cols + lanes - 1) / lanes; }
  const T* panel(int64_t p) const { return data + p * panel_stride; }
  int64_t width(int64_t p) const { return std::min<int64_t>(lanes, cols - p * lanes); }
};

namespace detail {

// An L x L transpose in registers, one level per bit of the row index: at level s, rows r and r + s
// (bit s of r clear) trade the halves of their lanes whose bit s differs from the row's, so that bit s
// of the row index and bit s of the lane index change places. Lane l of row r becomes
// (l & s) ? (r + s)[l - s] : r[l], and of row r + s, (l & s) ? (r + s)[l] : r[l + s] (lanes ≥ L name
// the second operand of __builtin_shufflevector). log2 L levels of L shuffles each.
constexpr int transpose_lane(int l, int s, int lanes, bool second_row) {
  return second_row ? ((l & s) ? lanes + l : l + s) : ((l & s) ? lanes + l - s : l);
}

template <typename T, int s, size_t... l>
__attribute__((always_inline)) inline void transpose_pair(typename Simd<T>::vec& a, typename Simd<T>::vec& b,
                                                          std::index_sequence<l...>) {
  constexpr int L = Simd<T>::lanes;
  const typename Simd<T>::vec first = __builtin_shufflevector(a, b, transpose_lane(l, s, L, false)...);
  b = __builtin_shufflevector(a, b, transpose_lane(l, s, L, true)...);
  a = first;
}

// v[m][l] ← v[l][m] for the L vectors v[0 … L-1].
template <typename T, int s = 1>
__attribute__((always_inline)) inline void transpose(typename Simd<T>::vec* v) {
  constexpr int L = Simd<T>::lanes;
  if constexpr (s < L) {
    for (int r = 0; r < L; ++r) {
      if ((r & s) == 0) transpose_pair<T, s>(v[r], v[r + s], std::make_index_sequence<L>{});
    }
    transpose<T, 2 * s>(v);
  }
}

}  // namespace detail

// The transpose needs the vectors in registers: AVX or AVX-512. A portable build (DLUNITS_PORTABLE=1,
// SSE2) emulates 32-byte vectors, and there the element-by-element copy was 3x faster.
#if defined(__AVX__)
constexpr bool kTransposeInRegisters = true;
#else
constexpr bool kTransposeInRegisters = false;
#endif

// B [k, n] packed as panels, zero past column n, from B(i, j) = src[i · k_stride + j · n_stride].
// The panels are split over threads. Where B's columns are contiguous (k_stride 1: B = Wᵀ, a panel
// is L rows of W), each L x L block is read as L row vectors and transposed in registers into L panel
// rows: a 1024 x 256 float W packed in 29 µs on one Zen 4 core, against 111 µs element by element
// (AVX2 build: 33 against 182). Otherwise (B = W, n_stride 1) a panel row is a piece of one row of W,
// copied as it lies.
template <typename T>
at::Tensor pack_panels(const T* src, int64_t k, int64_t n, int64_t k_stride, int64_t n_stride,
                       const at::TensorOptions& options) {
  using S = Simd<T>;
  constexpr int L = S::lanes;
  const int64_t panels = (n + L - 1) / L;
  at::Tensor packed = at::empty({panels, k, L}, options);
  T* out = packed.mutable_data_ptr<T>();
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, k * L));
  at::parallel_for(0, panels, grain, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t width = std::min<int64_t>(L, n - p * L);
      const T* columns = src + p * L * n_stride;  // B(0, p·L)
      T* panel = out + p * k * L;
      int64_t i = 0;
      if (kTransposeInRegisters && k_stride == 1) {
        for (; i + L <= k; i += L) {
          typename S::vec block[L];
          for (int l = 0; l < L; ++l) block[l] = l < width ? S::load(columns + l * n_stride + i) : typename S::vec{};
          detail::transpose<T>(block);
          for (int m = 0; m < L; ++m) S::store(panel + (i + m) * L, block[m]);
        }
      }
      for (; i < k; ++i) {
        T* row = panel + i * L;
        for (int64_t l = 0; l < width; ++l) row[l] = columns[i * k_stride + l * n_stride];
        std::fill(row + width, row + L, T(0));
      }
    }
  });
  return packed;
}

// Wᵀ for A · Wᵀ, W row-major [n, k] (a weight matrix).
template <typename T>
at::Tensor pack_transposed(const T* w, int64_t n, int64_t k, const at::TensorOptions& options) {
  return pack_panels(w, k, n, 1, k, options);
}

// W itself for A · W, W row-major [k, n].
template <typename T>
at::Tensor pack_columns(const T* w, int64_t k, int64_t n, const at::TensorOptions& options) {
  return pack_panels(w, k, n, n, 1, options);
}

template <typename T>
Panels<T> packed_panels(const at::Tensor& packed, int64_t n) {
  return Panels<T>{packed.const_data_ptr<T>(), packed.size(1) * packed.size(2), packed.size(2), packed.size(1), n};
}

namespace detail {

template <typename T>
constexpr int64_t kChunk = 1024 / sizeof(T);  // K per pass: 256 floats, 128 doubles

// Rows of a tile of NP panels: its accumulators, the NP panel rows and one broadcast fit the vector
// registers. With AVX-512 a one-panel tile (16 columns: measured on a cell's thin batch, before the
// cell moved to dot_gemm.h) takes 16 rows: each broadcast there feeds a single FMA, and 8 rows ran
// ~15% slower (24 rows slower still).
constexpr int kMaxPanels = 3;
constexpr int max_rows(int panels) { return kVectorRegisters == 32 ? (panels == 1 ? 16 : 8) : 4; }
static_assert(max_rows(1) + 2 <= kVectorRegisters && 2 * max_rows(2) + 3 <= kVectorRegisters &&
              3 * max_rows(3) + 4 <= kVectorRegisters);

// C[0:MR, 0:(NP - 1)·L + width] (+)= A[0:MR, 0:K] · [panel 0 | … | panel NP-1][0:K, :], the panels
// panel_stride apart, all full but the last, which has `width` columns.
template <typename T, int MR, int NP>
void tile(const T* a, int64_t a_row, int64_t a_col, const T* panel, int64_t panel_stride, int64_t panel_row,
          int64_t K, T* c, int64_t ldc, int64_t width, bool accumulate) {
  using S = Simd<T>;
  constexpr int L = S::lanes;
  typename S::vec acc[MR][NP];
  T edge[MR][L];  // the last panel's columns go through here when it is partial
  for (int r = 0; r < MR; ++r) {
    for (int q = 0; q < NP; ++q) {
      if (!accumulate) {
        acc[r][q] = typename S::vec{};
      } else if (q < NP - 1 || width == L) {
        acc[r][q] = S::load(c + r * ldc + q * L);
      } else {
        for (int l = 0; l < L; ++l) edge[r][l] = l < width ? c[r * ldc + q * L + l] : T(0);
        acc[r][q] = S::load(edge[r]);
      }
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    typename S::vec b[NP];
    for (int q = 0; q < NP; ++q) {
      b[q] = S::load(panel + q * panel_stride + k * panel_row);
      keep_in_register(b[q]);
    }
    for (int r = 0; r < MR; ++r) {
      const typename S::vec x = S::broadcast(a[r * a_row + k * a_col]);
      for (int q = 0; q < NP; ++q) acc[r][q] += x * b[q];
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int q = 0; q < NP; ++q) {
      if (q < NP - 1 || width == L) {
        S::store(c + r * ldc + q * L, acc[r][q]);
      } else {
        S::store(edge[r], acc[r][q]);
        for (int l = 0; l < width; ++l) c[r * ldc + q * L + l] = edge[r][l];
      }
    }
  }
}

// tile<T, rows, NP> for rows in 1 … R: one comparison per size, no table of cases to keep.
template <typename T, int NP, int... R>
void rows_tile(std::integer_sequence<int, R...>, int rows, const T* a, int64_t a_row, int64_t a_col,
               const T* panel, int64_t panel_stride, int64_t panel_row, int64_t K, T* c, int64_t ldc,
               int64_t width, bool accumulate) {
  (void)((rows == R + 1 &&
          (tile<T, R + 1, NP>(a, a_row, a_col, panel, panel_stride, panel_row, K, c, ldc, width, accumulate), true)) ||
         ...);
}

template <typename T>
void group_tile(int panels, int rows, const T* a, int64_t a_row, int64_t a_col, const T* panel,
                int64_t panel_stride, int64_t panel_row, int64_t K, T* c, int64_t ldc, int64_t width,
                bool accumulate) {
  switch (panels) {
#define DLUNITS_GROUP_CASE(NP)                                                                                 \
  case NP:                                                                                                     \
    return rows_tile<T, NP>(std::make_integer_sequence<int, max_rows(NP)>{}, rows, a, a_row, a_col, panel,     \
                            panel_stride, panel_row, K, c, ldc, width, accumulate);
    DLUNITS_GROUP_CASE(1) DLUNITS_GROUP_CASE(2) DLUNITS_GROUP_CASE(3)
#undef DLUNITS_GROUP_CASE
  }
}

}  // namespace detail

// C[0:M, cols of panels p_begin … p_end - 1] (+)= A[0:M, :] · B, C row-major with row stride ldc.
// Single-threaded: callers split panels (or rows) across threads, each writing its own part of C.
template <typename T>
void panel_gemm(const MatrixA<T>& a, int64_t M, const Panels<T>& b, int64_t p_begin, int64_t p_end, T* c,
                int64_t ldc, bool accumulate) {
  constexpr int L = Simd<T>::lanes;
  const int64_t K = b.depth;
  for (int64_t p = p_begin; p < p_end; p += detail::kMaxPanels) {
    const int panels = static_cast<int>(std::min<int64_t>(detail::kMaxPanels, p_end - p));
    const int64_t width = b.width(p + panels - 1);  // only the last panel can be partial
    // Balanced row tiles of at most max_rows(panels): the first `longer` tiles get one row more.
    const int64_t tiles = (M + detail::max_rows(panels) - 1) / detail::max_rows(panels);
    const int64_t short_rows = tiles > 0 ? M / tiles : 0, longer = tiles > 0 ? M % tiles : 0;
    if (K == 0 && !accumulate) {  // an empty sum
      for (int64_t m = 0; m < M; ++m) std::fill_n(c + m * ldc + p * L, (panels - 1) * L + width, T(0));
      continue;
    }
    for (int64_t k0 = 0; k0 < K; k0 += detail::kChunk<T>) {
      const int64_t kc = std::min(detail::kChunk<T>, K - k0);
      int64_t m = 0;
      for (int64_t t = 0; t < tiles; ++t) {
        const int rows = static_cast<int>(short_rows + (t < longer ? 1 : 0));
        detail::group_tile<T>(panels, rows, a.data + m * a.row_stride + k0 * a.col_stride, a.row_stride,
                              a.col_stride, b.panel(p) + k0 * b.row_stride, b.panel_stride, b.row_stride, kc,
                              c + m * ldc + p * L, ldc, width, accumulate || k0 > 0);
        m += rows;
      }
    }
  }
}

// C[0:M, 0:cols] = A[0:M, 0:K] · B for a thin depth K (a cell's weight gradient dW = dZᵀ·x: K is the
// batch), with B [K, cols] row-major read in place (row stride b_row): its whole panels as they lie,
// its last cols mod L columns through a zero-padded copy (a full vector load there would read past the
// row). With K thin, B (K rows) stays in L1 and there are no K chunks: row tiles outside, panel groups
// inside, each tile writing its rows of C once. On one Zen 3 core, 16 x 1024 x 256: 64-68 GFLOP/s, the
// tile's FMA rate at any depth, and level with panel_gemm's order on the same panels; what this adds
// is the in-place B with its tail. Single-threaded: callers split the rows.
template <typename T>
void thin_depth_gemm(const MatrixA<T>& a, int64_t M, const T* b, int64_t b_row, int64_t K, int64_t cols, T* c,
                     int64_t ldc) {
  constexpr int L = Simd<T>::lanes;
  constexpr int kRows = detail::max_rows(detail::kMaxPanels);
  const int64_t whole = cols / L, tail = cols - whole * L;
  std::vector<T> tail_panel(tail > 0 ? K * L : 0, T(0));  // the last columns, zero-padded to L
  for (int64_t k = 0; k < K && tail > 0; ++k) std::copy_n(b + k * b_row + whole * L, tail, &tail_panel[k * L]);
  for (int64_t m = 0; m < M; m += kRows) {
    const int rows = static_cast<int>(std::min<int64_t>(kRows, M - m));
    const T* a_rows = a.data + m * a.row_stride;
    T* c_rows = c + m * ldc;
    for (int64_t p = 0; p < whole; p += detail::kMaxPanels) {
      const int panels = static_cast<int>(std::min<int64_t>(detail::kMaxPanels, whole - p));
      detail::group_tile<T>(panels, rows, a_rows, a.row_stride, a.col_stride, b + p * L, L, b_row, K, c_rows + p * L,
                            ldc, L, false);
    }
    if (tail > 0) {
      detail::group_tile<T>(1, rows, a_rows, a.row_stride, a.col_stride, tail_panel.data(), L, L, K,
                            c_rows + whole * L, ldc, tail, false);
    }
  }
}

}  // namespace cpu
}  // namespace dlunits
