"""The sum of two arrays on the binding's OpenMP team: one FFI call (CPU only).

``add.cc`` adds two float32 or bfloat16 arrays of one shape, in float, rounding bfloat16
to nearest even as XLA does, on every core, where XLA:CPU runs an elementwise fusion on
one thread. :func:`jaxcnn.fast_ops.fork` calls it for the gradient of a value that two
layers read.

Examples (they need the binding; tests/test_fork.py runs them where it builds):
    >>> import jax.numpy as jnp
    >>> add(jnp.array([1.0, 2.0]), jnp.array([0.5, -2.0])).tolist()
    [1.5, 0.0]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcnn.onednn import build

DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


def add(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a + b`` for two float32 or bfloat16 arrays of one shape and dtype.

    Raises:
      ValueError: naming the shapes or dtypes when they differ or are not float32 /
        bfloat16.
    """
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(
            f"add: a and b must share shape and dtype; got {a.shape} {a.dtype} and "
            f"{b.shape} {b.dtype}"
        )
    if jnp.dtype(a.dtype) not in DTYPES:
        raise ValueError(f"add: dtype {a.dtype}; valid: float32, bfloat16")
    build.require()
    return jax.ffi.ffi_call(
        "jaxcnn_add", jax.ShapeDtypeStruct(a.shape, a.dtype), vmap_method="broadcast_all"
    )(a, b)
