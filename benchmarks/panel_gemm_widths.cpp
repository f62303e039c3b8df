// Timing of csrc/cpu/panel_gemm.h at the recurrent units' shapes, for benchmarks/panel_gemm_widths.py,
// which builds this file twice (for the machine, and for AVX2 only) and runs both in one process.
//
//   step: the sequence's recurrent product on one thread's rows, h[M, K] · W_hhᵀ, W_hh [N, K] packed once
//         (M = 8, N = 4H = 1024, K = H = 256 at B = 16 on two threads);
//   cell: the cell's product on one thread's units, W[M, K] read in place · xᵀ, x [B, K] packed per call
//         (M = 512 gate rows, B = 16, K = 256), in blocks of one vector of units as the cell runs it.
// Each returns the best seconds per call over `trials` runs of `reps` calls, and checks the result
// against a float64 product first (the largest error relative to the largest element).
#include <torch/extension.h>

#include <chrono>
#include <cmath>
#include <utility>

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

// w [M, K] (read in place), x [B, K]: the cell's zᵀ = W · xᵀ, x packed in each call.
std::pair<double, double> cell(const at::Tensor& w, const at::Tensor& x, int64_t reps, int64_t trials) {
  const int64_t M = w.size(0), K = w.size(1), B = x.size(0);
  constexpr int64_t kUnits = dlunits::cpu::Simd<float>::lanes;
  at::Tensor out;
  int64_t Bp = 0;
  const auto run = [&] {
    const at::Tensor packed = dlunits::cpu::pack_transposed(x.const_data_ptr<float>(), B, K, x.options());
    const Panels<float> panels = dlunits::cpu::packed_panels<float>(packed, B);
    Bp = panels.count() * dlunits::cpu::Simd<float>::lanes;
    if (!out.defined()) out = at::empty({M, Bp}, x.options());
    for (int64_t m = 0; m < M; m += kUnits) {
      dlunits::cpu::panel_gemm(MatrixA<float>{w.const_data_ptr<float>() + m * K, K, 1}, std::min(kUnits, M - m),
                               panels, 0, panels.count(), out.mutable_data_ptr<float>() + m * Bp, Bp, false);
    }
  };
  run();
  const double error = error_relative_to_largest(out.narrow(1, 0, B), w.to(at::kDouble).mm(x.to(at::kDouble).t()));
  return {best_seconds(run, reps, trials), error};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.attr("vector_bytes") = dlunits::cpu::kVectorBytes;
  m.def("step", &step, "the sequence's step product: (seconds per call, error relative to the largest element)");
  m.def("cell", &cell, "the cell's product: (seconds per call, error relative to the largest element)");
}
