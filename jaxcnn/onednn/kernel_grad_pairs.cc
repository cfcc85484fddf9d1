// The kernel gradient of a bfloat16 convolution, as an XLA FFI handler, written for
// AVX-512 BF16 (vdpbf16ps). jaxcnn/onednn/build.py compiles this file with the
// others; jaxcnn/onednn/ffi_conv.py calls it where kernel_grad_method says "pairs".
//
// Why: on CPUs with AVX-512 BF16 and no AMX (AMD Zen 4 and 5), oneDNN's backward-weights
// kernels ran at about 70 % of its forward ones: the fast CIFAR net's 7 x 7 x 256 layers
// 11.0-12.0 ms against 7.4 forward, 45 ms of its 135 ms bfloat16 step on the Zen 5 CPU.
// This kernel ran them in 8.3-8.5 ms (docs/perf_notes.md, item 66); ResNet-20's 16 x 16,
// 32-channel layers 0.79-0.89 -> 0.73 ms (item 68); its stride-2 layers in its step 1.24
// -> 0.98 and 1.68 -> 0.95 ms a call (item 70).
//
// What it computes (channels-last, strides (sh, sw), no dilation):
//   x (N, H, W, C), dy (N, OH, OW, F) with OH = (H + pt + pb - KH) / sh + 1, OW likewise
//   dkernel[u, v, c, f] = sum over n, i, j of xp[n, sh i + u, sw j + v, c] dy[n, i, j, f]
// where xp is x zero-padded by (pt, pb) rows and (pl, pr) columns. Sums in float32, one
// rounding to bfloat16 at the end, as oneDNN's.
//
// How. vdpbf16ps multiplies pairs of bfloat16 values and adds both products to one float
// lane, so each pair must belong to the same sum: here, the same pixel of two images.
// Each thread takes groups of G image pairs and copies them into its own buffers with the
// two images interleaved (one 32-bit word per pixel and channel), padded, and blocked:
//   xq [G][CB][HP][WP][kMC]   input channels in blocks of kMC (a last, partial block is
//                             zero-filled, and its tiles multiply only its channels)
//   dq [G][FB][OH OW][kFW]    output channels in blocks of kFW (64, or 32: Shape below)
// so that the innermost loop reads both contiguously. It then adds each (u, v, channel
// block, output block) tile of the gradient, kMC x kFW floats in 24 registers, over the
// group's pixels. Each thread sums into its own float32 copy of the gradient; the copies
// are added and rounded at the end. A batch of odd size pairs its last image with zeros.

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "simd16.h"
#include "team.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#if JAXCNN_SIMD16

// A tile's shape: NV 16-lane vectors of output channels (kFW = 16 NV of them) by kMC =
// 24 / NV input channels, 24 registers of sums: 6 x 64 where the output channels are a
// multiple of 64, else 12 x 32 (ResNet-20's 32-channel layers; tiles of 24 x 16 for 16
// channels lost to oneDNN, since every vdpbf16ps then needs its own broadcast).
template <int NV>
struct Shape {
  static constexpr int kNV = NV;
  static constexpr int kFW = 16 * NV;
  static constexpr int kMC = 24 / NV;
};
constexpr int64_t kGroupPixels = 392;  // pixels a group of image pairs should hold at least
constexpr int64_t kMaxGroup = 8;       // image pairs per group at most (its buffers stay in L2)

struct Geometry {
  int64_t n, h, w, c, f, kh, kw, pt, pl;  // x, kernel and padding
  int64_t sh, sw;                         // strides
  int64_t oh, ow, hp, wp;                 // dy's map and the padded input's
  int64_t g, cb, fb;                      // image pairs per group, channel blocks in and out
  int64_t pixels() const { return oh * ow; }
  int64_t tiles() const { return kh * kw * cb * fb; }
};

// Words in a group's xq and dq buffers, for tiles of shape S.
template <typename S>
int64_t XqSize(const Geometry& g) {
  return g.g * g.cb * g.hp * g.wp * S::kMC;
}
template <typename S>
int64_t DqSize(const Geometry& g) {
  return g.g * g.fb * g.pixels() * S::kFW;
}

// Sixteen channels (fewer under mask m) of the same pixel of images a and b as 32-bit
// pairs, a in the low half (the first element of a bfloat16 pair); b null: zeros.
inline __m512i Pair16(const uint16_t* a, const uint16_t* b, __mmask16 m) {
  __m512i lo = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, a));
  if (b == nullptr) return lo;
  __m512i hi = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, b));
  return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

inline __mmask16 Lanes(int64_t left) {
  return left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
}

// Image `image` of an (n, pixels x channels = size) array, or null past the batch (so an
// odd batch's last image pairs with zeros).
inline const uint16_t* Image(const uint16_t* base, int64_t n, int64_t image, int64_t size) {
  return image < n ? base + image * size : nullptr;
}

// The group of image pairs starting at image n0 into xq (padded, interleaved, blocked).
template <typename S>
void PackX(const uint16_t* x, const Geometry& g, int64_t n0, uint32_t* xq, uint32_t* row) {
  constexpr int kMC = S::kMC;
  std::memset(xq, 0, sizeof(uint32_t) * XqSize<S>(g));
  const int64_t block = g.hp * g.wp * kMC, image = g.h * g.w * g.c;
  for (int64_t gi = 0; gi < g.g && n0 + 2 * gi < g.n; ++gi) {
    const uint16_t* a = Image(x, g.n, n0 + 2 * gi, image);
    const uint16_t* b = Image(x, g.n, n0 + 2 * gi + 1, image);
    for (int64_t p = 0; p < g.h * g.w; ++p) {
      for (int64_t c = 0; c < g.c; c += 16) {
        __m512i pairs = Pair16(a + p * g.c + c, b ? b + p * g.c + c : nullptr, Lanes(g.c - c));
        _mm512_storeu_si512(row + c, pairs);
      }
      int64_t y = p / g.w + g.pt, xx = p % g.w + g.pl;
      uint32_t* out = xq + ((gi * g.cb * g.hp + y) * g.wp + xx) * kMC;
      for (int64_t cb = 0; cb < g.cb; ++cb) {
        int64_t count = std::min<int64_t>(kMC, g.c - cb * kMC);
        std::memcpy(out + cb * block, row + cb * kMC, sizeof(uint32_t) * count);
      }
    }
  }
}

// The same group's output gradient into dq (interleaved, blocked; zeros past the batch).
template <typename S>
void PackDy(const uint16_t* dy, const Geometry& g, int64_t n0, uint32_t* dq) {
  constexpr int kNV = S::kNV, kFW = S::kFW;
  const int64_t pixels = g.pixels(), image = pixels * g.f;
  for (int64_t gi = 0; gi < g.g; ++gi) {
    const uint16_t* a = Image(dy, g.n, n0 + 2 * gi, image);
    const uint16_t* b = Image(dy, g.n, n0 + 2 * gi + 1, image);
    for (int64_t fb = 0; fb < g.fb; ++fb) {
      uint32_t* out = dq + (gi * g.fb + fb) * pixels * kFW;
      if (a == nullptr) {
        std::memset(out, 0, sizeof(uint32_t) * pixels * kFW);
        continue;
      }
      for (int64_t p = 0; p < pixels; ++p)
        for (int j = 0; j < kNV; ++j) {
          int64_t at = p * g.f + fb * kFW + 16 * j;
          __m512i pairs = Pair16(a + at, b ? b + at : nullptr, 0xffff);
          _mm512_storeu_si512(out + p * kFW + 16 * j, pairs);
        }
    }
  }
}

// Adds one tile's sums over the group's pixels to acc (kMC x kFW floats): its first M
// input channels (M < kMC for a last block that holds fewer, so no zeros are multiplied).
template <typename S, int M>
void Tile(const uint32_t* xq, const uint32_t* dq, const Geometry& g, int64_t u, int64_t v,
          int64_t cb, int64_t fb, float* acc) {
  constexpr int kNV = S::kNV, kFW = S::kFW, kMC = S::kMC;
  __m512 sum[M][kNV];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < kNV; ++j) sum[i][j] = _mm512_loadu_ps(acc + (i * kNV + j) * 16);
  for (int64_t gi = 0; gi < g.g; ++gi) {
    const uint32_t* d = dq + (gi * g.fb + fb) * g.pixels() * kFW;
    for (int64_t i0 = 0; i0 < g.oh; ++i0) {
      const uint32_t* xr = xq + (((gi * g.cb + cb) * g.hp + i0 * g.sh + u) * g.wp + v) * kMC;
      for (int64_t j0 = 0; j0 < g.ow; ++j0, d += kFW, xr += kMC * g.sw) {
        __m512bh dv[kNV];
        for (int j = 0; j < kNV; ++j) dv[j] = (__m512bh)_mm512_loadu_si512(d + 16 * j);
        for (int i = 0; i < M; ++i) {
          __m512bh xv = (__m512bh)_mm512_set1_epi32(static_cast<int>(xr[i]));
          for (int j = 0; j < kNV; ++j) sum[i][j] = _mm512_dpbf16_ps(sum[i][j], xv, dv[j]);
        }
      }
    }
  }
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < kNV; ++j) _mm512_storeu_ps(acc + (i * kNV + j) * 16, sum[i][j]);
}

// Tile<S, channels> for 1 <= channels <= kMC, one instance per count (a switch written
// out by the fold over M = 0 .. kMC - 1).
template <typename S, int... M>
void TileOfM(int64_t channels, std::integer_sequence<int, M...>, const uint32_t* xq,
             const uint32_t* dq, const Geometry& g, int64_t u, int64_t v, int64_t cb,
             int64_t fb, float* acc) {
  ((channels == M + 1 ? Tile<S, M + 1>(xq, dq, g, u, v, cb, fb, acc) : void()), ...);
}

template <typename S>
void TileOf(int64_t channels, const uint32_t* xq, const uint32_t* dq, const Geometry& g,
            int64_t u, int64_t v, int64_t cb, int64_t fb, float* acc) {
  TileOfM<S>(channels, std::make_integer_sequence<int, S::kMC>{}, xq, dq, g, u, v, cb, fb,
             acc);
}

// A thread's buffers, kept between calls (grown, never shrunk), so that a step does not
// allocate and fault in megabytes per layer.
struct Scratch {
  std::vector<float> acc;
  std::vector<uint32_t> xq, dq, row;
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

template <typename S>
void KernelGrad(const uint16_t* x, const uint16_t* dy, const Geometry& g, int threads,
                uint16_t* dkernel) {
  constexpr int kNV = S::kNV, kFW = S::kFW, kMC = S::kMC;
  const int64_t tile_size = kMC * kFW, groups = (g.n + 2 * g.g - 1) / (2 * g.g);
  std::vector<float*> partial(threads);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    Scratch& s = ThreadScratch();
    s.acc.resize(std::max<size_t>(s.acc.size(), g.tiles() * tile_size));
    s.xq.resize(std::max<size_t>(s.xq.size(), XqSize<S>(g)));
    s.dq.resize(std::max<size_t>(s.dq.size(), DqSize<S>(g)));
    s.row.resize(std::max<size_t>(s.row.size(), g.cb * kMC + 16));
    std::fill_n(s.acc.data(), g.tiles() * tile_size, 0.0f);
    partial[t] = s.acc.data();
    int64_t lo, hi;
    jaxcnn::Share(groups, t, nt, lo, hi);
    for (int64_t k = lo; k < hi; ++k) {
      PackX<S>(x, g, 2 * g.g * k, s.xq.data(), s.row.data());
      PackDy<S>(dy, g, 2 * g.g * k, s.dq.data());
      // Output block outermost: its slice of dq (G OH OW x kFW x 4 bytes, about 100 KB for
      // the fast CIFAR net's layers) is read by every tile of that block.
      for (int64_t fb = 0; fb < g.fb; ++fb)
        for (int64_t u = 0; u < g.kh; ++u)
          for (int64_t v = 0; v < g.kw; ++v)
            for (int64_t cb = 0; cb < g.cb; ++cb) {
              int64_t tile = ((u * g.kw + v) * g.cb + cb) * g.fb + fb;
              TileOf<S>(std::min<int64_t>(kMC, g.c - cb * kMC), s.xq.data(), s.dq.data(), g, u,
                     v, cb, fb, s.acc.data() + tile * tile_size);
            }
    }
#pragma omp barrier
    // The threads' sums, added tile by tile and rounded into (KH, KW, C, F).
    for (int64_t tile = t; tile < g.tiles(); tile += nt) {
      int64_t fb = tile % g.fb, cb = tile / g.fb % g.cb, uv = tile / (g.fb * g.cb);
      for (int64_t i = 0; i < kMC && cb * kMC + i < g.c; ++i)
        for (int j = 0; j < kNV; ++j) {
          int64_t at = tile * tile_size + (i * kNV + j) * 16;
          __m512 sum = _mm512_loadu_ps(partial[0] + at);
          for (int other = 1; other < nt; ++other) {
            sum = _mm512_add_ps(sum, _mm512_loadu_ps(partial[other] + at));
          }
          jaxcnn::simd16::Store16(sum, dkernel + (uv * g.c + cb * kMC + i) * g.f + fb * kFW + 16 * j);
        }
    }
  }
}

#endif  // JAXCNN_SIMD16

ffi::Error KernelGradPairs(ffi::Buffer<ffi::BF16> x, ffi::Buffer<ffi::BF16> dy,
                           ffi::ResultBuffer<ffi::BF16> dkernel,
                           ffi::Span<const int64_t> padding,
                           ffi::Span<const int64_t> strides) {
#if JAXCNN_SIMD16
  auto xd = x.dimensions(), yd = dy.dimensions(), kd = dkernel->dimensions();
  if (xd.size() != 4 || yd.size() != 4 || kd.size() != 4 || padding.size() != 4 ||
      strides.size() != 2 || strides[0] < 1 || strides[1] < 1) {
    return ffi::Error::InvalidArgument(
        "jaxcnn kernel_grad_pairs: x, dy and dkernel must be 4-D, padding 4 numbers and "
        "strides 2 positive ones");
  }
  Geometry g{xd[0], xd[1],      xd[2],      xd[3],      kd[3],     kd[0],
             kd[1], padding[0], padding[2], strides[0], strides[1]};
  g.hp = g.h + padding[0] + padding[1];
  g.wp = g.w + padding[2] + padding[3];
  g.oh = g.hp < g.kh ? 0 : (g.hp - g.kh) / g.sh + 1;
  g.ow = g.wp < g.kw ? 0 : (g.wp - g.kw) / g.sw + 1;
  if (kd[2] != g.c || yd[0] != g.n || yd[1] != g.oh || yd[2] != g.ow || yd[3] != g.f ||
      g.oh < 1 || g.ow < 1 || g.f % Shape<2>::kFW != 0 || *std::min_element(padding.begin(), padding.end()) < 0) {
    return ffi::Error::InvalidArgument(
        "jaxcnn kernel_grad_pairs: needs dy (N, OH, OW, F) of a convolution of x "
        "(N, H, W, C) by dkernel (KH, KW, C, F), F a multiple of 32, padding >= 0");
  }
  g.g = std::clamp<int64_t>((kGroupPixels + g.pixels() - 1) / g.pixels(), 1, kMaxGroup);
  jaxcnn::InFlight team;
  auto run = [&](auto shape) {
    using S = decltype(shape);
    g.cb = (g.c + S::kMC - 1) / S::kMC;
    g.fb = g.f / S::kFW;
    KernelGrad<S>(reinterpret_cast<const uint16_t*>(x.typed_data()),
                  reinterpret_cast<const uint16_t*>(dy.typed_data()), g, team.threads,
                  reinterpret_cast<uint16_t*>(dkernel->typed_data()));
  };
  if (g.f % Shape<4>::kFW == 0) {
    run(Shape<4>{});
  } else {
    run(Shape<2>{});
  }
  return ffi::Error::Success();
#else
  return ffi::Error(ffi::ErrorCode::kUnimplemented,
                    "jaxcnn kernel_grad_pairs: built without AVX-512 BF16 (-march=native)");
#endif
}

}  // namespace

// 1 where this build has the kernel (its compiler and -march=native gave AVX-512 BF16),
// else 0: ffi_conv.kernel_grad_method asks (build.kernel_grad_pairs_built) before it routes
// a call here, so no call meets the error above.
extern "C" int64_t JaxcnnKernelGradPairsBuilt() { return JAXCNN_SIMD16; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnKernelGradPairs, KernelGradPairs,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Arg<ffi::Buffer<ffi::BF16>>()
                                  .Ret<ffi::Buffer<ffi::BF16>>()
                                  .Attr<ffi::Span<const int64_t>>("padding")
                                  .Attr<ffi::Span<const int64_t>>("strides"));
