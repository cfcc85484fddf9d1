// Training-mode batch norm + activation (identity, ReLU or either GELU) as two XLA FFI
// handlers, forward and backward, each a few passes over the activations on the whole
// OpenMP team.
// jaxcnn/onednn/build.py compiles this file with onednn_conv.cc; jaxcnn/onednn/ffi_norm.py
// calls it, when jaxcnn/batch_norm.py's native_kernel_activation says so.
//
// Why: XLA:CPU (jaxlib 0.10) runs every elementwise fusion and reduction of a step as one
// task on one thread. In ResNet-20 batch norm's fusions take about a third of the float32
// step, on one of the two cores (docs/perf_notes.md, item 38).
//
// The math is jaxcnn/batch_norm.py's, over rows of C channels (any leading shape):
//   mean = E[x], var = max(E[x^2] - mean^2, 0), inv = 1 / sqrt(var + epsilon)
//   y = act(pre), pre = (x - mean) * (inv * scale) + bias [+ residual]
// (the residual, when given: a residual block's shortcut, added before the activation)
// and for the gradient, with xhat = (x - mean) * inv and dpre = act'(pre) * dy:
//   dresidual = dpre, dbias = sum dpre, dscale = sum dpre * xhat
//   dx = scale * inv * dpre + (dmean / n - scale * inv / n * dbias)
//        + ((var > 0 ? 2 dvar / (n inv) : 0) - scale * inv / n * dscale) * xhat
// (dmean, dvar: the cotangents of the mean and var outputs, zero in a loss).
// Sums are accumulated in float within blocks of 64 rows, then in double. x and y (dy and
// dx) are float32 or bfloat16; the per-channel vectors are float32. The GELUs' loops run
// on AVX-512 intrinsics where the build has them (simd16.h: norm + GELU 1.2-1.4x faster
// forward and backward, docs/perf_notes.md item 60), the rest as scalar loops that GCC
// vectorises. Each handler sums over the rows, then passes over them again elementwise,
// each thread its own rows, the second pass last row first: it starts on rows the sums
// left in the thread's caches (ResNet-20's float32 step x1.01-1.02, item 71).

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <numeric>
#include <type_traits>
#include <vector>

#include "bfloat16.h"
#include "simd16.h"
#include "team.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using jaxcnn::Dispatch;
using jaxcnn::EachRow;
using jaxcnn::EachRowLastFirst;
using jaxcnn::Floating;
using jaxcnn::Load;
using jaxcnn::Share;
using jaxcnn::Store;
#if JAXCNN_SIMD16
namespace simd16 = jaxcnn::simd16;
#endif

// The activations, as the "activation" attribute numbers them (ffi_norm.ACTIVATIONS).
// Each is a struct with Value(pre) and Grad(pre, dy) = act'(pre) * dy, so that every
// loop is compiled for one activation and vectorises: no calls, no branches per element.
// kKeepGrad: the backward's first pass stores act'(pre) * dy for its second pass to read,
// instead of evaluating Grad again there (the GELUs: their Grad costs more than a store).
enum Activation : int64_t { kIdentity = 0, kRelu = 1, kGelu = 2, kGeluExact = 3 };

struct Identity {
  static constexpr bool kKeepGrad = false;
  static float Value(float pre) { return pre; }
  static float Grad(float, float dy) { return dy; }
};

// ReLU keeps NaN (as jnp.maximum does); its gradient is 0 where pre <= 0, as jax.nn.relu's.
struct Relu {
  static constexpr bool kKeepGrad = false;
  static float Value(float pre) { return pre <= 0.0f ? 0.0f : pre; }
  static float Grad(float pre, float dy) { return pre > 0.0f ? dy : 0.0f; }
};

// exp(v) for v in float's range, written out so that the loops around it vectorise (the
// library's expf is a call; GCC maps it to a vector routine only under -ffast-math).
// v = n ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor series to r^7 (relative error
// below 1e-7 there), times 2^n built in the exponent bits. Below -87 it returns about
// 2^-126 rather than 0 and above 88 about 2^127 rather than inf: the GELUs below use
// it only where either is as good as the exact value.
inline float Exp(float v) {
  v = std::min(std::max(v, -87.0f), 88.0f);
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float n = (v * kLog2e + kRound) - kRound;
  // ln 2 in two parts (the first exact in float's 24 bits) keeps r exact to float.
  float r = (v - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// jax.nn.gelu(approximate=True), flax's nn.gelu: x / 2 * (1 + tanh(u)),
// u = sqrt(2 / pi) * (x + 0.044715 x^3); tanh(u) = 1 - 2 / (exp(2u) + 1).
struct Gelu {
  static constexpr bool kKeepGrad = true;
  static constexpr float kSqrt2OverPi = 0.797884560802865355f;
  static constexpr float kCubic = 0.044715f;
  static float Tanh(float pre) {
    float u = kSqrt2OverPi * (pre + kCubic * pre * pre * pre);
    return 1.0f - 2.0f / (Exp(2.0f * u) + 1.0f);
  }
  static float Value(float pre) { return 0.5f * pre * (1.0f + Tanh(pre)); }
  static float Grad(float pre, float dy) {
    float t = Tanh(pre);
    float du = kSqrt2OverPi * (1.0f + 3.0f * kCubic * pre * pre);
    return dy * (0.5f * (1.0f + t) + 0.5f * pre * (1.0f - t * t) * du);
  }
#if JAXCNN_SIMD16
  // The same formulas on 16 lanes (see Vectorised below).
  static simd16::V Tanh(simd16::V pre) {
    using namespace simd16;
    V cubic = _mm512_mul_ps(Set(kCubic), _mm512_mul_ps(pre, pre));
    V u = _mm512_mul_ps(Set(kSqrt2OverPi), _mm512_fmadd_ps(cubic, pre, pre));
    V e = simd16::Exp(_mm512_add_ps(u, u));
    return _mm512_sub_ps(Set(1.0f), _mm512_div_ps(Set(2.0f), _mm512_add_ps(e, Set(1.0f))));
  }
  static simd16::V Value(simd16::V pre) {
    using namespace simd16;
    return _mm512_mul_ps(_mm512_mul_ps(Set(0.5f), pre), _mm512_add_ps(Set(1.0f), Tanh(pre)));
  }
  static simd16::V Grad(simd16::V pre, simd16::V dy) {
    using namespace simd16;
    V t = Tanh(pre);
    V du = _mm512_mul_ps(Set(kSqrt2OverPi),
                         _mm512_fmadd_ps(_mm512_mul_ps(Set(3.0f * kCubic), pre), pre, Set(1.0f)));
    V half_pre = _mm512_mul_ps(Set(0.5f), pre);
    V slope = _mm512_mul_ps(_mm512_mul_ps(half_pre, _mm512_fnmadd_ps(t, t, Set(1.0f))), du);
    return _mm512_mul_ps(dy, _mm512_add_ps(_mm512_fmadd_ps(Set(0.5f), t, Set(0.5f)), slope));
  }
#endif
};

// jaxcnn.activations.gelu_exact (PyTorch's nn.GELU()): x / 2 * (1 + erf(x / sqrt 2)).
// erf by Abramowitz and Stegun's 7.1.26 (absolute error below 1.5e-7); the derivative
// is Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
struct GeluExact {
  static constexpr bool kKeepGrad = true;
  // erf(z) given g = exp(-z^2), which the derivative needs too (exp(-pre^2 / 2)).
  static float Erf(float z, float g) {
    float t = 1.0f / (1.0f + 0.3275911f * std::fabs(z));
    float p = 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    float e = 1.0f - p * t * g;
    return z < 0.0f ? -e : e;
  }
  static float Value(float pre) {
    float z = pre * 0.707106781186547524f;
    return 0.5f * pre * (1.0f + Erf(z, Exp(-z * z)));
  }
  static float Grad(float pre, float dy) {
    float g = Exp(-0.5f * pre * pre);  // one exponential for both terms
    float cdf = 0.5f * (1.0f + Erf(pre * 0.707106781186547524f, g));
    return dy * (cdf + pre * 0.398942280401432678f * g);
  }
#if JAXCNN_SIMD16
  static simd16::V Erf(simd16::V z, simd16::V g) {
    using namespace simd16;
    V t = _mm512_div_ps(Set(1.0f), _mm512_fmadd_ps(Set(0.3275911f), _mm512_abs_ps(z), Set(1.0f)));
    V p = Set(1.061405429f);
    p = _mm512_fmadd_ps(p, t, Set(-1.453152027f));
    p = _mm512_fmadd_ps(p, t, Set(1.421413741f));
    p = _mm512_fmadd_ps(p, t, Set(-0.284496736f));
    p = _mm512_fmadd_ps(p, t, Set(0.254829592f));
    V e = _mm512_fnmadd_ps(_mm512_mul_ps(p, t), g, Set(1.0f));
    __mmask16 negative = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ);
    return _mm512_mask_sub_ps(e, negative, _mm512_setzero_ps(), e);
  }
  static simd16::V Value(simd16::V pre) {
    using namespace simd16;
    V z = _mm512_mul_ps(pre, Set(0.707106781186547524f));
    V erf = Erf(z, simd16::Exp(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), z), z)));
    return _mm512_mul_ps(_mm512_mul_ps(Set(0.5f), pre), _mm512_add_ps(Set(1.0f), erf));
  }
  static simd16::V Grad(simd16::V pre, simd16::V dy) {
    using namespace simd16;
    V g = simd16::Exp(_mm512_mul_ps(_mm512_mul_ps(Set(-0.5f), pre), pre));
    V erf = Erf(_mm512_mul_ps(pre, Set(0.707106781186547524f)), g);
    V cdf = _mm512_fmadd_ps(Set(0.5f), erf, Set(0.5f));
    V density = _mm512_mul_ps(pre, Set(0.398942280401432678f));
    return _mm512_mul_ps(dy, _mm512_fmadd_ps(density, g, cdf));
  }
#endif
};

// Loops over rows run on simd16.h's 16-lane vectors for the GELUs (kKeepGrad), whose
// arithmetic, not memory, sets their pace, where a row is whole vectors (`width` a
// multiple of 16: every Layout's row of 64 or more lanes). Identity and ReLU move as
// many bytes with less arithmetic, and GCC's own vectors keep up with memory there.
template <typename Act, typename Width>
bool Vectorised(Width width) {
  return JAXCNN_SIMD16 && Act::kKeepGrad && width % 16 == 0;
}

// Rows per block of float sums: short enough for float's rounding (each block's sum is
// added to a double), long enough that the double adds cost nothing.
constexpr int64_t kBlockRows = 64;

// Per-lane sums over every row of two terms, `terms(row, a, b)` adding row's terms to
// the float arrays a and b of `lanes` elements; float within blocks of rows, double
// across blocks and threads. The innermost loops run over the lanes, contiguous in
// memory: vectorised. The lanes are a Layout's row (see below): the channels, or a
// period of them that the caller folds back to channels.
template <typename F>
void ChannelSums(int64_t rows, int64_t lanes, int threads, F&& terms, std::vector<double>& a,
                 std::vector<double>& b) {
  std::vector<double> parts(static_cast<size_t>(threads) * 2 * lanes, 0.0);
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num(), nt = omp_get_num_threads();
    int64_t lo, hi;
    Share(rows, t, nt, lo, hi);
    double* __restrict da = &parts[static_cast<size_t>(t) * 2 * lanes];
    double* __restrict db = da + lanes;
    std::vector<float> block(2 * lanes);
    float* __restrict fa = block.data();
    float* __restrict fb = fa + lanes;
    for (int64_t start = lo; start < hi; start += kBlockRows) {
      std::fill(block.begin(), block.end(), 0.0f);
      int64_t stop = std::min(hi, start + kBlockRows);
      for (int64_t r = start; r < stop; ++r) terms(r, fa, fb);
      for (int64_t c = 0; c < lanes; ++c) {
        da[c] += fa[c];
        db[c] += fb[c];
      }
    }
  }
  a.assign(lanes, 0.0);
  b.assign(lanes, 0.0);
  for (int t = 0; t < threads; ++t) {
    const double* sa = &parts[static_cast<size_t>(t) * 2 * lanes];
    for (int64_t c = 0; c < lanes; ++c) {
      a[c] += sa[c];
      b[c] += sa[lanes + c];
    }
  }
}

// Rows as the loops see them. With few channels (ResNet-20's first stage has 16) a loop
// over one row's channels is too short to vectorise well: per row it pays the loop's
// set-up and tail for one or two vectors. When C divides kPeriod and the element count
// is a multiple of it, the loops instead run over "rows" of kPeriod elements (a
// compile-time trip count, fully vectorised) holding kPeriod / C consecutive pixels;
// lane j is channel j % C, the per-channel vectors are tiled to kPeriod lanes, and sums
// per lane are folded back to channels. Otherwise a row is one pixel's C channels.
// Other channel counts that do not fill whole vectors (the whitening layer's 24) take
// rows of lcm(C, kPeriod) elements, up to kMaxWidth, a run-time width: each row is
// still whole vectors, and there are fewer rows to start (24 channels: 192 a row).
constexpr int64_t kPeriod = 64;
constexpr int64_t kMaxWidth = 1024;

inline int64_t RowWidth(int64_t elements, int64_t c) {
  if (c <= 0) return c;
  if (kPeriod % c == 0 && elements % kPeriod == 0) return kPeriod;
  int64_t common = std::lcm(c, kPeriod);
  return common <= kMaxWidth && elements % common == 0 ? common : c;
}

struct Layout {
  int64_t channels, width, rows;  // width: elements per loop row (see RowWidth)
  Layout(int64_t elements, int64_t c)
      : channels(c), width(RowWidth(elements, c)), rows(width > 0 ? elements / width : 0) {}
  // A per-channel vector repeated over the row's lanes.
  std::vector<float> Tile(const std::vector<float>& v) const {
    std::vector<float> out(width);
    for (int64_t j = 0; j < width; ++j) out[j] = v[j % channels];
    return out;
  }
  // Per-lane sums added up per channel.
  std::vector<double> Fold(const std::vector<double>& lanes) const {
    std::vector<double> out(channels, 0.0);
    for (int64_t j = 0; j < width; ++j) out[j % channels] += lanes[j];
    return out;
  }
};

// Calls f with the row width as a compile-time constant when it is kPeriod (so that
// loops over it are unrolled and vectorised without a tail), else as a run-time value.
template <typename F>
void WithWidth(const Layout& layout, F&& f) {
  if (layout.width == kPeriod) {
    f(std::integral_constant<int64_t, kPeriod>{});
  } else {
    f(layout.width);
  }
}

// The residual's element at `i`, or 0 without one (kResidual false: nothing is read).
template <bool kResidual, typename TY>
inline float ResidualAt(const TY* __restrict residual, int64_t i) {
  if constexpr (kResidual) {
    return Load(residual[i]);
  } else {
    return 0.0f;
  }
}

#if JAXCNN_SIMD16
// ResidualAt on 16 lanes: `pre` plus the residual's elements from `i`, or `pre` itself
// without one (nothing is read or added).
template <bool kResidual, typename TY>
inline simd16::V WithResidual16(simd16::V pre, const TY* __restrict residual, int64_t i) {
  if constexpr (kResidual) {
    return _mm512_add_ps(pre, simd16::Load16(residual + i));
  } else {
    return pre;
  }
}

// xhat = (x - mean) * inv for the 16 lanes from `c` of a row, as the scalar loops have it.
template <typename TX>
inline simd16::V Xhat16(const TX* __restrict row, const float* __restrict m,
                        const float* __restrict iv, int64_t c) {
  return _mm512_mul_ps(_mm512_sub_ps(simd16::Load16(row + c), simd16::Load16(m + c)),
                       simd16::Load16(iv + c));
}
#endif

template <typename Act, bool kResidual, typename TX, typename TY>
void Forward(const TX* __restrict x, const TY* __restrict residual, const float* scale,
             const float* bias, float epsilon, int64_t rows, int64_t channels, int threads,
             TY* __restrict y, float* mean, float* var) {
  Layout layout(rows * channels, channels);
  std::vector<double> sum, sum_sq;
  WithWidth(layout, [&](auto width) {
    ChannelSums(
        layout.rows, width, threads,
        [&](int64_t r, float* __restrict s, float* __restrict q) {
          const TX* __restrict row = x + r * width;
          for (int64_t c = 0; c < width; ++c) {
            float v = Load(row[c]);
            s[c] += v;
            q[c] += v * v;
          }
        },
        sum, sum_sq);
  });
  sum = layout.Fold(sum);
  sum_sq = layout.Fold(sum_sq);
  std::vector<float> shift(channels), slope(channels), offset(channels);
  for (int64_t c = 0; c < channels; ++c) {
    double m = sum[c] / rows;
    mean[c] = static_cast<float>(m);
    var[c] = static_cast<float>(std::max(sum_sq[c] / rows - m * m, 0.0));
    shift[c] = mean[c];
    slope[c] = (1.0f / std::sqrt(var[c] + epsilon)) * scale[c];
    offset[c] = bias[c];
  }
  shift = layout.Tile(shift);
  slope = layout.Tile(slope);
  offset = layout.Tile(offset);
  const float* __restrict m = shift.data();
  const float* __restrict k = slope.data();
  const float* __restrict b = offset.data();
  WithWidth(layout, [&](auto width) {
    EachRowLastFirst(layout.rows, threads, [&](int, int64_t r) {
      const TX* __restrict row = x + r * width;
      TY* __restrict out = y + r * width;
#if JAXCNN_SIMD16
      if constexpr (Act::kKeepGrad) {
        if (Vectorised<Act>(width)) {
          for (int64_t c = 0; c < width; c += 16) {
            simd16::V pre = _mm512_fmadd_ps(
                _mm512_sub_ps(simd16::Load16(row + c), simd16::Load16(m + c)),
                simd16::Load16(k + c), simd16::Load16(b + c));
            pre = WithResidual16<kResidual>(pre, residual, r * width + c);
            simd16::Store16(Act::Value(pre), out + c);
          }
          return;
        }
      }
#endif
      for (int64_t c = 0; c < width; ++c) {
        float shortcut = ResidualAt<kResidual>(residual, r * width + c);
        Store(Act::Value((Load(row[c]) - m[c]) * k[c] + b[c] + shortcut), out + c);
      }
    });
  });
}

template <typename Act, bool kResidual, typename TX, typename TY>
void Backward(const TX* __restrict x, const TY* __restrict residual, const TY* __restrict dy,
              const float* mean, const float* var, const float* scale, const float* bias,
              const float* dmean, const float* dvar, float epsilon, int64_t rows,
              int64_t channels, int threads, TX* __restrict dx, TY* __restrict dresidual,
              float* dscale, float* dbias) {
  Layout layout(rows * channels, channels);
  std::vector<float> centre(channels), inv(channels), sc(channels), bi(channels);
  for (int64_t c = 0; c < channels; ++c) {
    centre[c] = mean[c];
    inv[c] = 1.0f / std::sqrt(var[c] + epsilon);
    sc[c] = scale[c];
    bi[c] = bias[c];
  }
  std::vector<float> centre_lanes = layout.Tile(centre), inv_lanes = layout.Tile(inv),
                     scale_lanes = layout.Tile(sc), bias_lanes = layout.Tile(bi);
  const float* __restrict m = centre_lanes.data();
  const float* __restrict iv = inv_lanes.data();
  const float* __restrict g = scale_lanes.data();
  const float* __restrict b = bias_lanes.data();
  std::vector<double> sum_dpre, sum_dpre_xhat;
  WithWidth(layout, [&](auto width) {
    ChannelSums(
        layout.rows, width, threads,
        [&](int64_t r, float* __restrict s, float* __restrict q) {
          const TX* __restrict row = x + r * width;
          const TY* __restrict grad = dy + r * width;
#if JAXCNN_SIMD16
          if constexpr (Act::kKeepGrad) {
            if (Vectorised<Act>(width)) {
              for (int64_t c = 0; c < width; c += 16) {
                simd16::V xhat = Xhat16(row, m, iv, c);
                simd16::V pre = WithResidual16<kResidual>(
                    _mm512_fmadd_ps(xhat, simd16::Load16(g + c), simd16::Load16(b + c)),
                    residual, r * width + c);
                simd16::V dpre = Act::Grad(pre, simd16::Load16(grad + c));
                simd16::Store16(_mm512_add_ps(simd16::Load16(s + c), dpre), s + c);
                simd16::Store16(_mm512_fmadd_ps(dpre, xhat, simd16::Load16(q + c)), q + c);
                if constexpr (kResidual) {
                  simd16::Store16(dpre, dresidual + r * width + c);
                } else {
                  simd16::Store16(dpre, dx + r * width + c);
                }
              }
              return;
            }
          }
#endif
          for (int64_t c = 0; c < width; ++c) {
            float xhat = (Load(row[c]) - m[c]) * iv[c];
            float shortcut = ResidualAt<kResidual>(residual, r * width + c);
            float dpre = Act::Grad(xhat * g[c] + b[c] + shortcut, Load(grad[c]));
            s[c] += dpre;
            q[c] += dpre * xhat;
            if constexpr (kResidual) {
              Store(dpre, dresidual + r * width + c);
            } else if constexpr (Act::kKeepGrad) {
              Store(dpre, dx + r * width + c);  // read back (and overwritten) below
            }
          }
        },
        sum_dpre, sum_dpre_xhat);
  });
  sum_dpre = layout.Fold(sum_dpre);
  sum_dpre_xhat = layout.Fold(sum_dpre_xhat);
  std::vector<float> gain(channels), offset(channels), slope(channels);
  for (int64_t c = 0; c < channels; ++c) {
    dbias[c] = static_cast<float>(sum_dpre[c]);
    dscale[c] = static_cast<float>(sum_dpre_xhat[c]);
    float per_n = scale[c] * inv[c] / rows;
    gain[c] = scale[c] * inv[c];
    offset[c] = dmean[c] / rows - per_n * dbias[c];
    slope[c] = (var[c] > 0.0f ? 2.0f * dvar[c] / (rows * inv[c]) : 0.0f) - per_n * dscale[c];
  }
  gain = layout.Tile(gain);
  offset = layout.Tile(offset);
  slope = layout.Tile(slope);
  const float* __restrict k = gain.data();
  const float* __restrict o = offset.data();
  const float* __restrict l = slope.data();
  WithWidth(layout, [&](auto width) {
    EachRowLastFirst(layout.rows, threads, [&](int, int64_t r) {
      const TX* __restrict row = x + r * width;
      [[maybe_unused]] const TY* __restrict grad = dy + r * width;
      TX* __restrict out = dx + r * width;
#if JAXCNN_SIMD16
      if constexpr (Act::kKeepGrad) {
        if (Vectorised<Act>(width)) {
          // dpre as the first pass stored it (in dresidual with a residual, else in dx).
          const TY* kept = kResidual ? dresidual + r * width : nullptr;
          for (int64_t c = 0; c < width; c += 16) {
            simd16::V xhat = Xhat16(row, m, iv, c);
            simd16::V dpre = kResidual ? simd16::Load16(kept + c) : simd16::Load16(out + c);
            simd16::V d = _mm512_fmadd_ps(simd16::Load16(l + c), xhat, simd16::Load16(o + c));
            simd16::Store16(_mm512_fmadd_ps(simd16::Load16(k + c), dpre, d), out + c);
          }
          return;
        }
      }
#endif
      for (int64_t c = 0; c < width; ++c) {
        float xhat = (Load(row[c]) - m[c]) * iv[c];
        float dpre;
        if constexpr (!Act::kKeepGrad) {
          float shortcut = ResidualAt<kResidual>(residual, r * width + c);
          dpre = Act::Grad(xhat * g[c] + b[c] + shortcut, Load(grad[c]));
        } else if constexpr (kResidual) {
          dpre = Load(dresidual[r * width + c]);
        } else {
          dpre = Load(out[c]);  // the first pass's dpre, rounded to dx's dtype
        }
        Store(k[c] * dpre + o[c] + l[c] * xhat, out + c);
      }
    });
  });
}

// A conv's bias and activation without a norm (the fast CIFAR net's whitening layer):
//   y = act(x + bias); dpre = act'(x + bias) * dy, dx = dpre, dbias = sum dpre.
// One pass each way, on the team (XLA runs this as one-thread fusions).
template <typename Act, typename TX, typename TY>
void BiasForward(const TX* __restrict x, const float* bias, int64_t rows, int64_t channels,
                 int threads, TY* __restrict y) {
  Layout layout(rows * channels, channels);
  std::vector<float> lanes = layout.Tile(std::vector<float>(bias, bias + channels));
  const float* __restrict b = lanes.data();
  WithWidth(layout, [&](auto width) {
    EachRow(layout.rows, threads, [&](int, int64_t r) {
      const TX* __restrict row = x + r * width;
      TY* __restrict out = y + r * width;
#if JAXCNN_SIMD16
      if constexpr (Act::kKeepGrad) {
        if (Vectorised<Act>(width)) {
          for (int64_t c = 0; c < width; c += 16) {
            simd16::V pre = _mm512_add_ps(simd16::Load16(row + c), simd16::Load16(b + c));
            simd16::Store16(Act::Value(pre), out + c);
          }
          return;
        }
      }
#endif
      for (int64_t c = 0; c < width; ++c) Store(Act::Value(Load(row[c]) + b[c]), out + c);
    });
  });
}

template <typename Act, typename TX, typename TY>
void BiasBackward(const TX* __restrict x, const TY* __restrict dy, const float* bias,
                  int64_t rows, int64_t channels, int threads, TX* __restrict dx,
                  float* dbias) {
  Layout layout(rows * channels, channels);
  std::vector<float> lanes = layout.Tile(std::vector<float>(bias, bias + channels));
  const float* __restrict b = lanes.data();
  std::vector<double> sum_dpre, unused;
  WithWidth(layout, [&](auto width) {
    ChannelSums(
        layout.rows, width, threads,
        [&](int64_t r, float* __restrict s, float*) {
          const TX* __restrict row = x + r * width;
          const TY* __restrict grad = dy + r * width;
          TX* __restrict out = dx + r * width;
#if JAXCNN_SIMD16
          if constexpr (Act::kKeepGrad) {
            if (Vectorised<Act>(width)) {
              for (int64_t c = 0; c < width; c += 16) {
                simd16::V pre = _mm512_add_ps(simd16::Load16(row + c), simd16::Load16(b + c));
                simd16::V dpre = Act::Grad(pre, simd16::Load16(grad + c));
                simd16::Store16(_mm512_add_ps(simd16::Load16(s + c), dpre), s + c);
                simd16::Store16(dpre, out + c);
              }
              return;
            }
          }
#endif
          for (int64_t c = 0; c < width; ++c) {
            float dpre = Act::Grad(Load(row[c]) + b[c], Load(grad[c]));
            s[c] += dpre;
            Store(dpre, out + c);
          }
        },
        sum_dpre, unused);
  });
  sum_dpre = layout.Fold(sum_dpre);
  for (int64_t c = 0; c < channels; ++c) dbias[c] = static_cast<float>(sum_dpre[c]);
}

bool SameShape(ffi::AnyBuffer::Dimensions a, ffi::AnyBuffer::Dimensions b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

// Calls `f` with a value of the activation's struct (Check has validated the number)
// and whether there is a residual, as a std::bool_constant.
template <typename F>
void DispatchActivation(int64_t activation, bool residual, F&& f) {
  auto with = [&](auto act) {
    if (residual) {
      f(act, std::true_type{});
    } else {
      f(act, std::false_type{});
    }
  };
  switch (activation) {
    case kIdentity: with(Identity{}); break;
    case kRelu: with(Relu{}); break;
    case kGelu: with(Gelu{}); break;
    case kGeluExact: with(GeluExact{}); break;
  }
}

// A residual is either empty (none) or has y's shape and dtype.
bool NoResidual(ffi::AnyBuffer residual) { return residual.element_count() == 0; }

ffi::Error CheckResidual(ffi::AnyBuffer residual, ffi::AnyBuffer y) {
  if (NoResidual(residual) ||
      (residual.element_type() == y.element_type() &&
       SameShape(residual.dimensions(), y.dimensions()))) {
    return ffi::Error::Success();
  }
  return ffi::Error::InvalidArgument(
      "jaxcnn batch norm: the residual must be empty or like y (shape and dtype)");
}

ffi::Error Check(ffi::AnyBuffer x, ffi::AnyBuffer y, int64_t activation,
                 std::initializer_list<ffi::Buffer<ffi::F32>*> vectors) {
  if (!Floating(x.element_type()) || !Floating(y.element_type())) {
    return ffi::Error::InvalidArgument("jaxcnn batch norm: only float32 and bfloat16");
  }
  if (x.dimensions().size() < 2 || !SameShape(x.dimensions(), y.dimensions())) {
    return ffi::Error::InvalidArgument("jaxcnn batch norm: x and y must share a shape (>= 2-D)");
  }
  int64_t channels = x.dimensions().back();
  for (auto* v : vectors) {
    if (v->dimensions().size() != 1 || v->dimensions()[0] != channels) {
      return ffi::Error::InvalidArgument("jaxcnn batch norm: per-channel vectors must be (C,)");
    }
  }
  if (activation < kIdentity || activation > kGeluExact) {
    return ffi::Error::InvalidArgument("jaxcnn batch norm: activation must be 0 to 3");
  }
  return ffi::Error::Success();
}

ffi::Error NormForward(ffi::AnyBuffer x, ffi::AnyBuffer residual, ffi::Buffer<ffi::F32> scale,
                       ffi::Buffer<ffi::F32> bias, ffi::Result<ffi::AnyBuffer> y,
                       ffi::ResultBuffer<ffi::F32> mean, ffi::ResultBuffer<ffi::F32> var,
                       float epsilon, int64_t activation) {
  ffi::Error error = Check(x, *y, activation, {&scale, &bias});
  if (error.failure()) return error;
  error = CheckResidual(residual, *y);
  if (error.failure()) return error;
  int64_t channels = x.dimensions().back();
  if (channels == 0) return ffi::Error::Success();  // all outputs empty; XLA skips these
  int64_t rows = static_cast<int64_t>(x.element_count()) / channels;
  jaxcnn::InFlight team;
  Dispatch(x.element_type(), y->element_type(), [&](auto tx, auto ty) {
    using TX = decltype(tx);
    using TY = decltype(ty);
    DispatchActivation(activation, !NoResidual(residual), [&](auto act, auto with_residual) {
      Forward<decltype(act), decltype(with_residual)::value>(
          static_cast<const TX*>(x.untyped_data()),
          static_cast<const TY*>(residual.untyped_data()), scale.typed_data(),
          bias.typed_data(), epsilon, rows, channels, team.threads,
          static_cast<TY*>(y->untyped_data()), mean->typed_data(), var->typed_data());
    });
  });
  return ffi::Error::Success();
}

ffi::Error NormBackward(ffi::AnyBuffer x, ffi::AnyBuffer residual, ffi::AnyBuffer dy,
                        ffi::Buffer<ffi::F32> mean, ffi::Buffer<ffi::F32> var,
                        ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> bias,
                        ffi::Buffer<ffi::F32> dmean, ffi::Buffer<ffi::F32> dvar,
                        ffi::Result<ffi::AnyBuffer> dx, ffi::Result<ffi::AnyBuffer> dresidual,
                        ffi::ResultBuffer<ffi::F32> dscale, ffi::ResultBuffer<ffi::F32> dbias,
                        float epsilon, int64_t activation) {
  ffi::Error error = Check(x, dy, activation, {&mean, &var, &scale, &bias, &dmean, &dvar});
  if (error.failure()) return error;
  error = CheckResidual(residual, dy);
  if (error.failure()) return error;
  if (dresidual->element_type() != residual.element_type() ||
      !SameShape(dresidual->dimensions(), residual.dimensions())) {
    return ffi::Error::InvalidArgument("jaxcnn batch norm: dresidual must be like the residual");
  }
  if (dx->element_type() != x.element_type() || !SameShape(dx->dimensions(), x.dimensions())) {
    return ffi::Error::InvalidArgument("jaxcnn batch norm: dx must be like x");
  }
  int64_t channels = x.dimensions().back();
  if (channels == 0) return ffi::Error::Success();  // all outputs empty; XLA skips these
  int64_t rows = static_cast<int64_t>(x.element_count()) / channels;
  jaxcnn::InFlight team;
  Dispatch(x.element_type(), dy.element_type(), [&](auto tx, auto ty) {
    using TX = decltype(tx);
    using TY = decltype(ty);
    DispatchActivation(activation, !NoResidual(residual), [&](auto act, auto with_residual) {
      Backward<decltype(act), decltype(with_residual)::value>(
          static_cast<const TX*>(x.untyped_data()),
          static_cast<const TY*>(residual.untyped_data()),
          static_cast<const TY*>(dy.untyped_data()), mean.typed_data(), var.typed_data(),
          scale.typed_data(), bias.typed_data(), dmean.typed_data(), dvar.typed_data(), epsilon,
          rows, channels, team.threads, static_cast<TX*>(dx->untyped_data()),
          static_cast<TY*>(dresidual->untyped_data()), dscale->typed_data(),
          dbias->typed_data());
    });
  });
  return ffi::Error::Success();
}

ffi::Error BiasForwardHandler(ffi::AnyBuffer x, ffi::Buffer<ffi::F32> bias,
                              ffi::Result<ffi::AnyBuffer> y, int64_t activation) {
  ffi::Error error = Check(x, *y, activation, {&bias});
  if (error.failure()) return error;
  int64_t channels = x.dimensions().back();
  if (channels == 0) return ffi::Error::Success();
  int64_t rows = static_cast<int64_t>(x.element_count()) / channels;
  jaxcnn::InFlight team;
  Dispatch(x.element_type(), y->element_type(), [&](auto tx, auto ty) {
    using TX = decltype(tx);
    using TY = decltype(ty);
    DispatchActivation(activation, false, [&](auto act, auto) {
      BiasForward<decltype(act)>(static_cast<const TX*>(x.untyped_data()), bias.typed_data(),
                                 rows, channels, team.threads,
                                 static_cast<TY*>(y->untyped_data()));
    });
  });
  return ffi::Error::Success();
}

ffi::Error BiasBackwardHandler(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Buffer<ffi::F32> bias,
                               ffi::Result<ffi::AnyBuffer> dx, ffi::ResultBuffer<ffi::F32> dbias,
                               int64_t activation) {
  ffi::Error error = Check(x, dy, activation, {&bias});
  if (error.failure()) return error;
  if (dx->element_type() != x.element_type() || !SameShape(dx->dimensions(), x.dimensions())) {
    return ffi::Error::InvalidArgument("jaxcnn bias activation: dx must be like x");
  }
  int64_t channels = x.dimensions().back();
  if (channels == 0) return ffi::Error::Success();
  int64_t rows = static_cast<int64_t>(x.element_count()) / channels;
  jaxcnn::InFlight team;
  Dispatch(x.element_type(), dy.element_type(), [&](auto tx, auto ty) {
    using TX = decltype(tx);
    using TY = decltype(ty);
    DispatchActivation(activation, false, [&](auto act, auto) {
      BiasBackward<decltype(act)>(static_cast<const TX*>(x.untyped_data()),
                                  static_cast<const TY*>(dy.untyped_data()), bias.typed_data(),
                                  rows, channels, team.threads,
                                  static_cast<TX*>(dx->untyped_data()), dbias->typed_data());
    });
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnBatchNormForward, NormForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("epsilon")
                                  .Attr<int64_t>("activation"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnBatchNormBackward, NormBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<float>("epsilon")
                                  .Attr<int64_t>("activation"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnBiasActivationForward, BiasForwardHandler,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("activation"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnBiasActivationBackward, BiasBackwardHandler,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("activation"));
