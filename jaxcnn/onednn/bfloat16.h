// float32 <-> bfloat16 for the binding's hand-written kernels (batch_norm.cc, conv_pool.cc):
// bfloat16 is stored as uint16_t, the high half of a float32. Overloads for float make
// every kernel one template over its element types.
#pragma once

#include <cstdint>
#include <cstring>

namespace jaxcnn {

inline float Load(float v) { return v; }
inline float Load(uint16_t v) {  // bfloat16: the high half of a float32
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline void Store(float v, float* out) { *out = v; }
inline void Store(float v, uint16_t* out) {  // round to nearest even, as XLA's convert
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  uint32_t quiet_nan = (bits >> 16) | 0x40u;  // NaN stays NaN
  *out = static_cast<uint16_t>((bits & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

}  // namespace jaxcnn
