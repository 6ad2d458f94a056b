// The few libtorch calls that tch 0.24 does not expose, as plain C functions:
//  - TF32 switches for CUDA float32 convolutions and matmuls (strict fp32 turns them off);
//  - a TorchScript module's named buffers (BatchNorm running statistics), which checkpoint
//    interpolation must move along with the parameters;
//  - reading a Python `torch.save` zip file (a state_dict, possibly nested) into named tensors.
// No C++ exception crosses into Rust: each call returns 0 on success and -1 on failure, with the
// first line of the error message in `err` where there is one.
#include <ATen/Context.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

typedef void (*named_tensor_cb)(void* ctx, const char* name, void* tensor);

static void set_err(char* err, size_t len, const char* what) {
  if (!err || len == 0) return;
  std::string s(what);
  auto nl = s.find('\n');
  if (nl != std::string::npos) s.resize(nl);
  std::strncpy(err, s.c_str(), len - 1);
  err[len - 1] = 0;
}

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

// The data pointer of the module's first parameter (to check that `module` is what we think).
int losscape_module_first_param(void* module, void** out) {
  try {
    auto* m = static_cast<torch::jit::Module*>(module);
    for (const auto& p : m->named_parameters(/*recurse=*/true)) {
      *out = p.value.data_ptr();
      return 0;
    }
    *out = nullptr;
    return 0;
  } catch (...) {
    return -1;
  }
}

// Every buffer of the module (recursively), as new tensors sharing the module's storage.
int losscape_module_named_buffers(void* module, void* ctx, named_tensor_cb f, char* err, size_t errlen) {
  try {
    auto* m = static_cast<torch::jit::Module*>(module);
    for (const auto& b : m->named_buffers(/*recurse=*/true)) {
      f(ctx, b.name.c_str(), new at::Tensor(b.value));
    }
    return 0;
  } catch (const std::exception& e) {
    set_err(err, errlen, e.what());
    return -1;
  }
}

static void walk(const c10::IValue& v, const std::string& prefix, void* ctx, named_tensor_cb f) {
  if (v.isTensor()) {
    f(ctx, prefix.c_str(), new at::Tensor(v.toTensor()));
  } else if (v.isGenericDict()) {
    for (const auto& kv : v.toGenericDict()) {
      std::string key;
      if (kv.key().isString()) {
        key = kv.key().toStringRef();
      } else if (kv.key().isInt()) {
        key = std::to_string(kv.key().toInt());
      } else {
        continue;
      }
      walk(kv.value(), prefix.empty() ? key : prefix + "." + key, ctx, f);
    }
  } else if (v.isList() || v.isTuple()) {
    auto items = v.isList() ? v.toListRef().vec() : v.toTupleRef().elements().vec();
    for (size_t i = 0; i < items.size(); ++i) {
      walk(items[i], prefix.empty() ? std::to_string(i) : prefix + "." + std::to_string(i), ctx, f);
    }
  }
}

// Every tensor of a `torch.save` zip file, named by its dotted key path ("net.module.conv1.weight").
int losscape_torch_load(const char* path, void* ctx, named_tensor_cb f, char* err, size_t errlen) {
  try {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      set_err(err, errlen, "cannot open file");
      return -1;
    }
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    walk(torch::jit::pickle_load(bytes), "", ctx, f);
    return 0;
  } catch (const std::exception& e) {
    set_err(err, errlen, e.what());
    return -1;
  }
}
}
