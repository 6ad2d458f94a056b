// The few libtorch calls that tch 0.24 does not expose, as plain C functions:
//  - TF32 switches for CUDA float32 convolutions and matmuls (strict fp32 turns them off);
//  - a TorchScript module's named buffers (BatchNorm running statistics), which checkpoint
//    interpolation must move along with the parameters;
//  - reading a Python `torch.save` zip file (a state_dict, possibly nested) into named tensors;
//  - freezing a module (torch.jit.freeze: BatchNorm folded into the convolutions) and listing the
//    tensor constants of its graph, which the caller then moves in place; on CPU, optionally with
//    the graph's convolutions rewritten to run on oneDNN (MKLDNN) tensors;
//  - the BatchNorm layers of a module (momentum and running statistics), and switching them alone
//    to training mode, for re-estimating their statistics at each point of a grid;
//  - for the curvature products: a clone of a module sharing its tensors, its BatchNorms folded
//    into the layers before them as differentiable functions of the parameters; the graph
//    executor's optimizations switched off (its autodiff subgraphs drop tangents); forward-mode
//    automatic differentiation (a dual level, a tensor's tangent set and read);
//  - for Hessian products: the operator `losscape::conv`, a convolution whose backward is made of
//    operations with cheap derivatives, so that a double backward through it runs oneDNN's
//    convolution kernels instead of PyTorch's generic double backward (see `ConvOp`).
// No C++ exception crosses into Rust: every call runs its body through `guard`, which returns 0 on
// success, -2 when libtorch's allocator ran out of memory (c10::OutOfMemoryError, a typed cause)
// and -1 on any other failure, with the first line of the message in `err`.
// A module handle the Rust side owns is a `new torch::jit::Module` (a reference to the module
// object, which it keeps alive), freed by `losscape_module_free`.
#include <ATen/Context.h>
#include <c10/util/Exception.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/python/update_graph_executor_opt.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <torch/csrc/jit/passes/frozen_ops_to_mkldnn.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/csrc/jit/serialization/unpickler.h>
#include <caffe2/serialize/inline_container.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>
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

// The one convention for C++ exceptions (as tch's PROTECT): run `body`, map what it throws to a
// return code and a message.
template <typename F>
static int guard(char* err, size_t errlen, F&& body) {
  try {
    body();
    return 0;
  } catch (const c10::OutOfMemoryError& e) {
    set_err(err, errlen, e.what());
    return -2;
  } catch (const std::exception& e) {
    set_err(err, errlen, e.what());
    return -1;
  } catch (...) {
    set_err(err, errlen, "unknown C++ exception");
    return -1;
  }
}

static torch::jit::Module* module_of(void* module) {
  if (!module) throw std::runtime_error("no module");
  return static_cast<torch::jit::Module*>(module);
}

// The nodes of `b` and of every block nested in it for which `keep` holds, in graph order.
template <typename F>
static void find_nodes(torch::jit::Block* b, const F& keep, std::vector<torch::jit::Node*>& out) {
  for (auto* n : b->nodes()) {
    if (keep(n)) out.push_back(n);
    for (auto* sub : n->blocks()) find_nodes(sub, keep, out);
  }
}

extern "C" {

int losscape_set_tf32(int on, char* err, size_t errlen) {
  return guard(err, errlen, [&] {
    auto p = on ? at::Float32Precision::TF32 : at::Float32Precision::IEEE;
    at::globalContext().setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::CONV, p);
    at::globalContext().setFloat32Precision(at::Float32Backend::CUDA, at::Float32Op::MATMUL, p);
  });
}

// *out = 1 when cuDNN convolutions may use TF32, 0 when not.
int losscape_tf32_conv(int* out, char* err, size_t errlen) {
  return guard(err, errlen, [&] {
    *out = at::globalContext().float32Precision(at::Float32Backend::CUDA, at::Float32Op::CONV) ==
                   at::Float32Precision::TF32
               ? 1
               : 0;
  });
}

// A new handle to the module object behind `module` (a torch::jit::Module* that tch's CModule
// holds): the Rust side owns it (losscape_module_free) and it keeps the object alive. *first is
// the data pointer of the module's first parameter (null without one), to check that `module` is
// what the caller thinks.
int losscape_module_share(void* module, void** out, void** first, char* err, size_t errlen) {
  return guard(err, errlen, [&] {
    auto* m = module_of(module);
    *first = nullptr;
    for (const auto& p : m->named_parameters(/*recurse=*/true)) {
      *first = p.value.data_ptr();
      break;
    }
    *out = new torch::jit::Module(*m);
  });
}

void losscape_module_free(void* module) { delete static_cast<torch::jit::Module*>(module); }

// Every buffer of the module (recursively), as new tensors sharing the module's storage.
int losscape_module_named_buffers(void* module, void* ctx, named_tensor_cb f, char* err, size_t errlen) {
  return guard(err, errlen, [&] {
    auto* m = module_of(module);
    for (const auto& b : m->named_buffers(/*recurse=*/true)) {
      f(ctx, b.name.c_str(), new at::Tensor(b.value));
    }
  });
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

// A pickle (protocol <= 2, as torch.save writes) rewritten for libtorch's unpickler, which turns
// `collections.OrderedDict` into None (it only expects one as a tensor's unused backward hooks) and
// has no POP: every `OrderedDict()` (the class, pushed or fetched from the memo, then an empty
// tuple, then REDUCE) becomes an empty dict, and BUILD (setting an object's state: an
// OrderedDict's `_metadata`) becomes TUPLE2, pairing the object with its state, which is then
// walked like any tuple (its tensors keep their names under a "0." prefix, which is unwrapped
// like any other). Throws where the pickle uses the class otherwise, or an opcode it does not know
// (the caller then reads the pickle unchanged).
static std::string plain_dicts(const char* p, size_t n) {
  struct Op {
    unsigned char code;
    size_t start, end;
  };
  std::vector<Op> ops;
  size_t i = 0;
  auto need = [&](size_t k) {
    if (i + k > n) throw std::runtime_error("truncated pickle");
  };
  auto le = [&](size_t at, size_t k) {
    uint64_t v = 0;
    for (size_t b = 0; b < k; ++b) v |= uint64_t(uint8_t(p[at + b])) << (8 * b);
    return v;
  };
  auto line_end = [&](size_t from) {
    const void* nl = std::memchr(p + from, '\n', n - from);
    if (!nl) throw std::runtime_error("truncated pickle line");
    return size_t(static_cast<const char*>(nl) - p) + 1;
  };
  while (i < n) {
    unsigned char op = static_cast<unsigned char>(p[i]);
    size_t start = i++;
    size_t len = 0;
    switch (op) {
      case '(': case '.': case '0': case '1': case '2': case 'N': case 'R': case 'a': case 'b': case 'd':
      case '}': case 'e': case 'l': case ']': case 'o': case 's': case 't': case ')': case 'u': case 'Q':
      case 0x81: case 0x85: case 0x86: case 0x87: case 0x88: case 0x89:
        break;
      case 'K': case 'q': case 'h': case 0x80: case 0x82: len = 1; break;
      case 'M': case 0x83: len = 2; break;
      case 'J': case 'r': case 'j': case 0x84: len = 4; break;
      case 'G': len = 8; break;
      case 'U': case 'C': case 0x8c: case 0x8a: need(1); len = 1 + le(i, 1); break;
      case 'T': case 'X': case 'B': case 0x8b: need(4); len = 4 + le(i, 4); break;
      case 'I': case 'L': case 'F': case 'S': case 'V': case 'P': case 'g': case 'p': len = line_end(i) - i; break;
      case 'c': case 'i': len = line_end(line_end(i)) - i; break;
      default: throw std::runtime_error("pickle opcode " + std::to_string(op) + " not handled");
    }
    need(len);
    i += len;
    ops.push_back({op, start, i});
    if (op == '.') break;
  }
  auto text = [&](const Op& o) { return std::string(p + o.start + 1, o.end - o.start - 1); };
  auto memo_id = [&](const Op& o) -> int64_t {
    switch (o.code) {
      case 'q': case 'h': return int64_t(le(o.start + 1, 1));
      case 'r': case 'j': return int64_t(le(o.start + 1, 4));
      case 'p': case 'g': return std::stoll(text(o));
      default: return -1;
    }
  };
  const std::string od = "collections\nOrderedDict\n";
  std::unordered_set<int64_t> od_memo;
  std::string out;
  out.reserve(n);
  for (size_t k = 0; k < ops.size(); ++k) {
    const Op& o = ops[k];
    bool pushes_od = (o.code == 'c' && text(o) == od) ||
                     ((o.code == 'h' || o.code == 'j' || o.code == 'g') && od_memo.count(memo_id(o)));
    if (pushes_od) {
      size_t next = k + 1;
      if (o.code == 'c' && next < ops.size() && (ops[next].code == 'q' || ops[next].code == 'r' || ops[next].code == 'p')) {
        od_memo.insert(memo_id(ops[next]));
        ++next;
      }
      if (next + 1 >= ops.size() || ops[next].code != ')' || ops[next + 1].code != 'R')
        throw std::runtime_error("OrderedDict used other than as OrderedDict()");
      out.push_back('}');
      k = next + 1;
      continue;
    }
    if (o.code == 'b') {
      out.push_back('\x86');
      continue;
    }
    out.append(p + o.start, o.end - o.start);
  }
  return out;
}

// Every tensor of a `torch.save` zip file, named by its dotted key path ("net.module.conv1.weight").
int losscape_torch_load(const char* path, void* ctx, named_tensor_cb f, char* err, size_t errlen) {
  return guard(err, errlen, [&] {
    {
      std::ifstream in(path, std::ios::binary);
      if (!in) throw std::runtime_error("cannot open file");
    }
    caffe2::serialize::PyTorchStreamReader reader{std::string(path)};
    at::DataPtr pickle;
    size_t size = 0;
    std::tie(pickle, size) = reader.getRecord("data.pkl");
    const char* raw = static_cast<const char*>(pickle.get());
    std::string data;
    try {
      data = plain_dicts(raw, size);
    } catch (const std::exception&) {
      data.assign(raw, size);
    }
    size_t pos = 0;
    auto read = [&](char* buf, size_t len) -> size_t {
      size_t k = std::min(len, data.size() - pos);
      std::memcpy(buf, data.data() + pos, k);
      pos += k;
      return k;
    };
    auto record = [&](const std::string& name) { return std::get<0>(reader.getRecord("data/" + name)); };
    torch::jit::Unpickler unpickler(read, nullptr, nullptr, record, at::Device(at::kCPU));
    unpickler.set_version(reader.version());
    walk(unpickler.parse_ivalue(), "", ctx, f);
  });
}

static void tensor_constants(torch::jit::Block* b, std::vector<torch::jit::Node*>& out) {
  find_nodes(b, [](torch::jit::Node* n) {
    return n->kind() == c10::prim::Constant && n->output()->type()->cast<c10::TensorType>() &&
           n->hasAttribute(c10::attr::value) && n->output()->hasUses();
  }, out);
}

static void constants_by_name(torch::jit::Block* b, c10::Symbol kind,
                              std::unordered_map<std::string, torch::jit::Node*>& out) {
  for (auto* n : b->nodes()) {
    if (n->kind() == kind && n->hasAttribute(c10::attr::value) && n->output()->hasUses()) {
      out[n->output()->debugName()] = n;
    }
    for (auto* sub : n->blocks()) constants_by_name(sub, kind, out);
  }
}

// torch::jit::ConvertFrozenOpsToMKLDNN on a frozen graph whose floating-point tensor constants
// are `consts` (graph order, named `names`): the convolutions and the ops between them then run on
// oneDNN tensors, and the constants they use become prim::ConstantMKLDNNTensor nodes, named after
// the constant they came from plus "_mkldnn". Each entry of `consts` is replaced by the tensor the
// graph now uses for it, so that writing into it still moves the graph; with `channels_last`, the
// 4-D constants left dense are re-laid out so. Throws where that map is not clean: a constant
// still used as a dense tensor beside its oneDNN copy (the pass may rename the dense one, so this
// is checked by the tensor, not the name), a constant no longer used at all, a oneDNN constant
// with no source, or a changed value. (A graph with nothing to convert keeps its dense constants.)
static void to_mkldnn(std::shared_ptr<torch::jit::Graph>& graph, std::vector<at::Tensor>& consts,
                      const std::vector<std::string>& names, bool channels_last) {
  torch::jit::ConvertFrozenOpsToMKLDNN(graph);
  std::unordered_map<std::string, torch::jit::Node*> mk;
  constants_by_name(graph->block(), c10::Symbol::fromQualString("prim::ConstantMKLDNNTensor"), mk);
  // The live dense tensor constants, by the tensor they hold.
  std::vector<torch::jit::Node*> live;
  tensor_constants(graph->block(), live);
  std::unordered_map<c10::TensorImpl*, std::vector<torch::jit::Node*>> dense;
  for (auto* n : live) dense[n->t(c10::attr::value).unsafeGetTensorImpl()].push_back(n);
  size_t mapped = 0;
  for (size_t k = 0; k < consts.size(); ++k) {
    auto users = dense.find(consts[k].unsafeGetTensorImpl());
    auto it = mk.find(names[k] + "_mkldnn");
    if (it != mk.end()) {
      if (users != dense.end()) throw std::runtime_error("a constant is used both as a dense and a oneDNN tensor");
      at::Tensor t = it->second->t(c10::attr::value);
      if (!t.to_dense().equal(consts[k])) throw std::runtime_error("a oneDNN constant differs from its source");
      consts[k] = t;
      ++mapped;
      continue;
    }
    if (users == dense.end()) throw std::runtime_error("a constant is no longer used after the oneDNN rewrite");
    if (channels_last && consts[k].dim() == 4) {
      at::Tensor t = consts[k].contiguous(at::MemoryFormat::ChannelsLast);
      for (auto* n : users->second) n->t_(c10::attr::value, t);
      consts[k] = t;
    }
  }
  if (mapped != mk.size()) throw std::runtime_error("a oneDNN constant has no source constant");
}

// torch.jit.freeze of a deep copy of `module` (which must be in eval mode), after casting the copy
// to float64 when `to_double`, and setting its `n` named parameters or buffers `names` to `values`
// (at::Tensor*). Freezing inlines every attribute as a constant and folds BatchNorm into the
// preceding convolution or linear layer. Each floating-point tensor constant that the frozen
// forward graph uses is reported through `f` in graph order (name = its index); with
// `channels_last`, 4-D ones are re-laid out so (with `mkldnn`, those left dense); with `mkldnn`
// (a float32 CPU module), the graph is rewritten for oneDNN (`to_mkldnn` above) and a constant
// it converted is reported as the oneDNN tensor, in the same place. The reported tensors share
// storage with the graph: writing into them in place changes what the frozen module computes.
// With `out` non-null the frozen module is handed over as a new torch::jit::Module*.
int losscape_freeze(void* module, int to_double, const char** names, void** values, size_t n, int channels_last,
                    int mkldnn, void* ctx, named_tensor_cb f, void** out, char* err, size_t errlen) {
  return guard(err, errlen, [&] {
    at::NoGradGuard no_grad;
    auto* m = module_of(module);
    torch::jit::Module c = m->deepcopy();
    if (to_double) c.to(at::kDouble);
    if (n > 0) {
      std::unordered_map<std::string, const at::Tensor*> want;
      for (size_t i = 0; i < n; ++i) want[names[i]] = static_cast<const at::Tensor*>(values[i]);
      size_t found = 0;
      for (const auto& p : c.named_parameters(/*recurse=*/true)) {
        auto it = want.find(p.name);
        if (it != want.end()) {
          p.value.copy_(*it->second);
          ++found;
        }
      }
      for (const auto& b : c.named_buffers(/*recurse=*/true)) {
        auto it = want.find(b.name);
        if (it != want.end()) {
          b.value.copy_(*it->second);
          ++found;
        }
      }
      if (found != n) throw std::runtime_error("not every tensor to set is a parameter or buffer of the module");
    }
    c.eval();
    torch::jit::Module fz = torch::jit::freeze(c, std::nullopt, /*optimize_numerics=*/true);
    auto graph = fz.get_method("forward").graph();
    std::vector<torch::jit::Node*> nodes;
    tensor_constants(graph->block(), nodes);
    std::vector<at::Tensor> consts;
    std::vector<std::string> const_names;
    for (auto* node : nodes) {
      at::Tensor t = node->t(c10::attr::value);
      if (!t.is_floating_point()) continue;
      if (channels_last && !mkldnn && t.dim() == 4) {
        t = t.contiguous(at::MemoryFormat::ChannelsLast);
        node->t_(c10::attr::value, t);
      }
      consts.push_back(t);
      const_names.push_back(node->output()->debugName());
    }
    if (mkldnn) to_mkldnn(graph, consts, const_names, channels_last);
    for (size_t k = 0; k < consts.size(); ++k) f(ctx, std::to_string(k).c_str(), new at::Tensor(consts[k]));
    if (out) *out = new torch::jit::Module(fz);
  });
}

typedef void (*batchnorm_cb)(void* ctx, const char* name, double momentum, int has_momentum, void* mean,
                             void* var, void* tracked);

static bool is_batchnorm(const torch::jit::Module& m) {
  auto name = m.type()->name();
  if (!name) return false;
  if (name->qualifiedName().find("BatchNorm") == std::string::npos) return false;
  return m.hasattr("running_mean") && m.attr("running_mean").isTensor() && m.hasattr("running_var") &&
         m.attr("running_var").isTensor();
}

// Every BatchNorm layer of the module that tracks running statistics (a submodule whose class is
// named *BatchNorm* and holds running_mean and running_var tensors): its name, its momentum (a
// class constant in TorchScript; has_momentum = 0 when it is None) and new tensors sharing its
// running_mean, running_var and num_batches_tracked (null when absent).
int losscape_batchnorm_layers(void* module, void* ctx, batchnorm_cb f, char* err, size_t errlen) {
  return guard(err, errlen, [&] {
    auto* m = module_of(module);
    for (const auto& nm : m->named_modules()) {
      const auto& sub = nm.value;
      if (!is_batchnorm(sub)) continue;
      c10::IValue mv;
      auto type = sub.type();
      if (type->hasConstant("momentum")) {
        mv = type->getConstant("momentum");
      } else if (sub.hasattr("momentum")) {
        mv = sub.attr("momentum");
      }
      double momentum = 0.0;
      int has = 0;
      if (mv.isDouble()) {
        momentum = mv.toDouble();
        has = 1;
      } else if (!mv.isNone()) {
        throw std::runtime_error("BatchNorm layer " + nm.name + ": cannot read its momentum");
      }
      at::Tensor* tracked = nullptr;
      if (sub.hasattr("num_batches_tracked") && sub.attr("num_batches_tracked").isTensor()) {
        tracked = new at::Tensor(sub.attr("num_batches_tracked").toTensor());
      }
      f(ctx, nm.name.c_str(), momentum, has, new at::Tensor(sub.attr("running_mean").toTensor()),
        new at::Tensor(sub.attr("running_var").toTensor()), tracked);
    }
  });
}

// Put the BatchNorm layers (as above) in training mode (on = 1) or eval mode (on = 0), leaving
// every other module as it is.
int losscape_set_batchnorm_training(void* module, int on, char* err, size_t errlen) {
  return guard(err, errlen, [&] {
    auto* m = module_of(module);
    for (const auto& nm : m->named_modules()) {
      if (!is_batchnorm(nm.value)) continue;
      torch::jit::Module sub = nm.value;
      sub.train(on != 0);
    }
  });
}

static bool is_tensor(const torch::jit::Value* v) { return v->type()->kind() == c10::TypeKind::TensorType; }

static bool is_none(const torch::jit::Value* v) { return v->type()->kind() == c10::TypeKind::NoneType; }

static bool is_optional_tensor(const torch::jit::Value* v) {
  auto o = v->type()->cast<c10::OptionalType>();
  return o && o->getElementType()->kind() == c10::TypeKind::TensorType;
}

// shift + bias·scale where bias is a tensor, None, or an optional tensor (decided when it runs).
static torch::jit::Value* add_scaled_bias(torch::jit::Graph* g, torch::jit::Value* shift, torch::jit::Value* bias,
                                          torch::jit::Value* scale) {
  using namespace torch::jit;
  if (is_none(bias)) return shift;
  if (is_tensor(bias)) return g->insert(aten::add, {shift, g->insert(aten::mul, {bias, scale})});
  Value* cond = g->insert(aten::__is__, {bias, g->insertConstant(c10::IValue())});
  Node* n = g->insertNode(g->create(prim::If, {cond}, 1));
  n->output()->setType(c10::TensorType::get());
  Block* absent = n->addBlock();
  Block* present = n->addBlock();
  absent->registerOutput(shift);
  {
    WithInsertPoint in(present);
    Value* b = g->insertUncheckedCast(bias, c10::TensorType::get());
    present->registerOutput(g->insert(aten::add, {shift, g->insert(aten::mul, {b, scale})}));
  }
  return n->output();
}

// The layer whose output an eval-mode BatchNorm can be folded into: a convolution (conv1d/2d/3d, or
// a traced graph's _convolution that is not transposed) or a linear layer, whose weight is its
// input 1 and bias (a tensor, None or an optional tensor) its input 2. (Its output must also be
// used by the BatchNorm alone: checked by the caller.)
// A convolution that is not transposed: conv1d/2d/3d, or a traced graph's _convolution whose
// `transposed` is the constant false.
static bool untransposed_convolution(const torch::jit::Node* n) {
  using c10::Symbol;
  static const std::unordered_set<Symbol> plain = {Symbol::aten("conv1d"), Symbol::aten("conv2d"),
                                                   Symbol::aten("conv3d")};
  if (plain.count(n->kind())) return true;
  if (n->kind() != Symbol::aten("_convolution")) return false;
  auto transposed = torch::jit::constant_as<bool>(n->input(6));
  return transposed.has_value() && !*transposed;
}

static bool foldable_layer(const torch::jit::Node* n) {
  using torch::jit::Value;
  if (n->outputs().size() != 1) return false;
  Value* bias = n->input(2);
  if (!is_tensor(n->input(1)) || !(is_tensor(bias) || is_none(bias) || is_optional_tensor(bias))) return false;
  return n->kind() == c10::Symbol::aten("linear") || untransposed_convolution(n);
}


// W·scale along W's first axis (output channels): scale viewed as [-1, 1, ...] where the layer
// fixes W's rank, else (a traced _convolution) by moving that axis last, broadcasting, moving back.
static torch::jit::Value* scaled_rows(torch::jit::Graph* g, const torch::jit::Node* layer, torch::jit::Value* w,
                                      torch::jit::Value* scale) {
  using namespace torch::jit;
  static const std::unordered_map<std::string, int64_t> rank = {
      {"aten::linear", 2}, {"aten::conv1d", 3}, {"aten::conv2d", 4}, {"aten::conv3d", 5}};
  auto r = rank.find(layer->kind().toQualString());
  if (r != rank.end()) {
    std::vector<int64_t> shape(r->second, 1);
    shape[0] = -1;
    return g->insert(aten::mul, {w, g->insert(aten::view, {scale, g->insertConstant(shape)})});
  }
  Value* last = g->insertConstant(-1);
  Value* first = g->insertConstant(0);
  Value* t = g->insert(aten::mul, {g->insert(aten::transpose, {w, first, last}), scale});
  return g->insert(aten::transpose, {t, first, last});
}

// Rewrite the forward graph of a module that only ever runs in eval mode: inline it, read every
// module's `training` flag as false (and propagate that: training-only branches go), then fold
// each BatchNorm (eval mode) whose input comes straight from a convolution or linear layer, with
// tensors for its weight, bias and running statistics, into that layer: scale = γ / sqrt(var +
// eps), W' = W·scale per output channel, b' = β − mean·scale (+ b·scale), computed in the graph
// from the parameters, so that gradients (and their derivatives) reach W, b, γ and β as through
// the original, and only the running statistics are read as data. Returns the number folded.
static int fold_batchnorm(std::shared_ptr<torch::jit::Graph>& graph) {
  using namespace torch::jit;
  Inline(*graph);
  std::vector<Node*> flags;
  find_nodes(graph->block(), [](Node* n) {
    return n->kind() == prim::GetAttr && n->s(attr::name) == "training" &&
           n->output()->type()->kind() == c10::TypeKind::BoolType;
  }, flags);
  for (Node* n : flags) {
    WithInsertPoint at(n);
    n->output()->replaceAllUsesWith(graph->insertConstant(false));
    n->destroy();
  }
  ConstantPropagation(graph);
  EliminateDeadCode(graph);
  std::vector<Node*> bns;
  find_nodes(graph->block(), [](Node* n) { return n->kind() == aten::batch_norm; }, bns);
  int folded = 0;
  for (Node* bn : bns) {
    Node* layer = bn->input(0)->node();
    auto training = constant_as<bool>(bn->input(5));
    if (!training.has_value() || *training) continue;
    if (layer->owningBlock() != bn->owningBlock() || !foldable_layer(layer)) continue;
    if (!is_tensor(bn->input(1)) || !is_tensor(bn->input(2)) || !is_tensor(bn->input(3)) ||
        !is_tensor(bn->input(4))) {
      continue;
    }
    // A rank check on the layer's output (BatchNorm's own) reads the layer's input instead: these
    // layers keep the rank.
    const std::vector<Use> uses = layer->output()->uses();
    for (const Use& u : uses) {
      if (u.user->kind() == aten::dim) u.user->replaceInput(u.offset, layer->input(0));
    }
    if (layer->output()->uses().size() != 1) continue;
    Value *gamma = bn->input(1), *beta = bn->input(2), *mean = bn->input(3), *var = bn->input(4);
    Value* eps = bn->input(7);
    Value *weight = layer->input(1), *bias = layer->input(2);
    WithInsertPoint at(bn);
    Value* scale = graph->insert(aten::rsqrt, {graph->insert(aten::add, {var, eps})});
    scale = graph->insert(aten::mul, {scale, gamma});
    Value* w = scaled_rows(graph.get(), layer, weight, scale);
    Value* shift = graph->insert(aten::sub, {beta, graph->insert(aten::mul, {mean, scale})});
    shift = add_scaled_bias(graph.get(), shift, bias, scale);
    Node* l = graph->insertNode(graph->createClone(layer, [&](Value* v) {
      if (v == weight) return w;
      if (v == bias) return shift;
      return v;
    }));
    l->output()->setType(bn->output()->type());
    bn->output()->replaceAllUsesWith(l->output());
    bn->destroy();
    layer->destroy();
    ++folded;
  }
  EliminateDeadCode(graph);
  return folded;
}

// ---- A convolution for Hessian-vector products -------------------------------------------------
//
// A Hessian-vector product by double backward differentiates each convolution's backward.
// PyTorch's derivative of convolution_backward (_convolution_double_backward) forms the weight
// gradient of its grad-input term as a convolution of transposed tensors (batch and channels
// swapped, the whole feature map as the kernel), with copies into those layouts: on the CPU for
// a ResNet-20 that took about a third of a product. `losscape::conv` computes the same function
// and the same first derivatives, but its backward is two operations whose own derivatives are
// again plain convolutions and convolution_backward calls (oneDNN's kernels):
//   O = conv(I, W) + b;  gI = BI(gO, W) = ∂⟨gO, conv(I, W)⟩/∂I;  gW = BW(I, gO) = ∂⟨gO, conv(I, W)⟩/∂W
//   with adjoint A of gI:  ∂/∂gO = conv(A, W),  ∂/∂W = BW(A, gO)
//   with adjoint B of gW:  ∂/∂I = BI(gO, B),   ∂/∂gO = conv(I, B).
// It supports reverse mode only (no forward-mode tangents): only the Hessian products' clone uses it.
namespace {
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct ConvGeometry {
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups;
  void save(AutogradContext* ctx) const {
    ctx->saved_data["stride"] = stride;
    ctx->saved_data["padding"] = padding;
    ctx->saved_data["dilation"] = dilation;
    ctx->saved_data["groups"] = groups;
  }
  static ConvGeometry load(AutogradContext* ctx) {
    return {ctx->saved_data["stride"].toIntVector(), ctx->saved_data["padding"].toIntVector(),
            ctx->saved_data["dilation"].toIntVector(), ctx->saved_data["groups"].toInt()};
  }
  at::Tensor conv(const at::Tensor& x, const at::Tensor& w, const c10::optional<at::Tensor>& b) const {
    std::vector<int64_t> none(stride.size(), 0);
    return at::convolution(x, w, b, stride, padding, dilation, false, none, groups);
  }
  // BI(gO, w) (input: only its shape and layout are read) or BW(input, gO) (w: only its shape).
  at::Tensor grad_input(const at::Tensor& gO, const at::Tensor& input, const at::Tensor& w) const {
    return std::get<0>(backward(gO, input, w, {true, false, false}));
  }
  at::Tensor grad_weight(const at::Tensor& gO, const at::Tensor& input, const at::Tensor& w) const {
    return std::get<1>(backward(gO, input, w, {false, true, false}));
  }
  std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(const at::Tensor& gO, const at::Tensor& input,
                                                          const at::Tensor& w, std::array<bool, 3> mask) const {
    std::vector<int64_t> none(stride.size(), 0);
    return at::convolution_backward(gO, input, w, c10::nullopt, stride, padding, dilation, false, none, groups, mask);
  }
};

// gI = BI(gO, W); I rides along for its shape (no gradient flows to it from here).
struct ConvGradInput : public torch::autograd::Function<ConvGradInput> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& gO, const at::Tensor& w, const at::Tensor& input,
                            ConvGeometry g) {
    ctx->save_for_backward({gO, w});
    g.save(ctx);
    return g.grad_input(gO, input, w);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &gO = saved[0], &w = saved[1];
    const at::Tensor& a = grads[0];
    auto g = ConvGeometry::load(ctx);
    at::Tensor dgO = ctx->needs_input_grad(0) ? g.conv(a, w, c10::nullopt) : at::Tensor();
    at::Tensor dw = ctx->needs_input_grad(1) ? g.grad_weight(gO, a, w) : at::Tensor();
    return {dgO, dw, at::Tensor(), at::Tensor()};
  }
};

// gW = BW(I, gO); W rides along for its shape.
struct ConvGradWeight : public torch::autograd::Function<ConvGradWeight> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& gO, const at::Tensor& w,
                            ConvGeometry g) {
    ctx->save_for_backward({input, gO});
    g.save(ctx);
    return g.grad_weight(gO, input, w);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &gO = saved[1];
    const at::Tensor& b = grads[0];
    auto g = ConvGeometry::load(ctx);
    at::Tensor dinput = ctx->needs_input_grad(0) ? g.grad_input(gO, input, b) : at::Tensor();
    at::Tensor dgO = ctx->needs_input_grad(1) ? g.conv(input, b, c10::nullopt) : at::Tensor();
    return {dinput, dgO, at::Tensor(), at::Tensor()};
  }
};

// The bias is an optional tensor: an absent one is no autograd input (an undefined at::Tensor
// argument would be one, and fails), and needs_input_grad(2) exists only when it is present.
struct ConvOp : public torch::autograd::Function<ConvOp> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& w,
                            const c10::optional<at::Tensor>& b, ConvGeometry g) {
    ctx->save_for_backward({input, w});
    ctx->saved_data["bias"] = b.has_value() && b->defined();
    g.save(ctx);
    return g.conv(input, w, b);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &w = saved[1];
    const at::Tensor& gO = grads[0];
    auto g = ConvGeometry::load(ctx);
    at::Tensor gi = ctx->needs_input_grad(0) ? ConvGradInput::apply(gO, w, input, g) : at::Tensor();
    at::Tensor gw = ctx->needs_input_grad(1) ? ConvGradWeight::apply(input, gO, w, g) : at::Tensor();
    at::Tensor gb;
    if (ctx->saved_data["bias"].toBool() && ctx->needs_input_grad(2)) {
      std::vector<int64_t> dims{0};
      for (int64_t d = 2; d < gO.dim(); ++d) dims.push_back(d);
      gb = gO.sum(dims);
    }
    return {gi, gw, gb, at::Tensor()};
  }
};

// One value per spatial dimension (a list of one is repeated, as aten::convolution does).
std::vector<int64_t> per_dim(c10::IntArrayRef v, int64_t dims) {
  if (static_cast<int64_t>(v.size()) == dims) return v.vec();
  TORCH_CHECK(v.size() == 1, "a convolution parameter has ", v.size(), " values for ", dims, " dimensions");
  return std::vector<int64_t>(dims, v[0]);
}

at::Tensor losscape_conv(const at::Tensor& input, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                         c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation, int64_t groups) {
  const int64_t dims = weight.dim() - 2;
  ConvGeometry g{per_dim(stride, dims), per_dim(padding, dims), per_dim(dilation, dims), groups};
  c10::optional<at::Tensor> b = bias.has_value() && bias->defined() ? bias : c10::nullopt;
  // An unbatched input (conv2d takes [C, H, W]) as a batch of one.
  if (input.dim() == weight.dim() - 1) return ConvOp::apply(input.unsqueeze(0), weight, b, g).squeeze(0);
  return ConvOp::apply(input, weight, b, g);
}
}  // namespace

TORCH_LIBRARY(losscape, m) {
  m.def("conv(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] dilation, int groups) -> Tensor",
        &losscape_conv);
}

// Every convolution of the graph that is not transposed and has numeric padding (conv1d/2d/3d, a
// traced graph's _convolution) becomes losscape::conv. Returns how many.
static int use_product_convolutions(std::shared_ptr<torch::jit::Graph>& graph) {
  using namespace torch::jit;
  static const c10::Symbol op = c10::Symbol::fromQualString("losscape::conv");
  std::vector<Node*> convs;
  find_nodes(graph->block(), [](Node* n) {
    if (n->outputs().size() != 1 || !untransposed_convolution(n)) return false;
    // conv1d/2d/3d: the overload with numeric padding (not "same"/"valid").
    return n->kind() == c10::Symbol::aten("_convolution") ||
           (n->inputs().size() == 7 && n->input(4)->type()->isSubtypeOf(*c10::ListType::ofInts()));
  }, convs);
  for (Node* n : convs) {
    const bool traced = n->kind() == c10::Symbol::aten("_convolution");
    Value* groups = n->input(traced ? 8 : 6);
    WithInsertPoint at(n);
    Node* c = graph->insertNode(
        graph->create(op, {n->input(0), n->input(1), n->input(2), n->input(3), n->input(4), n->input(5), groups}));
    c->output()->setType(n->output()->type());
    n->output()->replaceAllUsesWith(c->output());
    n->destroy();
  }
  return static_cast<int>(convs.size());
}

// A clone of the module that shares its parameters and buffers (the same tensors) but has its own
// methods, so its own graph executors: the curvature products run it, always unoptimized. With
// `how` & 1 (fold), it is for eval mode only: its forward graph is rewritten by fold_batchnorm
// (*folded counts the BatchNorms folded; -1 when the rewrite failed and the clone is left as it
// was); with `how` & 2 as well, its convolutions then become losscape::conv (*convs counts them),
// for Hessian products by double backward (reverse mode only).
int losscape_module_clone_shared(void* module, int how, void** out, int* folded, int* convs, char* err,
                                 size_t errlen) {
  return guard(err, errlen, [&] {
    auto* m = module_of(module);
    auto clone = std::make_unique<torch::jit::Module>(m->clone(/*inplace=*/true));
    *folded = 0;
    *convs = 0;
    if (how & 1) {
      try {
        auto& fn = torch::jit::toGraphFunction(clone->get_method("forward").function());
        auto graph = fn.graph();
        *folded = fold_batchnorm(graph);
        if (how & 2) *convs = use_product_convolutions(graph);
      } catch (const std::exception&) {
        // A graph these passes cannot rewrite: a fresh clone, unfolded (*folded = -1 says so).
        clone = std::make_unique<torch::jit::Module>(m->clone(/*inplace=*/true));
        *folded = -1;
        *convs = 0;
      }
    }
    *out = clone.release();
  });
}

// Switch the graph executor's optimizations on or off for this thread, reporting whether they were
// on (*was). A function whose executor has optimized keeps its optimized plan whatever this says;
// one that has never run optimized runs its graph as it is.
int losscape_set_graph_optimize(int on, int* was, char* err, size_t errlen) {
  return guard(err, errlen, [&] {
    *was = torch::jit::getGraphExecutorOptimize() ? 1 : 0;
    torch::jit::setGraphExecutorOptimize(on != 0);
  });
}

// Enter a new forward-mode dual level (its index in *level).
int losscape_enter_dual_level(uint64_t* level, char* err, size_t errlen) {
  return guard(err, errlen, [&] { *level = torch::autograd::forward_ad::enter_dual_level(); });
}

// Exit the dual level: every tangent of that level is dropped.
int losscape_exit_dual_level(uint64_t level, char* err, size_t errlen) {
  return guard(err, errlen, [&] { torch::autograd::forward_ad::exit_dual_level(level); });
}

// Give `tensor` the tangent `tangent` at `level` (same shape and dtype).
int losscape_set_tangent(void* tensor, void* tangent, uint64_t level, char* err, size_t errlen) {
  return guard(err, errlen, [&] {
    auto* t = static_cast<at::Tensor*>(tensor);
    auto* d = static_cast<at::Tensor*>(tangent);
    if (!t || !d) throw std::runtime_error("no tensor");
    t->_set_fw_grad(*d, level, /*is_inplace_op=*/false);
  });
}

// The tangent of `tensor` at `level` as a new tensor in *out, or null when it has none.
int losscape_tangent(void* tensor, uint64_t level, void** out, char* err, size_t errlen) {
  return guard(err, errlen, [&] {
    auto* t = static_cast<at::Tensor*>(tensor);
    if (!t) throw std::runtime_error("no tensor");
    const at::Tensor& g = t->_fw_grad(level);
    *out = g.defined() ? new at::Tensor(g) : nullptr;
  });
}

// Raise an out-of-memory error as libtorch's allocator does (for the test of the typed cause).
int losscape_test_oom(char* err, size_t errlen) {
  return guard(err, errlen, [&] { TORCH_CHECK_WITH(OutOfMemoryError, false, "simulated: out of memory"); });
}
}
