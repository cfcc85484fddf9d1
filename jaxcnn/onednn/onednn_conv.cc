// oneDNN's 2-D convolution as three XLA FFI handlers: forward, input gradient, weight
// gradient. jaxcnn/onednn/build.py compiles this file on first use; ffi_conv.py calls it.
//
// Why: XLA:CPU (jaxlib 0.10) runs its own convolutions and copies activations into a
// batch-minor layout for each weight gradient; oneDNN's convolutions (the ones TensorFlow
// and PyTorch use on CPU) read the row-major NHWC buffers as they are and run the AVX-512
// and AMX kernels. Measurements: docs/perf_notes.md, items 23-26.
//
// Layouts are XLA's defaults: activations NHWC, kernels HWIO, both row-major. Only the
// small kernel is copied into oneDNN's blocked layout (and its gradient back), per call.
// Element types: float32 and bfloat16 (operands and result share the type).
//
// Algorithm (the "algorithm" attribute): 0 direct; 1 Winograd F(4x4, 3x3) where oneDNN has
// it (float32 3x3 stride-1 convolutions on AVX-512), else direct. Winograd needs oneDNN's
// blocked activation layout, so its inputs are reordered into per-thread scratch memory
// and its output back to NHWC; on AMD Zen 4 it still took 0.44-0.72x direct's time
// (docs/perf_notes.md, item 34). 2, forward only: the transposed convolution's backward
// data, which computes the same sums (see TransposedGeometry); oneDNN's backward-data
// kernel is the faster one for layers with few output channels (item 75). Stride 1 and
// kernels up to kGatherKernelBytes; direct otherwise.

#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "bfloat16.h"
#include "team.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using jaxcnn::InFlight;
using dnnl::memory;
using tag = dnnl::memory::format_tag;

namespace {

enum class Kind : int64_t { kForward = 0, kInputGrad = 1, kKernelGrad = 2 };
enum class Algorithm : int64_t { kDirect = 0, kWinograd = 1, kTransposed = 2 };

// Kernels up to this size are reordered through a gather table (see GatherTable).
constexpr size_t kGatherKernelBytes = size_t{1} << 20;

// Everything that fixes a primitive: kind, team size, element type, the shapes'
// dimensions and the stride / padding / dilation attributes. oneDNN fixes a primitive's
// thread count when it is created, so each team size has its own.
using Key = std::vector<int64_t>;

struct Geometry {
  memory::dims src, weights, dst, strides, pad_lo, pad_hi, dilates;
  memory::data_type type;
  int threads;
  Algorithm algorithm;
};

// A compiled primitive and the kernel layout it wants (oneDNN's choice, usually blocked).
struct Entry {
  dnnl::primitive conv;
  memory::desc conv_scratchpad;  // its temporary buffer (the calling thread's, see Run)
  memory::desc kernel_desc;      // what the primitive reads / writes
  memory::desc plain_kernel;     // HWIO, XLA's layout
  bool needs_reorder;
  dnnl::reorder to_kernel_layout;  // plain -> kernel_desc (forward, input gradient)
  dnnl::reorder to_plain_layout;   // kernel_desc -> plain (kernel gradient)
  memory::desc reorder_scratchpad;
  // A forward convolution run as the backward data of its transpose (Algorithm 2).
  bool transposed = false;
  // The kernel reorder as a table, for kernels up to kGatherKernelBytes: for each element
  // of the reorder's destination, 1 + the source element it copies (0: padding, zero).
  std::vector<int32_t> kernel_gather;
  // The two activation arguments (src side, dst side) in the layout the primitive wants;
  // NHWC for direct, so no reorder. `*_is_output`: the primitive writes that argument.
  memory::desc src_desc, dst_desc;
  bool src_is_output = false, dst_is_output = false;
  dnnl::reorder src_reorder, dst_reorder;  // XLA's NHWC <-> the primitive's layout
  bool src_needs_reorder = false, dst_needs_reorder = false;
};

// Every primitive gets its scratchpad from the caller. With oneDNN's default
// ("library") scratchpad, Debian's build (DNNL_ENABLE_CONCURRENT_EXEC off) shares one
// buffer per thread, sized when a primitive is created, so a cached primitive run on
// another of XLA's threads, or two runs at once, may write past it or over each other:
// the six concurrent forward passes of test-time augmentation gave logits of 1e31.
// A buffer of at least `bytes` that belongs to the calling thread, grown when needed
// and kept for its next call (allocating per call cost page faults on large ones).
void* ThreadScratchpad(size_t bytes) {
  struct Buffer {
    void* data = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffer;
  if (bytes > buffer.size || buffer.data == nullptr) {
    size_t size = std::max<size_t>((bytes + 63) / 64 * 64, 64);  // aligned_alloc: multiple
    void* data = std::aligned_alloc(64, size);
    if (data == nullptr) throw std::bad_alloc();
    std::free(buffer.data);
    buffer.data = data;
    buffer.size = size;
  }
  return buffer.data;
}

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& Stream() {
  // Execution is synchronous on oneDNN's OpenMP runtime; one stream per calling thread
  // keeps concurrent XLA threads (batch slices) independent.
  thread_local dnnl::stream stream(Engine());
  return stream;
}

// XLA's row-major NHWC activations, as oneDNN sees them.
memory::desc Nhwc(const memory::dims& dims, memory::data_type type) {
  return memory::desc(dims, type, tag::nhwc);
}

// The kernel in whatever layout oneDNN prefers for these shapes.
memory::desc AnyKernel(const Geometry& g) { return memory::desc(g.weights, g.type, tag::any); }

// Direct convolutions read and write XLA's NHWC in place; Winograd picks its own layout.
memory::desc Activation(const memory::dims& dims, const Geometry& g) {
  return memory::desc(dims, g.type, g.algorithm == Algorithm::kWinograd ? tag::any : tag::nhwc);
}

dnnl::algorithm AlgorithmOf(const Geometry& g) {
  return g.algorithm == Algorithm::kWinograd ? dnnl::algorithm::convolution_winograd
                                             : dnnl::algorithm::convolution_direct;
}

// oneDNN 3 builds a primitive descriptor from the engine and the shapes directly; oneDNN
// 2 (Debian 12's libdnnl-dev) from an operation descriptor first.
dnnl::convolution_forward::primitive_desc ForwardHint(const Geometry& g) {
#if DNNL_VERSION_MAJOR >= 3
  return dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, AlgorithmOf(g), Activation(g.src, g),
      AnyKernel(g), Activation(g.dst, g), g.strides, g.dilates, g.pad_lo, g.pad_hi,
      UserScratchpad());
#else
  dnnl::convolution_forward::desc desc(
      dnnl::prop_kind::forward_training, AlgorithmOf(g), Activation(g.src, g),
      AnyKernel(g), Activation(g.dst, g), g.strides, g.dilates, g.pad_lo, g.pad_hi);
  return dnnl::convolution_forward::primitive_desc(desc, UserScratchpad(), Engine());
#endif
}

template <typename Primitive>
typename Primitive::primitive_desc BackwardDesc(
    const Geometry& g, const dnnl::convolution_forward::primitive_desc& hint) {
#if DNNL_VERSION_MAJOR >= 3
  return typename Primitive::primitive_desc(Engine(), AlgorithmOf(g), Activation(g.src, g),
                                            AnyKernel(g), Activation(g.dst, g), g.strides,
                                            g.dilates, g.pad_lo, g.pad_hi, hint,
                                            UserScratchpad());
#else
  typename Primitive::desc desc(AlgorithmOf(g), Activation(g.src, g), AnyKernel(g),
                                Activation(g.dst, g), g.strides, g.dilates, g.pad_lo,
                                g.pad_hi);
  return typename Primitive::primitive_desc(desc, UserScratchpad(), Engine(), hint);
#endif
}

// A reorder between XLA's NHWC buffer and `desc`, in the direction the data flows.
void ActivationReorder(const memory::desc& desc, const memory::desc& nhwc, bool is_output,
                       dnnl::reorder& reorder, bool& needed, memory::desc& scratchpad) {
  needed = desc != nhwc;
  if (!needed) return;
  dnnl::reorder::primitive_desc pd(Engine(), is_output ? desc : nhwc, Engine(),
                                   is_output ? nhwc : desc, UserScratchpad());
  reorder = dnnl::reorder(pd);
  if (pd.scratchpad_desc().get_size() > scratchpad.get_size()) scratchpad = pd.scratchpad_desc();
}

// oneDNN's reorder of a kernel (HWIO <-> its blocked, VNNI-paired layouts) spends
// 0.07-0.20 ms on 74-262 KB (docs/perf_notes.md, items 54-55): for small kernels the
// binding copies through a table instead. The table is learned from that very reorder,
// run once on index patterns: each source element holds its position + 1, one 8-bit
// digit per pass in bfloat16 (exact up to 256), all of it in one pass in float32, and
// each destination element then names its source. So it is oneDNN's permutation by
// construction, padding (0) included.
std::vector<int32_t> GatherTable(dnnl::reorder& reorder, const memory::desc& from,
                                 const memory::desc& to, const memory::desc& scratchpad,
                                 memory::data_type type) {
  bool half = type == memory::data_type::bf16;
  size_t element = half ? 2 : 4;
  size_t sources = from.get_size() / element, targets = to.get_size() / element;
  std::vector<int32_t> table(targets, 0);
  auto& engine = Engine();
  memory src(from, engine), dst(to, engine);
  memory pad(scratchpad, engine, ThreadScratchpad(scratchpad.get_size()));
  int bits = half ? 8 : 24;
  int64_t mask = (int64_t{1} << bits) - 1;
  for (int shift = 0; (static_cast<int64_t>(sources) >> shift) > 0; shift += bits) {
    for (size_t k = 0; k < sources; ++k) {
      float digit = static_cast<float>(((static_cast<int64_t>(k) + 1) >> shift) & mask);
      if (half) {
        jaxcnn::Store(digit, static_cast<uint16_t*>(src.get_data_handle()) + k);
      } else {
        static_cast<float*>(src.get_data_handle())[k] = digit;
      }
    }
    reorder.execute(Stream(), {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst},
                               {DNNL_ARG_SCRATCHPAD, pad}});
    Stream().wait();
    for (size_t p = 0; p < targets; ++p) {
      float digit = half ? jaxcnn::Load(static_cast<uint16_t*>(dst.get_data_handle())[p])
                         : static_cast<float*>(dst.get_data_handle())[p];
      table[p] |= static_cast<int32_t>(digit) << shift;
    }
  }
  return table;
}

// to[p] = from[table[p] - 1], or zero where table[p] is 0: a bit-for-bit copy.
template <typename T>
void Gather(const std::vector<int32_t>& table, const void* from, void* to) {
  const T* src = static_cast<const T*>(from);
  T* dst = static_cast<T*>(to);
  for (size_t p = 0; p < table.size(); ++p) {
    int32_t k = table[p];
    dst[p] = k ? src[k - 1] : T{0};
  }
}

// A stride-1 convolution y = conv(x, W) is the backward data of its transpose, the
// convolution from y's shape to x's with kernel W'[u', v', o, c] = W[K-1-u', K-1-v', c, o]
// (taps flipped, channels exchanged) and padding lo' = K-1-lo: the forward pass sums
// x[n, i + u - lo, j + v - lo, c] W[u, v, c, o] over u, v, c, and backward data, fed x as
// its output gradient, x[n, i - u' + lo', j - v' + lo', c] W'[u', v', o, c] over u', v',
// c, the same terms (u = K-1-u'). K is the dilated extent; one axis written.
Geometry TransposedGeometry(const Geometry& g) {
  Geometry t = g;
  t.src = g.dst;  // the transposed convolution's input has y's shape, its output x's
  t.dst = g.src;
  t.weights = {g.weights[1], g.weights[0], g.weights[2], g.weights[3]};  // (C, O, KH, KW)
  for (int axis = 0; axis < 2; ++axis) {
    int64_t extent = (g.weights[2 + axis] - 1) * (g.dilates[axis] + 1) + 1;
    t.pad_lo[axis] = extent - 1 - g.pad_lo[axis];
    t.pad_hi[axis] = extent - 1 - g.pad_hi[axis];
  }
  t.algorithm = Algorithm::kDirect;
  return t;
}

// The forward pass as the transposed convolution's backward data (Algorithm 2). Its
// kernel copy is BuildFor's gather table, learned from oneDNN's reorder of XLA's HWIO
// buffer read as the transposed kernel's (C, O, KH, KW); FlipTaps then flips the taps.
void SetTransposedForward(const Geometry& g, Entry& entry) {
  if (g.strides[0] != 1 || g.strides[1] != 1) throw std::invalid_argument("strided");
  int64_t out = g.weights[0], in = g.weights[1], kw = g.weights[3];
  // XLA's HWIO buffer, element (u, v, c, o) at ((u * KW + v) * C + c) * O + o.
  Geometry t = TransposedGeometry(g);
  entry.plain_kernel = memory::desc(t.weights, g.type, {out, 1, kw * in * out, in * out});
  // The flip needs the gather table, which BuildFor makes only up to this size.
  if (entry.plain_kernel.get_size() > kGatherKernelBytes) throw std::invalid_argument("big");
  auto pd = BackwardDesc<dnnl::convolution_backward_data>(t, ForwardHint(t));
  entry.transposed = true;
  entry.conv = dnnl::convolution_backward_data(pd);
  entry.kernel_desc = pd.weights_desc();
  entry.conv_scratchpad = pd.scratchpad_desc();
  entry.src_desc = pd.diff_dst_desc();  // x
  entry.dst_desc = pd.diff_src_desc();  // y
  entry.dst_is_output = true;
}

// Each source position (u, v, c, o) of a gather table over an HWIO kernel replaced by
// (KH-1-u, KW-1-v, c, o); padding (0) stays.
void FlipTaps(const Geometry& g, std::vector<int32_t>& table) {
  int64_t kh = g.weights[2], kw = g.weights[3], tap = g.weights[0] * g.weights[1];
  for (auto& source : table) {
    if (source == 0) continue;
    int64_t k = source - 1, u = k / (kw * tap), v = k / tap % kw;
    source = static_cast<int32_t>(((kh - 1 - u) * kw + (kw - 1 - v)) * tap + k % tap + 1);
  }
}

std::shared_ptr<Entry> BuildFor(Kind kind, const Geometry& g) {
  auto entry = std::make_shared<Entry>();
  entry->plain_kernel = memory::desc(g.weights, g.type, tag::hwio);
  switch (kind) {
    case Kind::kForward: {
      if (g.algorithm == Algorithm::kTransposed) {  // no direct forward primitive to hint
        SetTransposedForward(g, *entry);
        break;
      }
      auto pd = ForwardHint(g);
      entry->conv = dnnl::convolution_forward(pd);
      entry->kernel_desc = pd.weights_desc();
      entry->conv_scratchpad = pd.scratchpad_desc();
      entry->src_desc = pd.src_desc();
      entry->dst_desc = pd.dst_desc();
      entry->dst_is_output = true;
      break;
    }
    case Kind::kInputGrad: {
      auto pd = BackwardDesc<dnnl::convolution_backward_data>(g, ForwardHint(g));
      entry->conv = dnnl::convolution_backward_data(pd);
      entry->kernel_desc = pd.weights_desc();
      entry->conv_scratchpad = pd.scratchpad_desc();
      entry->src_desc = pd.diff_src_desc();
      entry->dst_desc = pd.diff_dst_desc();
      entry->src_is_output = true;
      break;
    }
    case Kind::kKernelGrad: {
      auto pd = BackwardDesc<dnnl::convolution_backward_weights>(g, ForwardHint(g));
      entry->conv = dnnl::convolution_backward_weights(pd);
      entry->kernel_desc = pd.diff_weights_desc();
      entry->conv_scratchpad = pd.scratchpad_desc();
      entry->src_desc = pd.src_desc();
      entry->dst_desc = pd.diff_dst_desc();
      break;
    }
  }
  // The transposed forward copies through its table even where the layouts agree (the flip).
  entry->needs_reorder = entry->transposed || entry->kernel_desc != entry->plain_kernel;
  if (entry->needs_reorder) {
    bool to_plain = kind == Kind::kKernelGrad;
    dnnl::reorder::primitive_desc pd(
        Engine(), to_plain ? entry->kernel_desc : entry->plain_kernel, Engine(),
        to_plain ? entry->plain_kernel : entry->kernel_desc, UserScratchpad());
    auto& reorder = to_plain ? entry->to_plain_layout : entry->to_kernel_layout;
    reorder = dnnl::reorder(pd);
    entry->reorder_scratchpad = pd.scratchpad_desc();
    if (entry->plain_kernel.get_size() <= kGatherKernelBytes) {
      entry->kernel_gather = GatherTable(reorder, pd.src_desc(), pd.dst_desc(),
                                         pd.scratchpad_desc(), g.type);
    }
  }
  if (entry->transposed) FlipTaps(g, entry->kernel_gather);
  ActivationReorder(entry->src_desc, Nhwc(g.src, g.type), entry->src_is_output,
                    entry->src_reorder, entry->src_needs_reorder, entry->reorder_scratchpad);
  ActivationReorder(entry->dst_desc, Nhwc(g.dst, g.type), entry->dst_is_output,
                    entry->dst_reorder, entry->dst_needs_reorder, entry->reorder_scratchpad);
  return entry;
}

// Winograd or the transposed forward where oneDNN implements it for this call, else direct.
std::shared_ptr<Entry> Build(Kind kind, Geometry g) {
  if (g.algorithm == Algorithm::kTransposed && kind != Kind::kForward) {
    g.algorithm = Algorithm::kDirect;
  }
  if (g.algorithm != Algorithm::kDirect) {
    try {
      return BuildFor(kind, g);
    } catch (const dnnl::error&) {
      g.algorithm = Algorithm::kDirect;
    } catch (const std::invalid_argument&) {  // SetTransposedForward: strided, or too big
      g.algorithm = Algorithm::kDirect;
    }
  }
  return BuildFor(kind, g);
}

std::shared_ptr<Entry> Lookup(Kind kind, const Geometry& g) {
  Key key = {static_cast<int64_t>(kind), static_cast<int64_t>(g.type), g.threads,
             static_cast<int64_t>(g.algorithm)};
  for (const auto* part :
       {&g.src, &g.weights, &g.dst, &g.strides, &g.pad_lo, &g.pad_hi, &g.dilates}) {
    key.insert(key.end(), part->begin(), part->end());
  }
  static std::mutex mutex;
  static std::map<Key, std::shared_ptr<Entry>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto found = cache.find(key);
  if (found != cache.end()) return found->second;
  auto entry = Build(kind, g);
  cache.emplace(key, entry);
  return entry;
}

// NHWC shape (N, H, W, C) -> oneDNN's logical (N, C, H, W); HWIO -> (O, I, H, W).
memory::dims ActivationDims(ffi::AnyBuffer::Dimensions d) { return {d[0], d[3], d[1], d[2]}; }
memory::dims KernelDims(ffi::AnyBuffer::Dimensions d) { return {d[3], d[2], d[0], d[1]}; }

ffi::Error Run(Kind kind, ffi::AnyBuffer src, ffi::AnyBuffer kernel, ffi::AnyBuffer dst,
               ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding,
               ffi::Span<const int64_t> dilation, int64_t algorithm) {
  auto type = src.element_type();
  if (type != kernel.element_type() || type != dst.element_type()) {
    return ffi::Error::InvalidArgument("jaxcnn oneDNN conv: operands differ in element type");
  }
  if (type != ffi::DataType::F32 && type != ffi::DataType::BF16) {
    return ffi::Error::InvalidArgument("jaxcnn oneDNN conv: only float32 and bfloat16");
  }
  if (src.dimensions().size() != 4 || kernel.dimensions().size() != 4 ||
      dst.dimensions().size() != 4 || strides.size() != 2 || padding.size() != 4 ||
      dilation.size() != 2) {
    return ffi::Error::InvalidArgument("jaxcnn oneDNN conv: expects a 2-D NHWC/HWIO conv");
  }
  Geometry g;
  g.type = type == ffi::DataType::F32 ? memory::data_type::f32 : memory::data_type::bf16;
  g.src = ActivationDims(src.dimensions());
  g.weights = KernelDims(kernel.dimensions());
  g.dst = ActivationDims(dst.dimensions());
  g.strides = {strides[0], strides[1]};
  g.pad_lo = {padding[0], padding[2]};
  g.pad_hi = {padding[1], padding[3]};
  // oneDNN counts dilation from 0 (no dilation), XLA from 1.
  g.dilates = {dilation[0] - 1, dilation[1] - 1};
  if (algorithm < 0 || algorithm > 2) {
    return ffi::Error::InvalidArgument("jaxcnn oneDNN conv: algorithm must be 0, 1 or 2");
  }
  g.algorithm = static_cast<Algorithm>(algorithm);
  InFlight team;
  g.threads = team.threads;
  try {
    auto entry = Lookup(kind, g);
    auto& engine = Engine();
    auto& stream = Stream();
    memory src_mem(Nhwc(g.src, g.type), engine, src.untyped_data());
    memory dst_mem(Nhwc(g.dst, g.type), engine, dst.untyped_data());
    memory plain(entry->plain_kernel, engine, kernel.untyped_data());
    memory blocked = entry->needs_reorder ? memory(entry->kernel_desc, engine) : plain;
    // The calling thread's scratchpad: one call at a time per thread, so it is this
    // call's alone; the reorders and the convolution run one after the other on it.
    // Behind the scratchpads: the activations in the primitive's layout, if not NHWC.
    auto aligned = [](size_t bytes) { return (bytes + 63) / 64 * 64; };
    size_t pad_bytes = aligned(std::max(entry->conv_scratchpad.get_size(),
                                        entry->reorder_scratchpad.get_size()));
    size_t src_bytes = entry->src_needs_reorder ? aligned(entry->src_desc.get_size()) : 0;
    size_t dst_bytes = entry->dst_needs_reorder ? aligned(entry->dst_desc.get_size()) : 0;
    auto* scratch = static_cast<char*>(ThreadScratchpad(pad_bytes + src_bytes + dst_bytes));
    memory conv_scratch(entry->conv_scratchpad, engine, scratch);
    memory reorder_scratch(entry->reorder_scratchpad, engine, scratch);
    auto reorder = [&](dnnl::reorder& primitive, memory& from, memory& to) {
      primitive.execute(stream, {{DNNL_ARG_FROM, from},
                                 {DNNL_ARG_TO, to},
                                 {DNNL_ARG_SCRATCHPAD, reorder_scratch}});
    };
    auto kernel_reorder = [&](dnnl::reorder& primitive, memory& from, memory& to) {
      if (entry->kernel_gather.empty()) return reorder(primitive, from, to);
      if (g.type == memory::data_type::bf16) {
        Gather<uint16_t>(entry->kernel_gather, from.get_data_handle(), to.get_data_handle());
      } else {
        Gather<uint32_t>(entry->kernel_gather, from.get_data_handle(), to.get_data_handle());
      }
    };
    memory user_src = src_mem, user_dst = dst_mem;
    if (entry->src_needs_reorder) {
      src_mem = memory(entry->src_desc, engine, scratch + pad_bytes);
      if (!entry->src_is_output) reorder(entry->src_reorder, user_src, src_mem);
    }
    if (entry->dst_needs_reorder) {
      dst_mem = memory(entry->dst_desc, engine, scratch + pad_bytes + src_bytes);
      if (!entry->dst_is_output) reorder(entry->dst_reorder, user_dst, dst_mem);
    }
    switch (kind) {
      case Kind::kForward:
        if (entry->needs_reorder) kernel_reorder(entry->to_kernel_layout, plain, blocked);
        if (entry->transposed) {  // y as the transposed convolution's input gradient
          entry->conv.execute(stream, {{DNNL_ARG_DIFF_SRC, dst_mem},
                                       {DNNL_ARG_WEIGHTS, blocked},
                                       {DNNL_ARG_DIFF_DST, src_mem},
                                       {DNNL_ARG_SCRATCHPAD, conv_scratch}});
          break;
        }
        entry->conv.execute(stream, {{DNNL_ARG_SRC, src_mem},
                                     {DNNL_ARG_WEIGHTS, blocked},
                                     {DNNL_ARG_DST, dst_mem},
                                     {DNNL_ARG_SCRATCHPAD, conv_scratch}});
        break;
      case Kind::kInputGrad:
        if (entry->needs_reorder) kernel_reorder(entry->to_kernel_layout, plain, blocked);
        entry->conv.execute(stream, {{DNNL_ARG_DIFF_SRC, src_mem},
                                     {DNNL_ARG_WEIGHTS, blocked},
                                     {DNNL_ARG_DIFF_DST, dst_mem},
                                     {DNNL_ARG_SCRATCHPAD, conv_scratch}});
        break;
      case Kind::kKernelGrad:
        entry->conv.execute(stream, {{DNNL_ARG_SRC, src_mem},
                                     {DNNL_ARG_DIFF_WEIGHTS, blocked},
                                     {DNNL_ARG_DIFF_DST, dst_mem},
                                     {DNNL_ARG_SCRATCHPAD, conv_scratch}});
        if (entry->needs_reorder) kernel_reorder(entry->to_plain_layout, blocked, plain);
        break;
    }
    if (entry->src_needs_reorder && entry->src_is_output) {
      reorder(entry->src_reorder, src_mem, user_src);
    }
    if (entry->dst_needs_reorder && entry->dst_is_output) {
      reorder(entry->dst_reorder, dst_mem, user_dst);
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("jaxcnn oneDNN conv: ") + e.what());
  } catch (const std::bad_alloc&) {
    return ffi::Error::Internal("jaxcnn oneDNN conv: out of memory for the scratchpad");
  }
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::AnyBuffer x, ffi::AnyBuffer kernel, ffi::Result<ffi::AnyBuffer> y,
                   ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding,
                   ffi::Span<const int64_t> dilation, int64_t algorithm) {
  return Run(Kind::kForward, x, kernel, *y, strides, padding, dilation, algorithm);
}

ffi::Error InputGrad(ffi::AnyBuffer dy, ffi::AnyBuffer kernel, ffi::Result<ffi::AnyBuffer> dx,
                     ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding,
                     ffi::Span<const int64_t> dilation, int64_t algorithm) {
  return Run(Kind::kInputGrad, *dx, kernel, dy, strides, padding, dilation, algorithm);
}

ffi::Error KernelGrad(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dkernel,
                      ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding,
                      ffi::Span<const int64_t> dilation, int64_t algorithm) {
  return Run(Kind::kKernelGrad, x, *dkernel, dy, strides, padding, dilation, algorithm);
}

}  // namespace

#define JAXCNN_CONV_BINDING                                 \
  ffi::Ffi::Bind()                                          \
      .Arg<ffi::AnyBuffer>()                                \
      .Arg<ffi::AnyBuffer>()                                \
      .Ret<ffi::AnyBuffer>()                                \
      .Attr<ffi::Span<const int64_t>>("window_strides")     \
      .Attr<ffi::Span<const int64_t>>("padding")            \
      .Attr<ffi::Span<const int64_t>>("rhs_dilation")       \
      .Attr<int64_t>("algorithm")

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnOnednnConvForward, Forward, JAXCNN_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnOnednnConvInputGrad, InputGrad,
                              JAXCNN_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnOnednnConvKernelGrad, KernelGrad,
                              JAXCNN_CONV_BINDING);

// The oneDNN version this library runs, as major * 10000 + minor * 100 + patch.
extern "C" int64_t JaxcnnOnednnVersion() {
  const dnnl_version_t* v = dnnl_version();
  return v->major * 10000 + v->minor * 100 + v->patch;
}

// 1 when oneDNN can create bfloat16 convolutions (forward and both gradients) on this
// CPU, else 0. Its bfloat16 kernels need AVX-512 (avx512_core) or AVX2-VNNI-2; on an
// AVX2-only CPU (AMD Zen 3) it has none, not even reference ones, and creating the
// primitive fails. build.py asks once per library, right after loading.
extern "C" int64_t JaxcnnOnednnMakesBfloat16() {
  Geometry g{{1, 16, 8, 8}, {16, 16, 3, 3}, {1, 16, 8, 8}, {1, 1}, {1, 1}, {1, 1},
             {0, 0},        memory::data_type::bf16,     1,  Algorithm::kDirect};
  try {
    auto hint = ForwardHint(g);
    BackwardDesc<dnnl::convolution_backward_data>(g, hint);
    BackwardDesc<dnnl::convolution_backward_weights>(g, hint);
    return 1;
  } catch (const dnnl::error&) {
    return 0;
  }
}

// The overlap policy (0 "wait", 1 "single"); build.py calls it once, right after loading.
extern "C" void JaxcnnOnednnSetOverlap(int64_t single) {
  jaxcnn::overlap_single.store(single != 0);
}
