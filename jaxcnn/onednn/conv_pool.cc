// A stride-1 convolution over few input channels followed by a tiling max pool, as two XLA
// FFI handlers: the forward pass (pooled values and which window position won) and the
// kernel's gradient. jaxcnn/onednn/build.py compiles this file with the others;
// jaxcnn/onednn/ffi_conv_pool.py calls it, when jaxcnn/conv_pool.py's _native_applies
// says so.
//
// Why: the first layer of an MNIST or CIFAR net (1 or 3 channels in, 32 out, 3x3, then a
// 2x2 max pool) writes a conv output 4x the size of what the pool keeps, 11 MB for the
// MNIST net at batch 128, and reads it again to pool it and twice more in the backward
// pass (which element won, and scattering the gradient there). On 2 cores those passes
// took about as long as the convolution itself (docs/perf_notes.md, item 42). Here each
// pooled output is computed in registers from its window's conv outputs and only the
// pooled map and a one-byte window index are written.
//
// Shapes (channels-last; x already padded, so the convolution is VALID):
//   x (N, H, W, C), kernel (KH, KW, C, F), window (PH, PW)
//   conv output (N, H - KH + 1, W - KW + 1, F); pooled (N, OH, OW, F) with
//   OH = (H - KH + 1) / PH (floor: windows that do not fit are dropped), OW likewise
//   y[n, i, j, f] = max over window positions q = (a, b) of
//                   sum_{u, v, c} x[n, i PH + a + u, j PW + b + v, c] kernel[u, v, c, f]
//   arg[n, i, j, f] = the first q (row-major, q = a PW + b) reaching that maximum
//   dkernel[u, v, c, f] = sum_{n, i, j} dy[n, i, j, f] x[n, i PH + a + u, j PW + b + v, c]
//                         with (a, b) = arg[n, i, j, f]
// Sums are in float (a conv output: registers; dkernel: float within a row of pooled
// outputs, then double). x is float32 (a first layer's input is small, and each value is
// read at every tap: the caller casts it once); kernel, y, dy and dkernel are float32 or
// bfloat16.

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "bfloat16.h"
#include "team.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using jaxcnn::Floating;
using jaxcnn::Load;
using jaxcnn::Store;

// Output channels are handled in blocks of kLanes, one Vec: one vector register of floats
// (GCC's vector extension), 16 lanes with AVX-512, 8 without. As two AVX2 registers a
// 16-lane Vec made a strip's 8 sums take all 16 registers and spill (docs/perf_notes.md,
// item 84). The kernel is copied once per call into float rows padded to whole blocks.
#ifdef __AVX512F__
constexpr int64_t kLanes = 16;
#else
constexpr int64_t kLanes = 8;
#endif
using Vec = float __attribute__((vector_size(kLanes * sizeof(float))));
using Mask = int32_t __attribute__((vector_size(kLanes * sizeof(int32_t))));

inline Vec LoadVec(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void StoreVec(float* p, Vec v) { std::memcpy(p, &v, sizeof v); }

// A whole block of kLanes elements of an array of float or bfloat16 (the values stored
// are already bfloat16-exact: Rounded's), and of the one-byte window positions.
using Halves = uint16_t __attribute__((vector_size(kLanes * sizeof(uint16_t))));
using Bytes = uint8_t __attribute__((vector_size(kLanes)));
inline Vec LoadLanes(const float* p) { return LoadVec(p); }
inline Vec LoadLanes(const uint16_t* p) {
  Halves h;
  std::memcpy(&h, p, sizeof h);
  Mask bits = __builtin_convertvector(h, Mask) << 16;
  Vec v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}
inline void StoreLanes(Vec v, float* p) { StoreVec(p, v); }
inline void StoreLanes(Vec v, uint16_t* p) {
  Mask bits;
  std::memcpy(&bits, &v, sizeof bits);
  Halves h = __builtin_convertvector(bits >> 16, Halves);  // the high halves
  std::memcpy(p, &h, sizeof h);
}
inline Mask LoadBytes(const uint8_t* p) {
  Bytes b;
  std::memcpy(&b, p, sizeof b);
  return __builtin_convertvector(b, Mask);
}
inline void StoreBytes(Mask m, uint8_t* p) {
  Bytes b = __builtin_convertvector(m, Bytes);
  std::memcpy(p, &b, sizeof b);
}

// v's lanes rounded to T and back: the values a T output holds (round to nearest even,
// as Store; NaN stays NaN).
template <typename T>
inline Vec Rounded(Vec v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    Mask bits;
    std::memcpy(&bits, &v, sizeof bits);
    Mask odd = (bits >> 16) & 1;
    Mask rounded = (bits + 0x7fff + odd) & static_cast<int32_t>(0xffff0000u);
    // A NaN keeps its sign and gets the quiet bit, so that its high half is a NaN too.
    Mask nan = bits | 0x00400000;
    Vec out, quiet;
    std::memcpy(&out, &rounded, sizeof out);
    std::memcpy(&quiet, &nan, sizeof quiet);
    return v != v ? quiet : out;
  }
}

struct Geometry {
  int64_t n, h, w, c, kh, kw, f, ph, pw, oh, ow;
  int64_t taps() const { return kh * kw * c; }
  int64_t padded_f() const { return (f + kLanes - 1) / kLanes * kLanes; }
  int64_t positions() const { return ph * pw; }
};

template <typename T>
std::vector<float> PaddedKernel(const T* kernel, const Geometry& g) {
  int64_t fp = g.padded_f();
  std::vector<float> out(static_cast<size_t>(g.taps() * fp), 0.0f);
  for (int64_t t = 0; t < g.taps(); ++t) {
    for (int64_t f = 0; f < g.f; ++f) out[t * fp + f] = Load(kernel[t * g.f + f]);
  }
  return out;
}

// Calls body(t, n, i) for the rows (n, i) of the pooled map, shared out over the team's
// threads (t: the thread's number in the team).
template <typename Body>
void EachPooledRow(const Geometry& g, int threads, Body&& body) {
  jaxcnn::EachRow(g.n * g.oh, threads, [&](int t, int64_t r) { body(t, r / g.oh, r % g.oh); });
}

// The most taps (KH * KW * C) a kernel may have: a first layer's with room to spare. The
// kernel is written for few taps (each thread keeps one vector of kernel-gradient sums
// per tap, and one broadcast load per tap and output); wider layers belong to oneDNN.
constexpr int64_t kMaxTaps = 128;

// The loops below are compiled for the shapes of first layers (3x3 or 5x5, 1-4 channels):
// with the kernel's shape known, every loop over the taps unrolls. Any other shape runs
// the same code with the sizes read at run time (Dims<0, 0, 0>).
template <int64_t KH, int64_t KW, int64_t C>
struct Dims {
  static constexpr bool kFixed = KH > 0;
  const int64_t kh, kw, c;
  explicit Dims(const Geometry& g)
      : kh(kFixed ? KH : g.kh), kw(kFixed ? KW : g.kw), c(kFixed ? C : g.c) {}
  int64_t taps() const { return kh * kw * c; }
};

// Conv outputs are computed in strips of kStrip neighbours along a conv output row: each
// weight vector, loaded once, serves the strip's kStrip independent sums (enough chains
// to keep both FMA units busy), and each input value is one broadcast load per FMA.
constexpr int64_t kStrip = 8;

// For every tap k = (u, v, c) of the kernel: each(k, p) with p pointing at the input
// value that tap reads for the strip's first pixel, whose receptive field starts at `in`
// (the strip's pixel s reads p[s * d.c]).
template <typename D, typename Each>
inline void ForTaps(const D& d, const Geometry& g, const float* in, Each&& each) {
  for (int64_t u = 0; u < d.kh; ++u) {
    for (int64_t v = 0; v < d.kw; ++v) {
      for (int64_t c = 0; c < d.c; ++c) each((u * d.kw + v) * d.c + c, in + (u * g.w + v) * d.c + c);
    }
  }
}

// The input pixel where conv output (n, row, col)'s receptive field starts.
inline int64_t Pixel(const Geometry& g, int64_t n, int64_t row, int64_t col) {
  return ((n * g.h + row) * g.w + col) * g.c;
}

// sums[s] = the conv output at the strip's pixel s (S of them, from `in`), for the block
// of output channels whose padded kernel rows start at w.
template <int64_t S, typename D>
inline void ConvStrip(const D& d, const Geometry& g, const float* in, const float* w, Vec* sums) {
  int64_t fp = g.padded_f();
  for (int64_t s = 0; s < S; ++s) sums[s] = Vec{};
  ForTaps(d, g, in, [&](int64_t k, const float* p) {
    Vec weight = LoadVec(w + k * fp);
    for (int64_t s = 0; s < S; ++s) sums[s] += p[s * d.c] * weight;
  });
}

// row[k] += sum over the strip's S pixels s of input(s, tap k) * grads[s], every tap k.
template <int64_t S, typename D>
inline void KernelGradStrip(const D& d, const Geometry& g, const float* in, const Vec* grads,
                            Vec* row) {
  ForTaps(d, g, in, [&](int64_t k, const float* p) {
    Vec even = {}, odd = {};  // two chains, half as long
    for (int64_t s = 0; s + 1 < S; s += 2) {
      even += p[s * d.c] * grads[s];
      odd += p[(s + 1) * d.c] * grads[s + 1];
    }
    if (S % 2) even += p[(S - 1) * d.c] * grads[S - 1];
    row[k] += even + odd;
  });
}

// Calls strip(S, col) over the conv output columns [0, OW * PW) that pools read: strips of
// kStrip, then single pixels.
template <typename Strip>
inline void EachStrip(const Geometry& g, Strip&& strip) {
  int64_t cols = g.ow * g.pw, col = 0;
  for (; col + kStrip <= cols; col += kStrip) strip(std::integral_constant<int64_t, kStrip>{}, col);
  for (; col < cols; ++col) strip(std::integral_constant<int64_t, 1>{}, col);
}

template <typename D, typename T>
void Forward(const float* x, const T* kernel, const Geometry& g, int threads, T* y, uint8_t* arg) {
  std::vector<float> w = PaddedKernel(kernel, g);
  EachPooledRow(g, threads, [&](int, int64_t n, int64_t i) {
    D d(g);
    // Per-thread scratch, reached through plain pointers: a thread_local in a shared
    // library costs a call (__tls_get_addr) at every use.
    thread_local std::vector<Vec> best_storage;
    thread_local std::vector<Mask> won_storage;
    best_storage.resize(g.ow);
    won_storage.resize(g.ow);
    Vec* best = best_storage.data();
    Mask* won = won_storage.data();
    for (int64_t f0 = 0; f0 < g.f; f0 += kLanes) {
      // Window positions q = a PW + b in row-major order: rows a of the window outside,
      // columns inside, so the first maximum is the one kept.
      for (int64_t a = 0; a < g.ph; ++a) {
        int64_t row = i * g.ph + a;
        EachStrip(g, [&](auto size, int64_t col) {
          constexpr int64_t S = decltype(size)::value;
          Vec sums[S];
          ConvStrip<S>(d, g, x + Pixel(g, n, row, col), w.data() + f0, sums);
          for (int64_t s = 0; s < S; ++s) {
            int64_t j = (col + s) / g.pw, q = a * g.pw + (col + s) % g.pw;
            // Compared as stored: in bfloat16 outputs that round to the same value tie
            // and the first wins, as in max_pool(conv(x)) computed in bfloat16. A NaN
            // replaces a number once and then stays (as jnp.max propagates NaN).
            Vec v = Rounded<T>(sums[s]);
            Mask take = (v > best[j]) | ((v != v) & (best[j] == best[j]));
            if (q == 0) take = take == take;  // all lanes
            best[j] = take ? v : best[j];
            won[j] = take ? static_cast<int32_t>(q) : won[j];
          }
        });
      }
      for (int64_t j = 0; j < g.ow; ++j) {
        int64_t out = ((n * g.oh + i) * g.ow + j) * g.f + f0;
        if (f0 + kLanes <= g.f) {
          StoreLanes(best[j], y + out);
          StoreBytes(won[j], arg + out);
        } else {
          for (int64_t l = 0; l < g.f - f0; ++l) {
            Store(best[j][l], y + out + l);
            arg[out + l] = static_cast<uint8_t>(won[j][l]);
          }
        }
      }
    }
  });
}

template <typename D, typename T, typename TY>
void KernelGrad(const float* x, const uint8_t* arg, const TY* dy, const Geometry& g, int threads,
                T* dkernel) {
  int64_t fp = g.padded_f(), size = g.taps() * fp;
  std::vector<double> parts(static_cast<size_t>(threads * size), 0.0);
  EachPooledRow(g, threads, [&](int t, int64_t n, int64_t i) {
    D d(g);
    thread_local std::vector<Vec> grad_storage, row_storage;  // as in Forward
    thread_local std::vector<Mask> won_storage;
    grad_storage.resize(g.ow);
    won_storage.resize(g.ow);
    row_storage.resize(d.taps());
    Vec* grad = grad_storage.data();
    Vec* row = row_storage.data();
    Mask* won = won_storage.data();
    double* part = &parts[static_cast<size_t>(t * size)];
    for (int64_t f0 = 0; f0 < g.f; f0 += kLanes) {
      for (int64_t j = 0; j < g.ow; ++j) {
        int64_t out = ((n * g.oh + i) * g.ow + j) * g.f + f0;
        if (f0 + kLanes <= g.f) {
          grad[j] = LoadLanes(dy + out);
          won[j] = LoadBytes(arg + out);
        } else {
          grad[j] = Vec{};
          won[j] = Mask{};
          for (int64_t l = 0; l < g.f - f0; ++l) {
            grad[j][l] = Load(dy[out + l]);
            won[j][l] = arg[out + l];
          }
        }
      }
      // One row's sums in float (at most OW * positions terms each), then into double.
      for (int64_t k = 0; k < d.taps(); ++k) row[k] = Vec{};
      for (int64_t a = 0; a < g.ph; ++a) {
        EachStrip(g, [&](auto size, int64_t col) {
          constexpr int64_t S = decltype(size)::value;
          Vec grads[S];  // each conv output's gradient: its pooled output's where it won
          for (int64_t s = 0; s < S; ++s) {
            int64_t j = (col + s) / g.pw, q = a * g.pw + (col + s) % g.pw;
            grads[s] = won[j] == static_cast<int32_t>(q) ? grad[j] : Vec{};
          }
          KernelGradStrip<S>(d, g, x + Pixel(g, n, i * g.ph + a, col), grads, row);
        });
      }
      for (int64_t k = 0; k < d.taps(); ++k) {
        for (int64_t l = 0; l < kLanes; ++l) part[k * fp + f0 + l] += row[k][l];
      }
    }
  });
  for (int64_t k = 0; k < g.taps(); ++k) {
    for (int64_t f = 0; f < g.f; ++f) {
      double sum = 0.0;
      for (int t = 0; t < threads; ++t) sum += parts[static_cast<size_t>(t * size + k * fp + f)];
      Store(static_cast<float>(sum), dkernel + k * g.f + f);
    }
  }
}

// Calls f(Dims<...>{}) compiled for g's kernel shape when it is one of the first-layer
// shapes, else f(Dims<0, 0, 0>) (sizes read at run time).
template <typename F>
void DispatchDims(const Geometry& g, F&& f) {
  auto is = [&](int64_t k, int64_t c) { return g.kh == k && g.kw == k && g.c == c; };
  if (is(3, 1)) return f(Dims<3, 3, 1>(g));
  if (is(3, 2)) return f(Dims<3, 3, 2>(g));
  if (is(3, 3)) return f(Dims<3, 3, 3>(g));
  if (is(3, 4)) return f(Dims<3, 3, 4>(g));
  if (is(5, 1)) return f(Dims<5, 5, 1>(g));
  if (is(5, 3)) return f(Dims<5, 5, 3>(g));
  return f(Dims<0, 0, 0>(g));
}

// The geometry of x (N, H, W, C) and kernel (KH, KW, C, F) pooled by (PH, PW), or an
// error naming what is wrong.
ffi::Error Measure(ffi::Span<const int64_t> xd, ffi::Span<const int64_t> kernel_dims, int64_t ph,
                   int64_t pw, Geometry& g) {
  if (xd.size() != 4 || kernel_dims.size() != 4 || kernel_dims[2] != xd[3]) {
    return ffi::Error::InvalidArgument(
        "jaxcnn conv_max_pool: x must be (N, H, W, C) and kernel (KH, KW, C, F)");
  }
  g = {xd[0], xd[1], xd[2], xd[3], kernel_dims[0], kernel_dims[1], kernel_dims[3], ph, pw, 0, 0};
  if (ph < 1 || pw < 1 || ph * pw > 255 || g.kh > g.h || g.kw > g.w || g.taps() > kMaxTaps) {
    return ffi::Error::InvalidArgument(
        "jaxcnn conv_max_pool: the kernel must fit in x and have at most 128 taps (KH KW C), "
        "and the window 1-255 positions");
  }
  g.oh = (g.h - g.kh + 1) / ph;
  g.ow = (g.w - g.kw + 1) / pw;
  return ffi::Error::Success();
}

bool Pooled(ffi::Span<const int64_t> d, const Geometry& g) {
  return d.size() == 4 && d[0] == g.n && d[1] == g.oh && d[2] == g.ow && d[3] == g.f;
}

ffi::Error ConvMaxPoolForward(ffi::Buffer<ffi::F32> x, ffi::AnyBuffer kernel,
                              ffi::Result<ffi::AnyBuffer> y,
                              ffi::ResultBuffer<ffi::U8> arg, int64_t window_h,
                              int64_t window_w) {
  Geometry g;
  ffi::Error error = Measure(x.dimensions(), kernel.dimensions(), window_h, window_w, g);
  if (error.failure()) return error;
  ffi::DataType t = kernel.element_type();
  if (!Floating(t) || y->element_type() != t) {
    return ffi::Error::InvalidArgument(
        "jaxcnn conv_max_pool: kernel and y must both be float32 or both bfloat16");
  }
  if (!Pooled(y->dimensions(), g) || !Pooled(arg->dimensions(), g)) {
    return ffi::Error::InvalidArgument("jaxcnn conv_max_pool: y and arg must be (N, OH, OW, F)");
  }
  jaxcnn::InFlight team;
  auto run = [&](auto zero) {
    using T = decltype(zero);
    DispatchDims(g, [&](auto dims) {
      Forward<decltype(dims)>(x.typed_data(), static_cast<const T*>(kernel.untyped_data()), g,
                              team.threads, static_cast<T*>(y->untyped_data()), arg->typed_data());
    });
  };
  if (t == ffi::DataType::F32) run(float{});
  if (t == ffi::DataType::BF16) run(uint16_t{});
  return ffi::Error::Success();
}

ffi::Error ConvMaxPoolKernelGrad(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::U8> arg, ffi::AnyBuffer dy,
                                 ffi::Result<ffi::AnyBuffer> dkernel, int64_t window_h,
                                 int64_t window_w) {
  Geometry g;
  ffi::Error error = Measure(x.dimensions(), dkernel->dimensions(), window_h, window_w, g);
  if (error.failure()) return error;
  ffi::DataType t = dkernel->element_type();
  if (!Floating(t) || !Floating(dy.element_type())) {
    return ffi::Error::InvalidArgument(
        "jaxcnn conv_max_pool: dkernel and dy must be float32 or bfloat16");
  }
  if (!Pooled(dy.dimensions(), g) || !Pooled(arg.dimensions(), g)) {
    return ffi::Error::InvalidArgument("jaxcnn conv_max_pool: dy and arg must be (N, OH, OW, F)");
  }
  jaxcnn::InFlight team;
  jaxcnn::Dispatch(t, dy.element_type(), [&](auto zero, auto dy_zero) {
    using T = decltype(zero);
    using TY = decltype(dy_zero);
    DispatchDims(g, [&](auto dims) {
      KernelGrad<decltype(dims)>(x.typed_data(), arg.typed_data(),
                                 static_cast<const TY*>(dy.untyped_data()), g, team.threads,
                                 static_cast<T*>(dkernel->untyped_data()));
    });
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnConvMaxPoolForward, ConvMaxPoolForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::U8>>()
                                  .Attr<int64_t>("window_h")
                                  .Attr<int64_t>("window_w"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnConvMaxPoolKernelGrad, ConvMaxPoolKernelGrad,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("window_h")
                                  .Attr<int64_t>("window_w"));
