"""Weight initialisers with exactly jax's values, drawn in a shape XLA:CPU compiles quickly.

``jax.nn.initializers.variance_scaling`` (Flax's default ``lecun_normal``, ``he_normal``,
``glorot_uniform``, ...) draws its random numbers in the kernel's own shape. On XLA:CPU,
the threefry generator's loop over a small 4-D shape takes LLVM seconds to compile:
``jax.random.bits`` for a (3, 3, 8, 16) conv kernel took 4.4 s on a 2-core AMD Zen 3,
the same 1,152 numbers drawn as one vector 0.2 s, and ``jax.jit(model.init)`` for
ResNet-20 6.5-8.0 s against 2.3-3.1 s (``docs/perf_notes.md``, item 81). A user pays
it at every first ``model.init`` in a notebook (each op compiles on its own there) and
in every ``fit``.

jax's threefry numbers each element by its row-major position, so the vector reshaped
to the kernel's shape is the same array, bit for bit; the fans (and so the scale) are
still computed from the kernel's shape, with jax's own arithmetic. ``tests/
test_initializers.py`` holds every mode, distribution and dtype equal to jax's.

Example (the MNIST net's first kernel; the same numbers as flax's default initialiser):

    >>> import jax
    >>> from flax import linen as nn
    >>> key, shape = jax.random.key(0), (3, 3, 1, 32)
    >>> kernel = lecun_normal()(key, shape)
    >>> kernel.shape, bool((kernel == nn.initializers.lecun_normal()(key, shape)).all())
    ((3, 3, 1, 32), True)
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

MODES = ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")
DISTRIBUTIONS = ("truncated_normal", "normal", "uniform")


def variance_scaling(scale: float, mode: str, distribution: str) -> Any:
    """``jax.nn.initializers.variance_scaling(scale, mode, distribution)``, drawn flat.

    For the default axes (inputs on axis -2, outputs on -1, the rest the receptive
    field) and real dtypes; anything else (a 1-D shape, a complex dtype, a sharded
    output) is handed to jax's initializer unchanged.

    Examples:
      >>> import jax
      >>> init = variance_scaling(2.0, "fan_out", "normal")  # torchvision's conv init
      >>> init(jax.random.key(0), (3, 3, 4, 8)).shape
      (3, 3, 4, 8)
      >>> variance_scaling(1.0, "fan_sum", "normal")
      Traceback (most recent call last):
      ...
      ValueError: mode='fan_sum'; valid: one of ('fan_in', 'fan_out', 'fan_avg', 'fan_geo_avg')
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; valid: one of {MODES}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution={distribution!r}; valid: one of {DISTRIBUTIONS}")
    in_its_own_shape = jax.nn.initializers.variance_scaling(scale, mode, distribution)

    def init(key, shape, dtype=jnp.float32, out_sharding=None):
        shape = tuple(int(n) for n in shape)
        if (
            len(shape) < 2
            or dtype is None
            or out_sharding is not None
            or not jnp.issubdtype(dtype, np.floating)
        ):
            return in_its_own_shape(key, shape, dtype, out_sharding=out_sharding)
        # jax's _compute_fans, operation for operation (floats, in this order), so the
        # scale rounds exactly as there.
        in_size, out_size = shape[-2], shape[-1]
        receptive_field = math.prod(shape) / in_size / out_size / 1
        fan_in, fan_out = in_size * receptive_field, out_size * receptive_field
        denominator = {
            "fan_in": fan_in,
            "fan_out": fan_out,
            "fan_avg": (fan_in + fan_out) / 2,
            "fan_geo_avg": (fan_in * fan_out) ** 0.5,
        }[mode]
        variance = jnp.array(scale / denominator, dtype=dtype)
        flat = (math.prod(shape),)
        if distribution == "truncated_normal":
            # The stddev of a standard normal truncated to (-2, 2), as jax divides by it.
            stddev = jnp.sqrt(variance) / jnp.array(0.87962566103423978, dtype)
            sample, factor = jax.random.truncated_normal(key, -2, 2, flat, dtype), stddev
        elif distribution == "normal":
            sample, factor = jax.random.normal(key, flat, dtype), jnp.sqrt(variance)
        else:
            sample, factor = jax.random.uniform(key, flat, dtype, -1), jnp.sqrt(3 * variance)
        return sample.reshape(shape) * factor

    return init


def lecun_normal() -> Any:
    """Flax's default kernel init (``nn.initializers.lecun_normal()``), drawn flat.

    Examples:
      >>> import jax
      >>> float(lecun_normal()(jax.random.key(0), (1600, 10)).std()) < 0.03  # 1/sqrt(1600)
      True
    """
    return variance_scaling(1.0, "fan_in", "truncated_normal")
