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
// Layout. B is read as panels of L = 32 bytes / sizeof(T) columns (8 floats, 4
// doubles): element (k, n) of B is at panel(n / L)[k · row_stride + n % L]. A
// packed panel has row_stride L and is zero-padded to L columns: pack_transposed
// packs Wᵀ for A · Wᵀ (and a cell's thin inputs, xᵀ and hᵀ), pack_columns packs W
// for A · W. A is read by scalar broadcasts through (row, column) strides, so A
// can be a weight read in place, or a transpose, at no cost.
//
// Micro-kernels. Two panels at a time where two remain: a tile of MR ≤ 6 rows by two
// panels is 2·MR vector accumulators; per k it loads two panel rows (one cache line
// in float32) and broadcasts MR elements of A, each feeding two FMAs: 2·MR FMAs for
// MR + 2 loads, 12 accumulators of AVX2's 16 registers. An odd last panel takes a tile
// of MR ≤ 8 rows by one panel: MR FMAs for MR + 1 loads. Either way 8 or more
// independent accumulators cover the FMA latency (4 cycles, 2 pipes on Zen 3). K is
// walked in chunks of kChunk so that the panels' chunk and the A rows' chunk stay in L1
// across the row tiles.
//
// Pairing the panels, measured on one core on a cell's products (W [1024, 256] read in
// place as A, xᵀ of 16 rows as two panels): 45 GFLOP/s with one-panel tiles, 62-80 with
// pairs, MKL 41-49 in the same runs. MKL's sgemm stays faster on a whole sequence's input
// projection (M = 800: 117 against 92 GFLOP/s), which therefore stays BLAS.
//
// Cost: 2·M·N·K FLOPs. Bytes: B once per call when the tile loop keeps it in cache
// (a panel pair's chunk is reused by every row tile), A once per pair from L1/L2, C
// once (twice per extra K chunk). Measured alone at M = 16, N = 1024, K = 256 on one
// Zen 3 core (FMA peak ~87 GFLOP/s): 0.113 ms, ~74 GFLOP/s, against 0.145 ms for
// at::mm (MKL's sgemm, which packs W each call). With W's rows read in place as
// the panels (stride H, half a cache line each), or with K thin (a weight gradient,
// K = batch), MKL was faster: those products stay BLAS.
//
// Needs GCC's or Clang's vector extensions (the project builds with either).
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <utility>

namespace dlunits {
namespace cpu {

template <typename T>
struct Simd {
  static constexpr int lanes = 32 / sizeof(T);
  typedef T vec __attribute__((vector_size(32)));
  typedef T unaligned_vec __attribute__((vector_size(32), aligned(alignof(T))));
  static vec load(const T* p) { return *reinterpret_cast<const unaligned_vec*>(p); }
  static void store(T* p, vec v) { *reinterpret_cast<unaligned_vec*>(p) = v; }
  static vec broadcast(T x) { return splat(x, std::make_index_sequence<lanes>{}); }

 private:
  template <size_t... lane>
  static vec splat(T x, std::index_sequence<lane...>) {  // {x, x, …}: one vbroadcast (vec{} + x would add)
    return vec{((void)lane, x)...};
  }
};

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

// B [k, n] packed as panels, zero past column n, from B(i, j) = src[i · k_stride + j · n_stride].
template <typename T>
at::Tensor pack_panels(const T* src, int64_t k, int64_t n, int64_t k_stride, int64_t n_stride,
                       const at::TensorOptions& options) {
  constexpr int L = Simd<T>::lanes;
  const int64_t panels = (n + L - 1) / L;
  at::Tensor packed = at::zeros({panels, k, L}, options);
  T* out = packed.mutable_data_ptr<T>();
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t width = std::min<int64_t>(L, n - p * L);
    for (int64_t i = 0; i < k; ++i) {
      for (int64_t l = 0; l < width; ++l) out[(p * k + i) * L + l] = src[i * k_stride + (p * L + l) * n_stride];
    }
  }
  return packed;
}

// Wᵀ for A · Wᵀ, W row-major [n, k] (a weight matrix, or a cell's input rows).
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

constexpr int kMaxRows = 8;

template <typename T>
constexpr int64_t kChunk = 1024 / sizeof(T);  // K per pass: 256 floats, 128 doubles

// C[0:MR, 0:width] (+)= A[0:MR, 0:K] · panel[0:K, 0:width].
template <typename T, int MR>
void tile(const T* a, int64_t a_row, int64_t a_col, const T* panel, int64_t panel_row, int64_t K, T* c,
          int64_t ldc, int64_t width, bool accumulate) {
  using S = Simd<T>;
  constexpr int L = S::lanes;
  typename S::vec acc[MR];
  T edge[MR][L];  // a partial panel's columns go through here
  if (accumulate) {
    for (int r = 0; r < MR; ++r) {
      if (width == L) {
        acc[r] = S::load(c + r * ldc);
      } else {
        for (int l = 0; l < L; ++l) edge[r][l] = l < width ? c[r * ldc + l] : T(0);
        acc[r] = S::load(edge[r]);
      }
    }
  } else {
    for (int r = 0; r < MR; ++r) acc[r] = typename S::vec{};
  }
  for (int64_t k = 0; k < K; ++k) {
    const typename S::vec b = S::load(panel + k * panel_row);
    for (int r = 0; r < MR; ++r) acc[r] += S::broadcast(a[r * a_row + k * a_col]) * b;
  }
  for (int r = 0; r < MR; ++r) {
    if (width == L) {
      S::store(c + r * ldc, acc[r]);
    } else {
      S::store(edge[r], acc[r]);
      for (int l = 0; l < width; ++l) c[r * ldc + l] = edge[r][l];
    }
  }
}

template <typename T>
void rows_tile(int rows, const T* a, int64_t a_row, int64_t a_col, const T* panel, int64_t panel_row, int64_t K,
               T* c, int64_t ldc, int64_t width, bool accumulate) {
  switch (rows) {
#define DLUNITS_TILE_CASE(MR) \
  case MR: return tile<T, MR>(a, a_row, a_col, panel, panel_row, K, c, ldc, width, accumulate);
    DLUNITS_TILE_CASE(1) DLUNITS_TILE_CASE(2) DLUNITS_TILE_CASE(3) DLUNITS_TILE_CASE(4)
    DLUNITS_TILE_CASE(5) DLUNITS_TILE_CASE(6) DLUNITS_TILE_CASE(7) DLUNITS_TILE_CASE(8)
#undef DLUNITS_TILE_CASE
  }
}

// Two panels at once: C[0:MR, 0:L + width] (+)= A[0:MR, 0:K] · [panel | next][0:K, :], `panel` full,
// `next` with `width` columns. Each broadcast of A feeds 2 FMAs (MR·2 accumulators, MR ≤ 6 of
// AVX2's 16 registers with the two panel rows and the broadcast): 2 + MR loads per 2·MR FMAs,
// against 1 + MR per MR for one panel.
template <typename T, int MR>
void tile_pair(const T* a, int64_t a_row, int64_t a_col, const T* panel, const T* next, int64_t panel_row,
               int64_t K, T* c, int64_t ldc, int64_t width, bool accumulate) {
  using S = Simd<T>;
  constexpr int L = S::lanes;
  typename S::vec acc[MR][2];
  T edge[MR][L];  // the second panel's columns go through here when it is partial
  for (int r = 0; r < MR; ++r) {
    if (!accumulate) {
      acc[r][0] = acc[r][1] = typename S::vec{};
    } else {
      acc[r][0] = S::load(c + r * ldc);
      if (width == L) {
        acc[r][1] = S::load(c + r * ldc + L);
      } else {
        for (int l = 0; l < L; ++l) edge[r][l] = l < width ? c[r * ldc + L + l] : T(0);
        acc[r][1] = S::load(edge[r]);
      }
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    const typename S::vec b0 = S::load(panel + k * panel_row), b1 = S::load(next + k * panel_row);
    for (int r = 0; r < MR; ++r) {
      const typename S::vec x = S::broadcast(a[r * a_row + k * a_col]);
      acc[r][0] += x * b0;
      acc[r][1] += x * b1;
    }
  }
  for (int r = 0; r < MR; ++r) {
    S::store(c + r * ldc, acc[r][0]);
    if (width == L) {
      S::store(c + r * ldc + L, acc[r][1]);
    } else {
      S::store(edge[r], acc[r][1]);
      for (int l = 0; l < width; ++l) c[r * ldc + L + l] = edge[r][l];
    }
  }
}

constexpr int kMaxPairRows = 6;

template <typename T>
void rows_tile_pair(int rows, const T* a, int64_t a_row, int64_t a_col, const T* panel, const T* next,
                    int64_t panel_row, int64_t K, T* c, int64_t ldc, int64_t width, bool accumulate) {
  switch (rows) {
#define DLUNITS_TILE_PAIR_CASE(MR) \
  case MR: return tile_pair<T, MR>(a, a_row, a_col, panel, next, panel_row, K, c, ldc, width, accumulate);
    DLUNITS_TILE_PAIR_CASE(1) DLUNITS_TILE_PAIR_CASE(2) DLUNITS_TILE_PAIR_CASE(3)
    DLUNITS_TILE_PAIR_CASE(4) DLUNITS_TILE_PAIR_CASE(5) DLUNITS_TILE_PAIR_CASE(6)
#undef DLUNITS_TILE_PAIR_CASE
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
  for (int64_t p = p_begin; p < p_end; ++p) {
    const int64_t width = b.width(p);
    if (K == 0 && !accumulate) {  // an empty sum
      for (int64_t m = 0; m < M; ++m) std::fill_n(c + m * ldc + p * L, width, T(0));
      continue;
    }
    if (p + 1 < p_end) {  // panels p and p + 1 together (p is full: only the last panel can be partial)
      const int64_t next_width = b.width(p + 1);
      for (int64_t k0 = 0; k0 < K; k0 += detail::kChunk<T>) {
        const int64_t kc = std::min(detail::kChunk<T>, K - k0);
        for (int64_t m = 0; m < M; m += detail::kMaxPairRows) {
          const int rows = static_cast<int>(std::min<int64_t>(detail::kMaxPairRows, M - m));
          detail::rows_tile_pair<T>(rows, a.data + m * a.row_stride + k0 * a.col_stride, a.row_stride, a.col_stride,
                                    b.panel(p) + k0 * b.row_stride, b.panel(p + 1) + k0 * b.row_stride,
                                    b.row_stride, kc, c + m * ldc + p * L, ldc, next_width, accumulate || k0 > 0);
        }
      }
      ++p;
      continue;
    }
    for (int64_t k0 = 0; k0 < K; k0 += detail::kChunk<T>) {
      const int64_t kc = std::min(detail::kChunk<T>, K - k0);
      const T* panel = b.panel(p) + k0 * b.row_stride;
      for (int64_t m = 0; m < M; m += detail::kMaxRows) {
        const int rows = static_cast<int>(std::min<int64_t>(detail::kMaxRows, M - m));
        detail::rows_tile<T>(rows, a.data + m * a.row_stride + k0 * a.col_stride, a.row_stride, a.col_stride, panel,
                             b.row_stride, kc, c + m * ldc + p * L, ldc, width, accumulate || k0 > 0);
      }
    }
  }
}

}  // namespace cpu
}  // namespace dlunits
