// Winograd F(4x4, 3x3) tile transforms for float32 3x3 stride-1 convolutions, NHWC,
// as XLA FFI handlers on the binding's OpenMP team. jaxcnn/winograd.py multiplies the
// transformed tiles with XLA's batched dots and calls these for the rest.
//
// Why: oneDNN has no Winograd kernels without AVX-512, and XLA's direct convolutions
// already run near the SGEMM ceiling on the AVX2 Zen 3 (docs/perf_notes.md, item 85), so
// only fewer multiplications make the wide layers faster: 36 products per 4 x 4 output
// tile where direct convolution needs 144. Written in XLA ops the transforms were
// one-thread fusions that ate the gain (3x slower than the direct convolution).
//
// Shapes: x, dx [N, H, W, C]; y, dy [N, OH, OW, K]; V, dV [36, R, C] and M, dM [36, R, K]
// with R = N * th * tw tiles, th = ceil(OH / 4), tw = ceil(OW / 4), tile r = (n * th +
// ty) * tw + tx, its element p * 6 + q. With padding (top, left) at the low edges, tile
// (ty, tx) reads input rows 4 ty - top .. 4 ty - top + 5 (zero outside the image: the
// padding, at either end) and writes output rows 4 ty .. 4 ty + 3 (cropped at OH and
// OW). SAME is top = left = 1, VALID 0.
//
// The four transforms (Lavin and Gray 2016; points 0, +-1, +-2, infinity):
//   V = BT d B (input), y = AT M A (output), and their transposes for the gradients:
//   dM = A dy AT, dd = B dV BT (overlap-added into dx).

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

#include "team.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kA = 6;       // input tile side
constexpr int kM = 4;       // output tile side
constexpr int kBlock = 64;  // channels per pass: two 6 x 6 x 64 float tiles stay in L1

// Rows base, base + stride, ...: a transform's N operands or results, each n channels.
template <int N, typename T>
inline std::array<T*, N> RowsOf(T* base, int64_t stride) {
  std::array<T*, N> rows;
  for (int i = 0; i < N; ++i) rows[i] = base + i * stride;
  return rows;
}

// out[k] = sum_i BT[k][i] in[i] for the 6 x 6 BT, over n channels. Strides in floats.
inline void ApplyBT(const float* in, int64_t in_stride, float* out, int64_t out_stride, int n) {
  auto [d0, d1, d2, d3, d4, d5] = RowsOf<6>(in, in_stride);
  auto [o0, o1, o2, o3, o4, o5] = RowsOf<6>(out, out_stride);
#pragma GCC ivdep
  for (int c = 0; c < n; ++c) {
    float a = d4[c] - d2[c];
    float b = d3[c] - d1[c];
    o0[c] = 4.0f * (d0[c] - d2[c]) + a;  // 4 d0 - 5 d2 + d4
    o1[c] = (d3[c] + d4[c]) - 4.0f * (d1[c] + d2[c]);
    o2[c] = (d4[c] - d3[c]) + 4.0f * (d1[c] - d2[c]);
    o3[c] = a + 2.0f * b;  // -2 d1 - d2 + 2 d3 + d4
    o4[c] = a - 2.0f * b;
    o5[c] = 4.0f * (d1[c] - d3[c]) + d5[c] - d3[c];  // 4 d1 - 5 d3 + d5
  }
}

// out[i] = sum_k BT[k][i] in[k]: the transpose of ApplyBT.
inline void ApplyB(const float* in, int64_t in_stride, float* out, int64_t out_stride, int n) {
  auto [v0, v1, v2, v3, v4, v5] = RowsOf<6>(in, in_stride);
  auto [o0, o1, o2, o3, o4, o5] = RowsOf<6>(out, out_stride);
#pragma GCC ivdep
  for (int c = 0; c < n; ++c) {
    float s12 = v1[c] + v2[c];
    float d12 = v2[c] - v1[c];
    float s34 = v3[c] + v4[c];
    float d34 = v4[c] - v3[c];
    o0[c] = 4.0f * v0[c];
    o1[c] = 4.0f * (d12 + v5[c]) + 2.0f * d34;  // -4 v1 + 4 v2 - 2 v3 + 2 v4 + 4 v5
    o2[c] = -5.0f * v0[c] - 4.0f * s12 - s34;
    o3[c] = -(d12 + 2.0f * d34) - 5.0f * v5[c];  // v1 - v2 + 2 v3 - 2 v4 - 5 v5
    o4[c] = v0[c] + s12 + s34;
    o5[c] = v5[c];
  }
}

// out[u] = sum_k AT[u][k] in[k] for the 4 x 6 AT.
inline void ApplyAT(const float* in, int64_t in_stride, float* out, int64_t out_stride, int n) {
  auto [m0, m1, m2, m3, m4, m5] = RowsOf<6>(in, in_stride);
  auto [o0, o1, o2, o3] = RowsOf<4>(out, out_stride);
#pragma GCC ivdep
  for (int c = 0; c < n; ++c) {
    float s12 = m1[c] + m2[c];
    float d12 = m1[c] - m2[c];
    float s34 = m3[c] + m4[c];
    float d34 = m3[c] - m4[c];
    o0[c] = m0[c] + s12 + s34;
    o1[c] = d12 + 2.0f * d34;
    o2[c] = s12 + 4.0f * s34;
    o3[c] = d12 + 8.0f * d34 + m5[c];
  }
}

// out[k] = sum_u AT[u][k] in[u]: the transpose of ApplyAT (4 rows in, 6 out).
inline void ApplyA(const float* in, int64_t in_stride, float* out, int64_t out_stride, int n) {
  auto [g0, g1, g2, g3] = RowsOf<4>(in, in_stride);
  auto [o0, o1, o2, o3, o4, o5] = RowsOf<6>(out, out_stride);
#pragma GCC ivdep
  for (int c = 0; c < n; ++c) {
    float s02 = g0[c] + g2[c];
    float s13 = g1[c] + g3[c];
    float e = g0[c] + 4.0f * g2[c];
    float f = 2.0f * g1[c] + 8.0f * g3[c];
    o0[c] = g0[c];
    o1[c] = s02 + s13;
    o2[c] = s02 - s13;
    o3[c] = e + f;
    o4[c] = e - f;
    o5[c] = g3[c];
  }
}

// The tiling of one call: the image it reads or writes (n x h x w), the output map the
// tiles cover (oh x ow), and where output (0, 0)'s window starts in the image (-top,
// -left: the convolution's low padding; 0 for the output transforms, whose image is the
// output).
struct Tiles {
  int64_t n, h, w, oh, ow, top, left, th, tw, rows;
  Tiles(int64_t n_, int64_t h_, int64_t w_, int64_t oh_, int64_t ow_, int64_t top_,
        int64_t left_)
      : n(n_), h(h_), w(w_), oh(oh_), ow(ow_), top(top_), left(left_),
        th((oh_ + kM - 1) / kM), tw((ow_ + kM - 1) / kM), rows(n_ * th * tw) {}
};

// tile[i][j] = image[n, y0 + i, x0 + j, c0 : c0 + cb], zero outside the image.
template <int kSide>
void LoadTile(const float* image, const Tiles& t, int64_t n, int64_t y0, int64_t x0,
              int64_t channels, int64_t c0, int cb, float (*tile)[kSide][kBlock]) {
  for (int i = 0; i < kSide; ++i) {
    int64_t yy = y0 + i;
    for (int j = 0; j < kSide; ++j) {
      int64_t xx = x0 + j;
      if (yy < 0 || yy >= t.h || xx < 0 || xx >= t.w) {
        std::memset(tile[i][j], 0, sizeof(float) * cb);
      } else {
        const float* pixel = image + ((n * t.h + yy) * t.w + xx) * channels + c0;
        std::memcpy(tile[i][j], pixel, sizeof(float) * cb);
      }
    }
  }
}

// points[36, R, C] from image[N, _, _, C]: kSide x kSide tiles whose (0, 0) is at (4 ty -
// top, 4 tx - left), Apply (kSide rows in, 6 out) along both axes. The input transform
// (6 x 6 tiles, BT) and the output transform's transpose (4 x 4 tiles of dy, A).
template <int kSide, auto Apply>
void ToPoints(const float* image, const Tiles& t, int64_t c, int64_t top, int64_t left,
              int threads, float* points) {
  jaxcnn::EachRow(t.rows, threads, [&](int, int64_t r) {
    alignas(64) float d[kSide][kSide][kBlock];
    alignas(64) float s[kA][kSide][kBlock];
    int64_t n = r / (t.th * t.tw), ty = r / t.tw % t.th, tx = r % t.tw;
    for (int64_t c0 = 0; c0 < c; c0 += kBlock) {
      int cb = static_cast<int>(std::min<int64_t>(kBlock, c - c0));
      LoadTile<kSide>(image, t, n, kM * ty - top, kM * tx - left, c, c0, cb, d);
      for (int j = 0; j < kSide; ++j) {
        Apply(&d[0][j][0], kSide * kBlock, &s[0][j][0], kSide * kBlock, cb);
      }
      for (int p = 0; p < kA; ++p) {
        Apply(&s[p][0][0], kBlock, points + ((p * kA) * t.rows + r) * c + c0, t.rows * c, cb);
      }
    }
  });
}

// V[36, R, C] from x[N, H, W, C].
void InputTransform(const float* x, const Tiles& t, int64_t c, int threads, float* v) {
  ToPoints<kA, ApplyBT>(x, t, c, t.top, t.left, threads, v);
}

// tile[u][v] (kSide x kSide) from the 36 points of tile r, channels c0 .. c0 + cb: Apply
// (6 rows in, kSide out) along both axes. The output transform (AT, 4 x 4 tiles) and the
// input transform's transpose (B, 6 x 6).
template <int kSide, auto Apply>
void FromPoints(const float* points, const Tiles& t, int64_t r, int64_t c, int64_t c0, int cb,
                float (*tile)[kSide][kBlock]) {
  alignas(64) float s[kSide][kA][kBlock];
  for (int q = 0; q < kA; ++q) {  // s[u][q] = sum_p Apply[u][p] points[p][q]
    Apply(points + (q * t.rows + r) * c + c0, kA * t.rows * c, &s[0][q][0], kA * kBlock, cb);
  }
  for (int u = 0; u < kSide; ++u) Apply(&s[u][0][0], kBlock, &tile[u][0][0], kBlock, cb);
}

// y[N, OH, OW, K] from M[36, R, K] (the tiling's image is the output map).
void OutputTransform(const float* m, const Tiles& t, int64_t k, int threads, float* y) {
  jaxcnn::EachRow(t.rows, threads, [&](int, int64_t r) {
    alignas(64) float o[kM][kM][kBlock];
    int64_t n = r / (t.th * t.tw), ty = r / t.tw % t.th, tx = r % t.tw;
    for (int64_t k0 = 0; k0 < k; k0 += kBlock) {
      int kb = static_cast<int>(std::min<int64_t>(kBlock, k - k0));
      FromPoints<kM, ApplyAT>(m, t, r, k, k0, kb, o);
      for (int u = 0; u < kM; ++u) {
        int64_t yy = kM * ty + u;
        if (yy >= t.h) break;
        for (int v = 0; v < kM; ++v) {
          int64_t xx = kM * tx + v;
          if (xx >= t.w) break;
          std::memcpy(y + ((n * t.h + yy) * t.w + xx) * k + k0, o[u][v], sizeof(float) * kb);
        }
      }
    }
  });
}

// dM[36, R, K] from dy[N, OH, OW, K]: the transpose of OutputTransform (zero beyond OH,
// OW: outputs the tiles compute but the map lacks).
void OutputTransformGrad(const float* dy, const Tiles& t, int64_t k, int threads, float* dm) {
  ToPoints<kM, ApplyA>(dy, t, k, 0, 0, threads, dm);
}

// dx[N, H, W, C] from dV[36, R, C]: the transpose of InputTransform. One image per task,
// so that the overlapping tiles of an image add up on one thread.
void InputTransformGrad(const float* dv, const Tiles& t, int64_t c, int threads, float* dx) {
  jaxcnn::EachRow(t.n, threads, [&](int, int64_t n) {
    alignas(64) float e[kA][kA][kBlock];
    std::memset(dx + n * t.h * t.w * c, 0, sizeof(float) * t.h * t.w * c);
    for (int64_t ty = 0; ty < t.th; ++ty) {
      for (int64_t tx = 0; tx < t.tw; ++tx) {
        int64_t r = (n * t.th + ty) * t.tw + tx;
        int64_t y0 = kM * ty - t.top, x0 = kM * tx - t.left;
        for (int64_t c0 = 0; c0 < c; c0 += kBlock) {
          int cb = static_cast<int>(std::min<int64_t>(kBlock, c - c0));
          FromPoints<kA, ApplyB>(dv, t, r, c, c0, cb, e);
          for (int i = 0; i < kA; ++i) {
            int64_t yy = y0 + i;
            if (yy < 0 || yy >= t.h) continue;
            for (int j = 0; j < kA; ++j) {
              int64_t xx = x0 + j;
              if (xx < 0 || xx >= t.w) continue;
              float* out = dx + ((n * t.h + yy) * t.w + xx) * c + c0;
              const float* add = e[i][j];
#pragma GCC ivdep
              for (int ch = 0; ch < cb; ++ch) out[ch] += add[ch];
            }
          }
        }
      }
    }
  });
}

bool IsF32(const ffi::AnyBuffer& b) { return b.element_type() == ffi::DataType::F32; }

// Runs `body(tiling, channels, threads)` on the team after checking that `tiles` ([36, R,
// C]) and `image` ([N, H, W, C]) agree with an output map of oh x ow (R = N * ceil(oh /
// 4) * ceil(ow / 4)) whose window (0, 0) starts at (-top, -left) of the image.
template <typename F>
ffi::Error Run(const char* what, const ffi::AnyBuffer& tiles, const ffi::AnyBuffer& image,
               int64_t oh, int64_t ow, int64_t top, int64_t left, F&& body) {
  auto td = tiles.dimensions();
  auto id = image.dimensions();
  std::string name = std::string("jaxcnn winograd ") + what;
  if (!IsF32(tiles) || !IsF32(image) || td.size() != 3 || id.size() != 4) {
    return ffi::Error::InvalidArgument(name + ": float32 [36, R, C] and [N, H, W, C]");
  }
  if (oh < 1 || ow < 1) return ffi::Error::InvalidArgument(name + ": empty output map");
  Tiles t(id[0], id[1], id[2], oh, ow, top, left);
  if (td[0] != kA * kA || td[1] != t.rows || td[2] != id[3]) {
    return ffi::Error::InvalidArgument(name + ": tiles must be [36, N*ceil(OH/4)*ceil(OW/4), C]");
  }
  if (t.rows == 0 || id[3] == 0) return ffi::Error::Success();
  jaxcnn::InFlight team;
  body(t, id[3], team.threads);
  return ffi::Error::Success();
}

// The output transforms: their image is the output map.
template <typename F>
ffi::Error RunOnOutput(const char* what, const ffi::AnyBuffer& tiles, const ffi::AnyBuffer& y,
                       F&& body) {
  auto yd = y.dimensions();
  if (yd.size() != 4) {
    return ffi::Error::InvalidArgument(std::string("jaxcnn winograd ") + what + ": [N, OH, OW, K]");
  }
  return Run(what, tiles, y, yd[1], yd[2], 0, 0, std::forward<F>(body));
}

ffi::Error InputHandler(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> v, int64_t out_h,
                        int64_t out_w, int64_t pad_top, int64_t pad_left) {
  return Run("input transform", *v, x, out_h, out_w, pad_top, pad_left,
             [&](const Tiles& t, int64_t c, int threads) {
               InputTransform(static_cast<const float*>(x.untyped_data()), t, c, threads,
                              static_cast<float*>(v->untyped_data()));
             });
}

ffi::Error OutputHandler(ffi::AnyBuffer m, ffi::Result<ffi::AnyBuffer> y) {
  return RunOnOutput("output transform", m, *y, [&](const Tiles& t, int64_t k, int threads) {
    OutputTransform(static_cast<const float*>(m.untyped_data()), t, k, threads,
                    static_cast<float*>(y->untyped_data()));
  });
}

ffi::Error OutputGradHandler(ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dm) {
  return RunOnOutput("output transform gradient", *dm, dy,
                     [&](const Tiles& t, int64_t k, int threads) {
                       OutputTransformGrad(static_cast<const float*>(dy.untyped_data()), t, k,
                                           threads, static_cast<float*>(dm->untyped_data()));
                     });
}

ffi::Error InputGradHandler(ffi::AnyBuffer dv, ffi::Result<ffi::AnyBuffer> dx, int64_t out_h,
                            int64_t out_w, int64_t pad_top, int64_t pad_left) {
  return Run("input transform gradient", dv, *dx, out_h, out_w, pad_top, pad_left,
             [&](const Tiles& t, int64_t c, int threads) {
               InputTransformGrad(static_cast<const float*>(dv.untyped_data()), t, c, threads,
                                  static_cast<float*>(dx->untyped_data()));
             });
}

}  // namespace

namespace {

// Every transform: one buffer in, one out.
auto OneToOne() { return ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>(); }

// The input-side transforms also take the output map and the low padding.
auto OneToOneWithTiling() {
  return OneToOne()
      .Attr<int64_t>("out_h")
      .Attr<int64_t>("out_w")
      .Attr<int64_t>("pad_top")
      .Attr<int64_t>("pad_left");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnWinogradInput, InputHandler, OneToOneWithTiling());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnWinogradOutput, OutputHandler, OneToOne());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnWinogradOutputGrad, OutputGradHandler, OneToOne());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnWinogradInputGrad, InputGradHandler, OneToOneWithTiling());
