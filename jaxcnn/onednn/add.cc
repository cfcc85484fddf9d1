// The elementwise sum of two arrays of one shape and dtype (float32 or bfloat16) as an
// XLA FFI handler, on the whole OpenMP team. jaxcnn/onednn/build.py compiles it with
// onednn_conv.cc; jaxcnn/fast_ops.py's fork calls it (through ffi_add.py) for the
// gradient of a value that two layers read.
//
// Why: a residual block's input feeds its first convolution and its shortcut, so its
// gradient is the sum of two. XLA:CPU adds them as one fusion on one thread: in
// ResNet-20's bfloat16 step about 0.55 ms for each of the first stage's 128 x 32 x 32 x 16
// maps (docs/perf_notes.md, item 67). bfloat16 is added in float and rounded to nearest
// even, as XLA does, so the sum is XLA's bit for bit.

#include <algorithm>
#include <cstdint>

#include "bfloat16.h"
#include "team.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Elements per task: large enough that a task's overhead is nothing against it, small
// enough that two threads share even the smallest maps evenly.
constexpr int64_t kChunk = 8192;

template <typename T>
void Add(const T* __restrict a, const T* __restrict b, int64_t n, int threads,
         T* __restrict out) {
  int64_t chunks = (n + kChunk - 1) / kChunk;
  jaxcnn::EachRow(chunks, threads, [&](int, int64_t chunk) {
    int64_t stop = std::min(n, (chunk + 1) * kChunk);
    for (int64_t i = chunk * kChunk; i < stop; ++i) {
      jaxcnn::Store(jaxcnn::Load(a[i]) + jaxcnn::Load(b[i]), out + i);
    }
  });
}

ffi::Error AddHandler(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out) {
  auto type = a.element_type();
  if (!jaxcnn::Floating(type) || b.element_type() != type || out->element_type() != type) {
    return ffi::Error::InvalidArgument("jaxcnn add: a, b and out must share a float dtype");
  }
  int64_t n = static_cast<int64_t>(a.element_count());
  if (static_cast<int64_t>(b.element_count()) != n ||
      static_cast<int64_t>(out->element_count()) != n) {
    return ffi::Error::InvalidArgument("jaxcnn add: a, b and out must have as many elements");
  }
  if (n == 0) return ffi::Error::Success();
  jaxcnn::InFlight team;
  jaxcnn::Dispatch(type, type, [&](auto t, auto) {
    using T = decltype(t);
    Add(static_cast<const T*>(a.untyped_data()), static_cast<const T*>(b.untyped_data()), n,
        team.threads, static_cast<T*>(out->untyped_data()));
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnAdd, AddHandler,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());
