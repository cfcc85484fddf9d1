// Sixteen float lanes of AVX-512 for batch_norm.cc's GELU loops: loads and stores of
// float32 and bfloat16, and exp. Compiled only where the build's -march=native has
// AVX-512F and AVX512_BF16 (JAXCNN_SIMD16 is then 1, else 0, and the loops stay scalar).
//
// Why: GCC vectorises the scalar GELU loops (batch_norm.cc), but slowly: normalise +
// GELU + store over 128 x 31 x 31 x 64 bfloat16 took 2.7-3.0 ms, the same written with
// these intrinsics 1.8-1.9 ms, identity 0.8 ms (docs/perf_notes.md, item 60). The
// division in the GELU is not what costs (item 49); how GCC vectorises the rest is (its
// integer rounding to bfloat16 alone is about 0.4 ms of the difference).
#pragma once

#if defined(__AVX512F__) && defined(__AVX512BF16__)
#define JAXCNN_SIMD16 1

#include <immintrin.h>

#include <cstdint>

namespace jaxcnn::simd16 {

using V = __m512;

inline V Set(float v) { return _mm512_set1_ps(v); }

inline V Load16(const float* p) { return _mm512_loadu_ps(p); }
inline V Load16(const uint16_t* p) {  // bfloat16: the high half of a float32
  __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}

inline void Store16(V v, float* p) { _mm512_storeu_ps(p, v); }
// Round to nearest even, NaN stays NaN, as bfloat16.h's Store; vcvtneps2bf16 also takes
// float32 subnormals (below 1.2e-38) as zero, which Store rounds instead.
inline void Store16(V v, uint16_t* p) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)_mm512_cvtneps_pbh(v));
}

// The same Taylor polynomial as batch_norm.cc's scalar Exp (to r^7 after v = n ln2 + r),
// the same clamp to [-87, 88]; 2^n by vscalefps. NaN comes out as the clamp's bound
// (vmaxps returns its second operand): the GELUs multiply by pre, which keeps the NaN.
inline V Exp(V v) {
  v = _mm512_min_ps(_mm512_max_ps(v, Set(-87.0f)), Set(88.0f));
  V n = _mm512_roundscale_ps(_mm512_mul_ps(v, Set(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  V r = _mm512_fnmadd_ps(n, Set(0.693145751953125f), v);
  r = _mm512_fnmadd_ps(n, Set(1.428606765330187e-06f), r);
  V p = Set(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, Set(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, Set(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, Set(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, Set(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, Set(0.5f));
  p = _mm512_fmadd_ps(p, r, Set(1.0f));
  p = _mm512_fmadd_ps(p, r, Set(1.0f));
  return _mm512_scalef_ps(p, n);
}

}  // namespace jaxcnn::simd16

#else
#define JAXCNN_SIMD16 0
#endif
