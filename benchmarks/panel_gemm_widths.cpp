// Timing of csrc/cpu/panel_gemm.h and dot_gemm.h at the recurrent units' shapes, for benchmarks/panel_gemm_widths.py,
// which builds this file twice (for the machine, and for AVX2 only) and runs both in one process.
//
//   step: the sequence's recurrent product on one thread's rows, h[M, K] · W_hhᵀ, W_hh [N, K] packed once
//         (M = 8, N = 4H = 1024, K = H = 256 at B = 16 on two threads);
//   cell: the cell's products on one thread's units, x · W_ihᵀ + h · W_hhᵀ with the weights [M, K] read in
//         place (M = 512 gate rows, B = 16, K = 256 each), on csrc/cpu/dot_gemm.h or on panel_gemm as the
//         cell ran them before it.
// Each returns the best seconds per call over `trials` runs of `reps` calls, and checks the result
// against a float64 product first (the largest error relative to the largest element).
#include <torch/extension.h>

#include <chrono>
#include <cmath>
#include <utility>

#include "cpu/dot_gemm.h"
#include "cpu/panel_gemm.h"

namespace {

using dlunits::cpu::MatrixA;
using dlunits::cpu::Panels;

template <typename F>
double best_seconds(const F& run, int64_t reps, int64_t trials) {
  double best = 1e30;
  for (int64_t t = 0; t < trials; ++t) {
    const auto start = std::chrono::steady_clock::now();
    for (int64_t r = 0; r < reps; ++r) run();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / reps);
  }
  return best;
}

double error_relative_to_largest(const at::Tensor& got, const at::Tensor& want) {
  return (got.to(at::kDouble) - want).abs().max().item<double>() / want.abs().max().item<double>();
}

// h [M, K], w [N, K], both float32 contiguous: (seconds per call, error relative to the largest element).
std::pair<double, double> step(const at::Tensor& h, const at::Tensor& w, int64_t reps, int64_t trials) {
  const int64_t M = h.size(0), K = h.size(1), N = w.size(0);
  const at::Tensor packed = dlunits::cpu::pack_transposed(w.const_data_ptr<float>(), N, K, w.options());
  const Panels<float> panels = dlunits::cpu::packed_panels<float>(packed, N);
  at::Tensor out = at::empty({M, N}, h.options());
  const auto run = [&] {
    dlunits::cpu::panel_gemm(MatrixA<float>{h.const_data_ptr<float>(), K, 1}, M, panels, 0, panels.count(),
                             out.mutable_data_ptr<float>(), N, false);
  };
  run();
  const double error = error_relative_to_largest(out, h.to(at::kDouble).mm(w.to(at::kDouble).t()));
  return {best_seconds(run, reps, trials), error};
}

// The cell's z = x · W_ihᵀ + h · W_hhᵀ, x and h [B, K], the weights [M, K] read in place, in blocks of one
// vector of units as the cell runs it: on dot_gemm (the cell's product now), or as the cell ran it before
// (panel_gemm with W as the broadcast operand and xᵀ, hᵀ packed per call, then zᵀ transposed to rows).
std::pair<double, double> cell(const at::Tensor& w_ih, const at::Tensor& x, const at::Tensor& w_hh,
                               const at::Tensor& h, bool dot, int64_t reps, int64_t trials) {
  const int64_t M = w_ih.size(0), K = w_ih.size(1), B = x.size(0);
  constexpr int64_t kUnits = dlunits::cpu::Simd<float>::lanes;
  at::Tensor out = at::empty({B, M}, x.options()), out_t;
  const float *wi = w_ih.const_data_ptr<float>(), *wh = w_hh.const_data_ptr<float>();
  const float *xs = x.const_data_ptr<float>(), *hs = h.const_data_ptr<float>();
  float* z = out.mutable_data_ptr<float>();
  const auto run_dot = [&] {
    for (int64_t m = 0; m < M; m += kUnits) {
      dlunits::cpu::dot_gemm<float, 2>({{{xs, K, wi + m * K, K, K}, {hs, K, wh + m * K, K, K}}}, B,
                                       std::min(kUnits, M - m), z + m, M);
    }
  };
  const auto run_broadcast = [&] {
    const at::Tensor px = dlunits::cpu::pack_transposed(xs, B, K, x.options());
    const at::Tensor ph = dlunits::cpu::pack_transposed(hs, B, K, x.options());
    const Panels<float> xp = dlunits::cpu::packed_panels<float>(px, B), hp = dlunits::cpu::packed_panels<float>(ph, B);
    const int64_t Bp = xp.count() * kUnits;
    if (!out_t.defined()) out_t = at::empty({M, Bp}, x.options());
    float* zt = out_t.mutable_data_ptr<float>();
    for (int64_t m = 0; m < M; m += kUnits) {
      const int64_t rows = std::min(kUnits, M - m);
      dlunits::cpu::panel_gemm(MatrixA<float>{wi + m * K, K, 1}, rows, xp, 0, xp.count(), zt + m * Bp, Bp, false);
      dlunits::cpu::panel_gemm(MatrixA<float>{wh + m * K, K, 1}, rows, hp, 0, hp.count(), zt + m * Bp, Bp, true);
    }
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t m = 0; m < M; ++m) z[b * M + m] = zt[m * Bp + b];
    }
  };
  const auto run = [&] { dot ? run_dot() : run_broadcast(); };
  run();
  const at::Tensor want = x.to(at::kDouble).mm(w_ih.to(at::kDouble).t()) + h.to(at::kDouble).mm(w_hh.to(at::kDouble).t());
  const double error = error_relative_to_largest(out, want);
  return {best_seconds(run, reps, trials), error};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.attr("vector_bytes") = dlunits::cpu::kVectorBytes;
  m.def("step", &step, "the sequence's step product: (seconds per call, error relative to the largest element)");
  m.def("cell", &cell, "the cell's products, on dot_gemm or on panel_gemm: (seconds per call, error relative to the largest element)");
}
