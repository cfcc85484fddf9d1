// float32 and bfloat16 for the binding's hand-written kernels (batch_norm.cc, conv_pool.cc):
// bfloat16 is stored as uint16_t, the high half of a float32. Overloads for float make
// every kernel one template over its element types, and Dispatch picks the instance.
#pragma once

#include <cstdint>
#include <cstring>

#include "xla/ffi/api/ffi.h"

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

// Whether the kernels take this element type: float32 or bfloat16.
inline bool Floating(xla::ffi::DataType t) {
  return t == xla::ffi::DataType::F32 || t == xla::ffi::DataType::BF16;
}

// Calls `f` with a value of the element types (float, or uint16_t for bfloat16) of two
// Floating buffers, so that it can cast their pointers.
template <typename F>
void Dispatch(xla::ffi::DataType ta, xla::ffi::DataType tb, F&& f) {
  using xla::ffi::DataType;
  if (ta == DataType::F32 && tb == DataType::F32) f(float{}, float{});
  if (ta == DataType::F32 && tb == DataType::BF16) f(float{}, uint16_t{});
  if (ta == DataType::BF16 && tb == DataType::F32) f(uint16_t{}, float{});
  if (ta == DataType::BF16 && tb == DataType::BF16) f(uint16_t{}, uint16_t{});
}

}  // namespace jaxcnn
