// dlunits — a register-tiled product of two row-major matrices along their rows, for a cell's step.
//
//   C[m, n] = Σ_terms Σ_k X[m, k] · W[n, k]        (C = Σ X · Wᵀ)
//
// A cell computes z = x · W_ihᵀ + h · W_hhᵀ for a thin batch (B ≤ 32 rows) against the weights as
// they are stored, [G·H, K] row-major: both operands have K contiguous. panel_gemm.h needs one of
// them as panels along C's columns; reading W in place as its broadcast operand costs one scalar
// load per FMA, which held the product at about half the FMA rate (and z then came out transposed),
// while packing W in each call would read and write the weights once more. Here both operands are
// loaded as vectors along K, and each accumulator holds lane-wise partial dot products.
//
// Micro-kernel. A tile is kTileRows = 4 rows of X by kTileCols = L / 4 rows of W (4 x 4 with AVX-512's
// 16 float lanes, 4 x 2 with 8): L vector accumulators, and per vector of K, 4 + L / 4 loads for L FMAs
// (8 for 16 with AVX-512: the FMA rate, not the loads, is the bound), the loads pinned in registers.
// After the last term one transpose-and-add tree (log2 L levels; a level adds pairs of vectors through
// two shuffles and one add) turns the L accumulators into one vector of the tile's L sums, lane
// m·kTileCols + n for C[m, n]: kTileRows runs of kTileCols contiguous elements of C.
//
// Loops: W's tiles outside, X's inside, so that a tile of W (kTileCols rows of each term) comes from
// L2 once and from L1 for every tile of X; X (B rows of each term: 32 KiB at B = 16, K = 256 + 256)
// stays in L1 for the whole call.
//
// Edges: the last tile of X's rows (of W's) overlaps the one before it, which computes the shared
// elements again with the same bits; fewer rows than one tile are a small padded copy; the last
// K mod L of each term are added to the tile's sums one by one. Every element of C is summed in the
// same order whatever its tile, so results do not depend on how a caller splits W's rows between
// threads.
//
// Cost: 2·M·N·K FLOPs (K summed over the terms). Bytes: W once (from L2 when the weights stay
// there between a cell's steps), X once per tile of W from L1, C once. Measured on one Sapphire
// Rapids core, the cell's 16 batch rows x 512 gate rows x (256 + 256): 91-144 GFLOP/s against 61-112
// for panel_gemm with W broadcast and z transposed to rows (1.31-1.44x per round in one process) and
// 62-89 for MKL; built for AVX2 on the same core, level with the old path (0.98x; 48-50 GFLOP/s).
// benchmarks/panel_gemm_widths.py; benchmarks/results/vm-cpu-recurrent-20261206/NOTES.md.
//
// Needs GCC's (12 or later) or Clang's vector extensions and __builtin_shufflevector.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "vector_math.h"

namespace dlunits {
namespace cpu {

// X [M, depth] and W [N, depth], row-major with row strides x_row and w_row.
template <typename T>
struct DotTerm {
  const T* x;
  int64_t x_row;
  const T* w;
  int64_t w_row;
  int64_t depth;
};

namespace detail {

// One level of the reduction tree, pairs of `span` lanes: lane l of the result, q = l mod 2·span,
// is a[l] + a[l + span] where q < span and b[l - span] + b[l] otherwise. Applied with span 1, 2, 4,
// … to L vectors, lane l of the last one is the sum of vector l's lanes.
constexpr int pair_lane(int l, int span, int lanes, bool upper) {
  const int q = l % (2 * span), base = l - q;
  return q < span ? base + q + (upper ? span : 0) : lanes + base + q - span + (upper ? span : 0);
}

template <typename T, int span, size_t... l>
__attribute__((always_inline)) inline typename Simd<T>::vec pair_sum(typename Simd<T>::vec a, typename Simd<T>::vec b,
                                                                     std::index_sequence<l...>) {
  constexpr int L = Simd<T>::lanes;
  return __builtin_shufflevector(a, b, pair_lane(l, span, L, false)...) +
         __builtin_shufflevector(a, b, pair_lane(l, span, L, true)...);
}

// v[0 … L-1] → one vector whose lane l is the sum of v[l]'s lanes (v is overwritten).
template <typename T, int span = 1>
__attribute__((always_inline)) inline typename Simd<T>::vec lane_sums(typename Simd<T>::vec* v) {
  constexpr int L = Simd<T>::lanes;
  if constexpr (span == L) {
    return v[0];
  } else {
    for (int i = 0; i < L / (2 * span); ++i) {
      v[i] = pair_sum<T, span>(v[2 * i], v[2 * i + 1], std::make_index_sequence<L>{});
    }
    return lane_sums<T, 2 * span>(v);
  }
}

constexpr int kTileRows = 4;  // of X; a tile has kTileRows · kTileCols = L accumulators
template <typename T>
constexpr int kTileCols = Simd<T>::lanes / kTileRows;  // of W
static_assert(kTileRows * kTileCols<float> + kTileRows + kTileCols<float> <= kVectorRegisters);

// acc[m·kTileCols + n] += Σ_k x[m, k] · w[n, k] lane-wise, for k below depth rounded down to a multiple
// of L; x[m, k] = x[m·x_row + k], w likewise. (Rows as base + m·stride: with an array of row pointers
// the loop ran ~15% slower.)
template <typename T>
__attribute__((always_inline)) inline void dot_tile(const T* x, int64_t x_row, const T* w, int64_t w_row,
                                                    int64_t depth, typename Simd<T>::vec* acc) {
  using S = Simd<T>;
  constexpr int L = S::lanes, R = kTileRows, C = kTileCols<T>;
  for (int64_t k = 0; k + L <= depth; k += L) {
    typename S::vec a[R], b[C];
    // Each load pinned in a register (through a temporary: on an array element the empty asm kept the
    // array on the stack); without it GCC's AVX2 code took each x row as a memory operand of its FMAs.
    for (int m = 0; m < R; ++m) {
      typename S::vec row = S::load(x + m * x_row + k);
      keep_in_register(row);
      a[m] = row;
    }
    for (int n = 0; n < C; ++n) {
      typename S::vec row = S::load(w + n * w_row + k);
      keep_in_register(row);
      b[n] = row;
    }
    for (int m = 0; m < R; ++m) {
      for (int n = 0; n < C; ++n) acc[m * C + n] += a[m] * b[n];
    }
  }
}

// sums[m·kTileCols + n] += Σ_k x[m, k] · w[n, k] over the last depth mod L of k, one by one, after the lane
// sums. (Zero-padded vectors in dot_tile instead made the compiler keep the accumulators in memory.)
template <typename T>
inline void dot_tail(const T* x, int64_t x_row, const T* w, int64_t w_row, int64_t depth, T* sums) {
  constexpr int L = Simd<T>::lanes, R = kTileRows, C = kTileCols<T>;
  for (int m = 0; m < R; ++m) {
    for (int n = 0; n < C; ++n) {
      for (int64_t k = depth - depth % L; k < depth; ++k) sums[m * C + n] += x[m * x_row + k] * w[n * w_row + k];
    }
  }
}

// count < tile rows of a term (row stride `stride`) as `tile` rows of `depth`, the last repeated.
template <typename T>
std::vector<T> padded_rows(const T* src, int64_t count, int64_t stride, int64_t depth, int64_t tile) {
  std::vector<T> rows(tile * depth);
  for (int64_t r = 0; r < tile; ++r) std::copy_n(src + std::min(r, count - 1) * stride, depth, rows.data() + r * depth);
  return rows;
}

}  // namespace detail

// C[0:M, 0:N] = Σ_t X_t[0:M, :] · W_t[0:N, :]ᵀ, C row-major with row stride ldc, M and N at least 1.
// Single-threaded: callers split W's rows (C's columns) across threads.
template <typename T, size_t kTerms>
void dot_gemm(std::array<DotTerm<T>, kTerms> terms, int64_t M, int64_t N, T* c, int64_t ldc) {
  using S = Simd<T>;
  constexpr int R = detail::kTileRows, C = detail::kTileCols<T>;
  // Fewer rows than a tile (a batch below 4, a block of W below kTileCols rows): padded copies, small.
  std::vector<std::vector<T>> padded;
  for (DotTerm<T>& t : terms) {
    if (M < R) {
      padded.push_back(detail::padded_rows(t.x, M, t.x_row, t.depth, R));
      t.x = padded.back().data();
      t.x_row = t.depth;
    }
    if (N < C) {
      padded.push_back(detail::padded_rows(t.w, N, t.w_row, t.depth, C));
      t.w = padded.back().data();
      t.w_row = t.depth;
    }
  }
  const int rows = static_cast<int>(std::min<int64_t>(M, R)), cols = static_cast<int>(std::min<int64_t>(N, C));
  for (int64_t n_end = C; n_end < N + C; n_end += C) {
    // The last tiles overlap the ones before them (n0 = N - C): their elements come out with the same bits.
    const int64_t n0 = std::max<int64_t>(std::min(n_end, N) - C, 0);
    for (int64_t m_end = R; m_end < M + R; m_end += R) {
      const int64_t m0 = std::max<int64_t>(std::min(m_end, M) - R, 0);
      typename S::vec acc[S::lanes] = {};
      for (const DotTerm<T>& t : terms) {
        detail::dot_tile<T>(t.x + m0 * t.x_row, t.x_row, t.w + n0 * t.w_row, t.w_row, t.depth, acc);
      }
      T sums[S::lanes];
      S::store(sums, detail::lane_sums<T>(acc));
      for (const DotTerm<T>& t : terms) {
        if (t.depth % S::lanes == 0) continue;
        detail::dot_tail<T>(t.x + m0 * t.x_row, t.x_row, t.w + n0 * t.w_row, t.w_row, t.depth, sums);
      }
      for (int m = 0; m < rows; ++m) {
        if (cols == C) {  // a constant size: one vector store, where a run-time size would call memcpy
          std::memcpy(c + (m0 + m) * ldc + n0, sums + m * C, C * sizeof(T));
        } else {
          std::copy_n(sums + m * C, cols, c + (m0 + m) * ldc + n0);
        }
      }
    }
  }
}

}  // namespace cpu
}  // namespace dlunits
