// dlunits — launching an element-wise CUDA kernel: one thread per element of the tensor it
// writes, on the current stream, the launch checked. The kernels stride over what a grid
// capped at 2^20 blocks does not cover.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>
#include <cstdint>

namespace dlunits {

constexpr int kElementwiseThreads = 256;

inline unsigned elementwise_blocks(int64_t numel) {
  return static_cast<unsigned>(
      std::min<int64_t>((numel + kElementwiseThreads - 1) / kElementwiseThreads, int64_t{1} << 20));
}

// kernel<<<blocks for numel, 256>>>(args...), numel passed as the kernel's last argument.
template <typename... KernelArgs, typename... Args>
void launch_elementwise(void (*kernel)(KernelArgs...), int64_t numel, Args... args) {
  kernel<<<elementwise_blocks(numel), kElementwiseThreads, 0, at::cuda::getCurrentCUDAStream()>>>(args..., numel);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace dlunits
