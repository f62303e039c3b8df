// dlunits — float32 exp, sigmoid and tanh on a vector of lanes at once, for the CPU's fused passes
// (the dense unit's epilogue, the recurrent units' gate passes); and the build's vector width, with
// the vector type and register pinning that the products (panel_gemm.h, dot_gemm.h) share.
//
// std::exp and std::tanh are scalar library calls that cost several times a pass's other work
// per element, and the auto-vectoriser gives up on branch-free replacements (their clamps become
// control flow). So these are written on kLanes lanes with the GCC/Clang vector extension: 16
// where the build targets AVX-512, otherwise 8 (AVX, or two SSE halves). Each is within 4 ulp of
// the exact value over the whole float range, with infinities and NaN as torch gives them
// (tests/test_linear.py::test_fast_float_activations checks it through the dense unit). They are
// always inlined: GCC called tanh_fast out of line from the LSTM's saving pass, a call per pack.
#pragma once

#include <cstdint>
#include <utility>

namespace dlunits {
namespace cpu {

// The vector width the CPU kernels are written for, and the vector registers the compiler may
// allocate: zmm0-31 where the build targets AVX-512, 16 ymm registers otherwise
// (benchmarks/panel_gemm_widths.py compares the two builds on one machine).
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
constexpr int kVectorRegisters = 32;
#else
constexpr int kVectorBytes = 32;
constexpr int kVectorRegisters = 16;
#endif

using Floats = float __attribute__((vector_size(kVectorBytes)));
using Ints = int32_t __attribute__((vector_size(kVectorBytes)));
constexpr int64_t kLanes = kVectorBytes / sizeof(float);

inline Floats splat(float v) { return Floats{} + v; }

// One vector register of T (float or double) for the products (panel_gemm.h, dot_gemm.h); unaligned
// loads and stores.
template <typename T>
struct Simd {
  static constexpr int lanes = kVectorBytes / sizeof(T);
  typedef T vec __attribute__((vector_size(kVectorBytes)));
  typedef T unaligned_vec __attribute__((vector_size(kVectorBytes), aligned(alignof(T))));
  static vec load(const T* p) { return *reinterpret_cast<const unaligned_vec*>(p); }
  static void store(T* p, vec v) { *reinterpret_cast<unaligned_vec*>(p) = v; }
  static vec broadcast(T x) { return splat(x, std::make_index_sequence<lanes>{}); }

 private:
  template <size_t... lane>
  static vec splat(T x, std::index_sequence<lane...>) {  // {x, x, …}: one vbroadcast (vec{} + x would add)
    return vec{((void)lane, x)...};
  }
};

// An empty asm that takes v in a vector register: the compiler must keep it there, not reload it
// as a memory operand of each FMA (x86; elsewhere nothing). "v" admits AVX-512's zmm16-31 too.
template <typename V>
__attribute__((always_inline)) inline void keep_in_register(V& v) {
#if defined(__AVX512F__)
  asm("" : "+v"(v));
#elif defined(__x86_64__) || defined(__i386__)
  asm("" : "+x"(v));
#else
  (void)v;
#endif
}

// exp(x) = 2^k · e^r with k = round(x / ln 2) (by adding and subtracting 1.5·2^23, whose low
// mantissa bits then hold k), r = x - k·ln 2 (ln 2 in two parts, so that k·ln2_hi is exact) and
// e^r, |r| <= ln 2 / 2, by Cephes' degree-7 polynomial. x is clamped to [-87, 88], where 2^k is
// a normal float (exp(-87) = 1.6e-38 stands in for smaller values); NaN fails both comparisons
// and stays NaN.
__attribute__((always_inline)) inline Floats exp_fast(Floats x) {
  x = x < splat(-87.0f) ? splat(-87.0f) : x;
  x = x > splat(88.0f) ? splat(88.0f) : x;
  const Floats shifted = x * 1.44269504088896341f + 12582912.0f;
  const Floats k = shifted - 12582912.0f;
  const Ints two_to_k = (((Ints)shifted - 0x4B400000) + 127) << 23;  // the bits of 2^k
  const Floats r = (x - k * 0.693359375f) - k * -2.12194440e-4f;
  Floats p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return p * (Floats)two_to_k;
}

__attribute__((always_inline)) inline Floats sigmoid_fast(Floats z) { return 1.0f / (1.0f + exp_fast(-z)); }

// tanh(a) for a = |z|: the Taylor series through a^13 below 0.4 (truncation < 2e-9), and
// 1 - 2 / (e^{2a} + 1) above (no cancellation worth a bit there); then z's sign.
__attribute__((always_inline)) inline Floats tanh_fast(Floats z) {
  const Ints sign = (Ints)z & INT32_MIN;
  const Floats a = (Floats)((Ints)z & INT32_MAX), s = a * a;
  Floats series = splat(21844.0f / 6081075.0f);
  series = series * s - 1382.0f / 155925.0f;
  series = series * s + 62.0f / 2835.0f;
  series = series * s - 17.0f / 315.0f;
  series = series * s + 2.0f / 15.0f;
  series = series * s - 1.0f / 3.0f;
  series = a + a * s * series;
  const Floats large = 1.0f - 2.0f / (exp_fast(2.0f * a) + 1.0f);
  return (Floats)((Ints)(a < splat(0.4f) ? series : large) | sign);
}

}  // namespace cpu
}  // namespace dlunits
