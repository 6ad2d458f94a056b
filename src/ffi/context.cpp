// libtorch's global numeric switches that tch 0.24 does not expose: TF32 for cuDNN convolutions
// and cuBLAS matmuls (PyTorch allows it for convolutions by default; strict fp32 turns it off).
// Exceptions never cross into Rust: each call returns 0 on success, -1 on failure.
#include <ATen/Context.h>

extern "C" {

int losscape_set_tf32(int on) {
  try {
    auto p = on ? at::Float32Precision::TF32 : at::Float32Precision::IEEE;
    at::globalContext().setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::CONV, p);
    at::globalContext().setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL, p);
    return 0;
  } catch (...) {
    return -1;
  }
}

// 1 when cuDNN convolutions may use TF32, 0 when not, -1 on failure.
int losscape_tf32_conv() {
  try {
    return at::globalContext().float32Precision(at::Float32Backend::CUDA, at::Float32Op::CONV) ==
                   at::Float32Precision::TF32
               ? 1
               : 0;
  } catch (...) {
    return -1;
  }
}
}
