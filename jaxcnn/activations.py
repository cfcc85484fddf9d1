"""Activation functions by name, and applying them in a precision XLA:CPU runs well.

:func:`get_activation` resolves a name, a callable or ``None``; :func:`activate` applies
one, computing in float32 below float32 (why: its docstring). ``jaxcnn.layers``
re-exports all three names, as before this module existed.

Examples:
    >>> sorted(ACTIVATIONS)[:3]
    ['elu', 'gelu', 'gelu_exact']
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Activation = str | Callable[[jax.Array], jax.Array] | None

_SQRT_HALF = math.sqrt(0.5)


def gelu_exact(x: jax.Array) -> jax.Array:
    """GELU with the exact Gaussian CDF, written as PyTorch does: ``x / 2 * (1 + erf(x / sqrt 2))``.

    Why not ``flax.linen.gelu(x, approximate=False)``: JAX writes that with
    ``erfc(-x / sqrt 2)``, which XLA expands into an exponential and piecewise selects;
    on CPU its value and gradient took 168 ms on 1024 x 31 x 31 x 24 maps against 94 ms
    for this form (``docs/perf_notes.md``, item 30). The two differ by at most 1e-6
    (absolute) anywhere; this one is PyTorch's ``nn.GELU()``.

    Examples:
      >>> [round(float(v), 6) for v in gelu_exact(jnp.array([-1.0, 0.0, 1.0]))]
      [-0.158655, 0.0, 0.841345]
    """
    return x * 0.5 * (1 + lax.erf(x * _SQRT_HALF))


# Names accepted for `activation`; a callable is accepted too.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "relu6": nn.relu6,
    "gelu": nn.gelu,  # flax's default: the tanh approximation
    "gelu_exact": gelu_exact,  # the erf form (PyTorch's)
    "silu": nn.silu,
    "swish": nn.swish,
    "elu": nn.elu,
    "leaky_relu": nn.leaky_relu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "softplus": nn.softplus,
    "identity": lambda x: x,
}


def get_activation(activation: Activation) -> Callable[[jax.Array], jax.Array]:
    """Resolves an activation given by name, as a callable, or ``None`` (identity).

    Args:
      activation: a name in :data:`ACTIVATIONS`, any callable, or ``None``.

    Returns:
      The activation function.

    Examples:
      >>> float(get_activation("relu")(jnp.array(-1.0)))
      0.0
    """
    if activation is None:
        return ACTIVATIONS["identity"]
    if callable(activation):
        return activation
    if isinstance(activation, str) and activation.lower() in ACTIVATIONS:
        return ACTIVATIONS[activation.lower()]
    raise ValueError(
        f"activation={activation!r} is not known; valid names: {', '.join(ACTIVATIONS)} "
        "(or pass a callable, or None for identity)"
    )


# One comparison or select each: their bfloat16 result is already exact, so they skip
# activate()'s float32 round trip.
_EXACT_IN_ANY_DTYPE = (nn.relu, ACTIVATIONS["identity"])


def activate(activation: Activation, x: jax.Array) -> jax.Array:
    """Applies ``activation`` to ``x``; below float32 it computes in float32, rounding once.

    Why: XLA:CPU has no bfloat16 arithmetic, so a bfloat16 GELU or SiLU becomes a float32
    computation rounded back to bfloat16 after every one of its ops, forward and in the
    gradient. That loop does not vectorise: fast_cifar's GELU gradient took 74 ms of a
    457 ms bfloat16 step against 15 ms in float32 (``docs/perf_notes.md``, item 28).
    Converting once, computing in float32 and rounding the result once is what PyTorch's
    bfloat16 kernels do too, and it is the more accurate of the two. ReLU and identity,
    exact in any dtype, are applied as they are.

    Args:
      activation: as for :func:`get_activation`.
      x: the pre-activation, any float dtype.

    Returns:
      ``get_activation(activation)(x)`` with ``x``'s dtype.

    Examples:
      >>> y = activate("gelu", jnp.array([1.0], jnp.bfloat16))
      >>> y.dtype, float(y[0])
      (dtype(bfloat16), 0.83984375)
    """
    fn = get_activation(activation)
    low_precision = jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits < 32
    if fn in _EXACT_IN_ANY_DTYPE or not low_precision:
        return fn(x)
    return fn(x.astype(jnp.float32)).astype(x.dtype)
