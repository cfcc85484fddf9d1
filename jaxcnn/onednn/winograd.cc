// Winograd F(4x4, 3x3) for float32 3x3 stride-1 convolutions, NHWC, as XLA FFI
// handlers on the binding's OpenMP team: the four tile transforms, between which
// jaxcnn/winograd.py multiplies the transformed tiles with XLA's batched dots (wide
// layers), and two fused kernels that transform, multiply and transform back a block of
// tiles at a time in a thread's caches (narrow layers; at the end of this file).
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
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "team.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kA = 6;       // input tile side
constexpr int kM = 4;       // output tile side
constexpr int kBlock = 64;  // channels per pass: two 6 x 6 x 64 float tiles stay in L1
constexpr int kP = kA * kA;  // points per tile

// The four transforms along one axis, for one number (T = float) or eight channels at
// once (T = F8, the fused kernels below): d[i * ds] in, o[k * os] out.

// o[k] = sum_i BT[k][i] d[i] for the 6 x 6 BT.
template <typename T>
inline void BT6(const T* d, int64_t ds, T* o, int64_t os) {
  T d0 = d[0], d1 = d[ds], d2 = d[2 * ds], d3 = d[3 * ds], d4 = d[4 * ds], d5 = d[5 * ds];
  T a = d4 - d2;
  T b = d3 - d1;
  o[0] = 4.0f * (d0 - d2) + a;  // 4 d0 - 5 d2 + d4
  o[os] = (d3 + d4) - 4.0f * (d1 + d2);
  o[2 * os] = (d4 - d3) + 4.0f * (d1 - d2);
  o[3 * os] = a + 2.0f * b;  // -2 d1 - d2 + 2 d3 + d4
  o[4 * os] = a - 2.0f * b;
  o[5 * os] = 4.0f * (d1 - d3) + d5 - d3;  // 4 d1 - 5 d3 + d5
}

// o[i] = sum_k BT[k][i] v[k]: the transpose of BT6.
template <typename T>
inline void B6(const T* v, int64_t vs, T* o, int64_t os) {
  T v0 = v[0], v1 = v[vs], v2 = v[2 * vs], v3 = v[3 * vs], v4 = v[4 * vs], v5 = v[5 * vs];
  T s12 = v1 + v2;
  T d12 = v2 - v1;
  T s34 = v3 + v4;
  T d34 = v4 - v3;
  o[0] = 4.0f * v0;
  o[os] = 4.0f * (d12 + v5) + 2.0f * d34;  // -4 v1 + 4 v2 - 2 v3 + 2 v4 + 4 v5
  o[2 * os] = -5.0f * v0 - 4.0f * s12 - s34;
  o[3 * os] = -(d12 + 2.0f * d34) - 5.0f * v5;  // v1 - v2 + 2 v3 - 2 v4 - 5 v5
  o[4 * os] = v0 + s12 + s34;
  o[5 * os] = v5;
}

// o[u] = sum_k AT[u][k] m[k] for the 4 x 6 AT.
template <typename T>
inline void AT6(const T* m, int64_t ms, T* o, int64_t os) {
  T s12 = m[ms] + m[2 * ms];
  T d12 = m[ms] - m[2 * ms];
  T s34 = m[3 * ms] + m[4 * ms];
  T d34 = m[3 * ms] - m[4 * ms];
  o[0] = m[0] + s12 + s34;
  o[os] = d12 + 2.0f * d34;
  o[2 * os] = s12 + 4.0f * s34;
  o[3 * os] = d12 + 8.0f * d34 + m[5 * ms];
}

// o[k] = sum_u AT[u][k] g[u]: the transpose of AT6 (4 in, 6 out).
template <typename T>
inline void A4(const T* g, int64_t gs, T* o, int64_t os) {
  T g0 = g[0], g1 = g[gs], g2 = g[2 * gs], g3 = g[3 * gs];
  T s02 = g0 + g2;
  T s13 = g1 + g3;
  T e = g0 + 4.0f * g2;
  T f = 2.0f * g1 + 8.0f * g3;
  o[0] = g0;
  o[os] = s02 + s13;
  o[2 * os] = s02 - s13;
  o[3 * os] = e + f;
  o[4 * os] = e - f;
  o[5 * os] = g3;
}

// One of the above over n channels: in[i * in_stride + c] -> out[k * out_stride + c].
template <void (*Formula)(const float*, int64_t, float*, int64_t)>
inline void Apply(const float* in, int64_t in_stride, float* out, int64_t out_stride, int n) {
#pragma GCC ivdep
  for (int c = 0; c < n; ++c) Formula(in + c, in_stride, out + c, out_stride);
}

constexpr auto ApplyBT = Apply<BT6<float>>;
constexpr auto ApplyB = Apply<B6<float>>;
constexpr auto ApplyAT = Apply<AT6<float>>;
constexpr auto ApplyA = Apply<A4<float>>;

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

// Tile r's 36 points, all c channels, from image[N, _, _, C]: a kSide x kSide tile whose
// (0, 0) is at (4 ty - top, 4 tx - left), Apply (kSide rows in, 6 out) along both axes;
// point p * 6 + q goes to points[(p * 6 + q) * stride : + c]. The input transform (6 x 6
// tiles, BT) and the output transform's transpose (4 x 4 tiles of dy, A).
template <int kSide, auto Apply>
void TileToPoints(const float* image, const Tiles& t, int64_t r, int64_t c, int64_t top,
                  int64_t left, float* points, int64_t stride) {
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
      Apply(&s[p][0][0], kBlock, points + p * kA * stride + c0, stride, cb);
    }
  }
}

// points[36, R, C] from image[N, _, _, C]: every tile by TileToPoints.
template <int kSide, auto Apply>
void ToPoints(const float* image, const Tiles& t, int64_t c, int64_t top, int64_t left,
              int threads, float* points) {
  jaxcnn::EachRow(t.rows, threads, [&](int, int64_t r) {
    TileToPoints<kSide, Apply>(image, t, r, c, top, left, points + r * c, t.rows * c);
  });
}

// V[36, R, C] from x[N, H, W, C].
void InputTransform(const float* x, const Tiles& t, int64_t c, int threads, float* v) {
  ToPoints<kA, ApplyBT>(x, t, c, t.top, t.left, threads, v);
}

// tile[u][v] (kSide x kSide) from one tile's 36 points (point p * 6 + q at points[(p * 6
// + q) * stride], channels c0 .. c0 + cb): Apply (6 rows in, kSide out) along both axes.
// The output transform (AT, 4 x 4 tiles) and the input transform's transpose (B, 6 x 6).
template <int kSide, auto Apply>
void FromPoints(const float* points, int64_t stride, int64_t c0, int cb,
                float (*tile)[kSide][kBlock]) {
  alignas(64) float s[kSide][kA][kBlock];
  for (int q = 0; q < kA; ++q) {  // s[u][q] = sum_p Apply[u][p] points[p][q]
    Apply(points + q * stride + c0, kA * stride, &s[0][q][0], kA * kBlock, cb);
  }
  for (int u = 0; u < kSide; ++u) Apply(&s[u][0][0], kBlock, &tile[u][0][0], kBlock, cb);
}

// Tile r of y[N, OH, OW, K] (the tiling's image is the output map) from its 36 points
// (point i at points[i * stride : + k]), cropped at OH and OW.
void PointsToOutputTile(const float* points, int64_t stride, const Tiles& t, int64_t r,
                        int64_t k, float* y) {
  alignas(64) float o[kM][kM][kBlock];
  int64_t n = r / (t.th * t.tw), ty = r / t.tw % t.th, tx = r % t.tw;
  for (int64_t k0 = 0; k0 < k; k0 += kBlock) {
    int kb = static_cast<int>(std::min<int64_t>(kBlock, k - k0));
    FromPoints<kM, ApplyAT>(points, stride, k0, kb, o);
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
}

// y[N, OH, OW, K] from M[36, R, K].
void OutputTransform(const float* m, const Tiles& t, int64_t k, int threads, float* y) {
  jaxcnn::EachRow(t.rows, threads, [&](int, int64_t r) {
    PointsToOutputTile(m + r * k, t.rows * k, t, r, k, y);
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
          FromPoints<kA, ApplyB>(dv + r * c, t.rows * c, c0, cb, e);
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

// ---- Fused: transforms and products per block of tiles, in the caches ----------------
//
// Why: on narrow layers the unfused path's V and M ([36, R, C] each, 2.25x the image)
// go to memory and back between the transforms and XLA's dots, and a dot over 16
// channels does 16 multiply-adds per number it loads: a 32 x 32 16 -> 16 layer lost to
// oneDNN's AVX2 direct kernel 18.6 to 11.4 ms (item 85). Here a thread transforms a
// block of tiles into a buffer that stays in L2, multiplies it there and transforms the
// result back (docs/perf_notes.md, item 87).

// Eight float lanes (GCC's vector extension: a ymm register with AVX2).
typedef float F8 __attribute__((vector_size(32)));

inline F8 Load8(const float* p) {
  F8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void Store8(F8 v, float* p) { std::memcpy(p, &v, sizeof(v)); }

// TileToPoints for c a multiple of 8: eight channels at a time, the tile in registers
// (on narrow layers the per-pixel copies and short channel loops of the general path
// cost more than the products).
template <int kSide, void (*Formula)(const F8*, int64_t, F8*, int64_t)>
void TileToPoints8(const float* image, const Tiles& t, int64_t r, int64_t c, int64_t top,
                   int64_t left, float* points, int64_t stride) {
  int64_t n = r / (t.th * t.tw), ty = r / t.tw % t.th, tx = r % t.tw;
  int64_t y0 = kM * ty - top, x0 = kM * tx - left;
  for (int64_t c0 = 0; c0 < c; c0 += 8) {
    F8 s[kA][kSide];
    for (int j = 0; j < kSide; ++j) {  // column j: loaded, transformed into s[.][j]
      int64_t xx = x0 + j;
      F8 d[kSide];
      for (int i = 0; i < kSide; ++i) {
        int64_t yy = y0 + i;
        bool inside = yy >= 0 && yy < t.h && xx >= 0 && xx < t.w;
        d[i] = inside ? Load8(image + ((n * t.h + yy) * t.w + xx) * c + c0) : F8{};
      }
      Formula(d, 1, &s[0][j], kSide);
    }
    for (int p = 0; p < kA; ++p) {
      F8 o[kA];
      Formula(&s[p][0], 1, o, 1);
      for (int q = 0; q < kA; ++q) Store8(o[q], points + (p * kA + q) * stride + c0);
    }
  }
}

// PointsToOutputTile for k a multiple of 8, eight channels at a time in registers.
void PointsToOutputTile8(const float* points, int64_t stride, const Tiles& t, int64_t r,
                         int64_t k, float* y) {
  int64_t n = r / (t.th * t.tw), ty = r / t.tw % t.th, tx = r % t.tw;
  for (int64_t k0 = 0; k0 < k; k0 += 8) {
    F8 s[kM][kA];
    for (int q = 0; q < kA; ++q) {  // column q: loaded, transformed into s[.][q]
      F8 m[kA];
      for (int p = 0; p < kA; ++p) m[p] = Load8(points + (p * kA + q) * stride + k0);
      AT6(m, 1, &s[0][q], kA);
    }
    for (int u = 0; u < kM; ++u) {
      int64_t yy = kM * ty + u;
      if (yy >= t.h) break;
      F8 o[kM];
      AT6(&s[u][0], 1, o, 1);
      for (int v = 0; v < kM; ++v) {
        int64_t xx = kM * tx + v;
        if (xx >= t.w) break;
        Store8(o[v], y + ((n * t.h + yy) * t.w + xx) * k + k0);
      }
    }
  }
}

// The input side's tile r into a block's points, eight channels at a time where they
// are a multiple of 8.
template <int kSide, void (*Formula8)(const F8*, int64_t, F8*, int64_t),
          void (*Formula)(const float*, int64_t, float*, int64_t)>
void BlockTile(const float* image, const Tiles& t, int64_t r, int64_t c, int64_t top,
               int64_t left, float* points, int64_t stride) {
  if (c % 8 == 0) {
    TileToPoints8<kSide, Formula8>(image, t, r, c, top, left, points, stride);
  } else {
    TileToPoints<kSide, Apply<Formula>>(image, t, r, c, top, left, points, stride);
  }
}

// out[r][j] (+)= sum_i a[r * ars + i * ais] b[i * bs + j] for r < R, j < 8 NV: R x 8 NV
// accumulators in registers (6 x 2 = 12 of AVX2's 16), a broadcast per row and NV loads
// per step of i.
template <int R, int NV>
inline void MicroKernel(const float* a, int64_t ars, int64_t ais, const float* b, int64_t bs,
                        int64_t n, float* out, int64_t os, bool accumulate) {
  F8 acc[R][NV];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) acc[r][v] = accumulate ? Load8(out + r * os + 8 * v) : F8{};
  }
  for (int64_t i = 0; i < n; ++i) {
    F8 bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = Load8(b + i * bs + 8 * v);
    for (int r = 0; r < R; ++r) {
      float s = a[r * ars + i * ais];
      for (int v = 0; v < NV; ++v) acc[r][v] += s * bv[v];
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) Store8(acc[r][v], out + r * os + 8 * v);
  }
}

template <int NV>
inline void RowsKernel(int rows, const float* a, int64_t ars, int64_t ais, const float* b,
                       int64_t bs, int64_t n, float* out, int64_t os, bool accumulate) {
  switch (rows) {
    case 1: return MicroKernel<1, NV>(a, ars, ais, b, bs, n, out, os, accumulate);
    case 2: return MicroKernel<2, NV>(a, ars, ais, b, bs, n, out, os, accumulate);
    case 3: return MicroKernel<3, NV>(a, ars, ais, b, bs, n, out, os, accumulate);
    case 4: return MicroKernel<4, NV>(a, ars, ais, b, bs, n, out, os, accumulate);
    case 5: return MicroKernel<5, NV>(a, ars, ais, b, bs, n, out, os, accumulate);
    default: return MicroKernel<6, NV>(a, ars, ais, b, bs, n, out, os, accumulate);
  }
}

// out (rows x cols, row stride os) (+)= A (rows x n: a[r * ars + i * ais]) B (n x cols:
// b[i * bs + j]). Columns past the last multiple of 8 by plain loops.
void SmallGemm(int64_t rows, int64_t cols, int64_t n, const float* a, int64_t ars, int64_t ais,
               const float* b, int64_t bs, float* out, int64_t os, bool accumulate) {
  constexpr int kRows = 6;
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    int rb = static_cast<int>(std::min<int64_t>(kRows, rows - r0));
    const float* ar = a + r0 * ars;
    float* orow = out + r0 * os;
    int64_t j = 0;
    for (; j + 16 <= cols; j += 16) {
      RowsKernel<2>(rb, ar, ars, ais, b + j, bs, n, orow + j, os, accumulate);
    }
    if (j + 8 <= cols) {
      RowsKernel<1>(rb, ar, ars, ais, b + j, bs, n, orow + j, os, accumulate);
      j += 8;
    }
    for (; j < cols; ++j) {
      for (int r = 0; r < rb; ++r) {
        float sum = accumulate ? orow[r * os + j] : 0.0f;
        for (int64_t i = 0; i < n; ++i) sum += ar[r * ars + i * ais] * b[i * bs + j];
        orow[r * os + j] = sum;
      }
    }
  }
}

// Tiles per block: the block's two buffers (36 points x tiles x channels in and out)
// within ~192 KB of L2, a multiple of the micro-kernel's 6 rows; at least 24, so that
// each point's U (C x K, read once per block) and, in the kernel gradient, each
// thread's dU serve enough tiles (64 -> 64 layers: 6 tiles per block ran 20 % slower).
int64_t TilesPerBlock(int64_t c, int64_t k) {
  int64_t tiles = (192 * 1024 / 4) / (kP * (c + k));
  return std::max<int64_t>(24, tiles / 6 * 6);
}

// A thread's scratch, kept between calls (OpenMP's threads are long-lived).
float* Scratch(size_t floats) {
  thread_local std::vector<float> buffer;
  if (buffer.size() < floats) buffer.resize(floats);
  return buffer.data();
}

// Calls `body(thread, r0, nt, in, out)` on the team for blocks of tiles r0 .. r0 + nt
// (TilesPerBlock at a time), with the calling thread's two block buffers: in, one
// tile's 36 points of c channels after another, and out, the same of k channels.
template <typename F>
void EachBlock(const Tiles& t, int64_t c, int64_t k, int threads, F&& body) {
  const int64_t per = TilesPerBlock(c, k);
  jaxcnn::EachRow((t.rows + per - 1) / per, threads, [&](int thread, int64_t b) {
    float* in = Scratch(kP * per * (c + k));
    int64_t r0 = b * per;
    body(thread, r0, std::min(per, t.rows - r0), in, in + kP * per * c);
  });
}

// The output map's tiling for a tiling onto it (the image is the map, no padding).
Tiles OutputTiles(const Tiles& t) { return Tiles(t.n, t.oh, t.ow, t.oh, t.ow, 0, 0); }

// y[N, OH, OW, K] = x (*) g from x[N, H, W, C] and U = G g GT [36, C, K].
void FusedConv(const float* x, const float* u, const Tiles& t, int64_t c, int64_t k,
               int threads, float* y) {
  const Tiles out = OutputTiles(t);
  EachBlock(t, c, k, threads, [&](int, int64_t r0, int64_t nt, float* v, float* m) {
    for (int64_t i = 0; i < nt; ++i) {
      BlockTile<kA, BT6<F8>, BT6<float>>(x, t, r0 + i, c, t.top, t.left, v + i * kP * c, c);
    }
    for (int p = 0; p < kP; ++p) {  // M[p] (nt x K) = V[p] (nt x C) U[p] (C x K)
      SmallGemm(nt, k, c, v + p * c, kP * c, 1, u + p * c * k, k, m + p * k, kP * k, false);
    }
    for (int64_t i = 0; i < nt; ++i) {
      if (k % 8 == 0) {
        PointsToOutputTile8(m + i * kP * k, k, out, r0 + i, k, y);
      } else {
        PointsToOutputTile(m + i * kP * k, k, out, r0 + i, k, y);
      }
    }
  });
}

// dU[36, C, K] = sum over tiles of V^T dM, from x[N, H, W, C] and dy[N, OH, OW, K]: each
// thread sums its blocks into its own dU, then the threads' sums are added.
void FusedKernelGrad(const float* x, const float* dy, const Tiles& t, int64_t c, int64_t k,
                     int threads, float* du) {
  const int64_t size = kP * c * k;
  std::vector<float> partial(static_cast<size_t>(threads) * size);
  std::vector<char> started(threads, 0);  // whether a thread's sum holds a block yet
  const Tiles out = OutputTiles(t);
  EachBlock(t, c, k, threads, [&](int thread, int64_t r0, int64_t nt, float* v, float* dm) {
    float* sum = partial.data() + thread * size;
    for (int64_t i = 0; i < nt; ++i) {
      BlockTile<kA, BT6<F8>, BT6<float>>(x, t, r0 + i, c, t.top, t.left, v + i * kP * c, c);
      BlockTile<kM, A4<F8>, A4<float>>(dy, out, r0 + i, k, 0, 0, dm + i * kP * k, k);
    }
    bool accumulate = started[thread];
    for (int p = 0; p < kP; ++p) {  // dU[p] (C x K) += V[p]^T (C x nt) dM[p] (nt x K)
      SmallGemm(c, k, nt, v + p * c, 1, kP * c, dm + p * k, kP * k, sum + p * c * k, k,
                accumulate);
    }
    started[thread] = 1;
  });
  std::memset(du, 0, sizeof(float) * size);
  for (int thread = 0; thread < threads; ++thread) {
    if (!started[thread]) continue;
    const float* add = partial.data() + thread * size;
    for (int64_t i = 0; i < size; ++i) du[i] += add[i];
  }
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

// Runs `body(tiling, C, K, threads)` on the team after checking the fused kernels'
// operands: x [N, H, W, C], a map [N, OH, OW, K] (y or dy) and points [36, C, K] (U or
// dU), x's tiles placed on the map's with (0, 0)'s window at (-top, -left).
template <typename F>
ffi::Error RunFused(const char* what, const ffi::AnyBuffer& x, const ffi::AnyBuffer& map,
                    const ffi::AnyBuffer& points, int64_t top, int64_t left, F&& body) {
  auto xd = x.dimensions();
  auto md = map.dimensions();
  auto pd = points.dimensions();
  std::string name = std::string("jaxcnn winograd fused ") + what;
  if (!IsF32(x) || !IsF32(map) || !IsF32(points) || xd.size() != 4 || md.size() != 4 ||
      pd.size() != 3) {
    return ffi::Error::InvalidArgument(name + ": float32 [N, H, W, C], [N, OH, OW, K], [36, C, K]");
  }
  if (pd[0] != kP || pd[1] != xd[3] || pd[2] != md[3] || md[0] != xd[0]) {
    return ffi::Error::InvalidArgument(name + ": [36, C, K] must match x's C, the map's N and K");
  }
  jaxcnn::InFlight team;
  body(Tiles(xd[0], xd[1], xd[2], md[1], md[2], top, left), xd[3], md[3], team.threads);
  return ffi::Error::Success();
}

// x [N, H, W, C], U [36, C, K] -> y [N, OH, OW, K].
ffi::Error ConvHandler(ffi::AnyBuffer x, ffi::AnyBuffer u, ffi::Result<ffi::AnyBuffer> y,
                       int64_t pad_top, int64_t pad_left) {
  return RunFused("convolution", x, *y, u, pad_top, pad_left,
                  [&](const Tiles& t, int64_t c, int64_t k, int threads) {
                    FusedConv(static_cast<const float*>(x.untyped_data()),
                              static_cast<const float*>(u.untyped_data()), t, c, k, threads,
                              static_cast<float*>(y->untyped_data()));
                  });
}

// x [N, H, W, C], dy [N, OH, OW, K] -> dU [36, C, K] (zero where there are no tiles).
ffi::Error KernelGradHandler(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> du,
                             int64_t pad_top, int64_t pad_left) {
  return RunFused("kernel gradient", x, dy, *du, pad_top, pad_left,
                  [&](const Tiles& t, int64_t c, int64_t k, int threads) {
                    FusedKernelGrad(static_cast<const float*>(x.untyped_data()),
                                    static_cast<const float*>(dy.untyped_data()), t, c, k,
                                    threads, static_cast<float*>(du->untyped_data()));
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

// The fused kernels: two buffers in, one out, the low padding.
auto TwoToOneWithPadding() {
  return ffi::Ffi::Bind()
      .Arg<ffi::AnyBuffer>()
      .Arg<ffi::AnyBuffer>()
      .Ret<ffi::AnyBuffer>()
      .Attr<int64_t>("pad_top")
      .Attr<int64_t>("pad_left");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnWinogradInput, InputHandler, OneToOneWithTiling());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnWinogradOutput, OutputHandler, OneToOne());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnWinogradOutputGrad, OutputGradHandler, OneToOne());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnWinogradInputGrad, InputGradHandler, OneToOneWithTiling());

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnWinogradConv, ConvHandler, TwoToOneWithPadding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnWinogradKernelGrad, KernelGradHandler, TwoToOneWithPadding());
