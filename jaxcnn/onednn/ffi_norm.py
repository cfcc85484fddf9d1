"""Batch norm + identity/ReLU/GELU on the binding's OpenMP team: two FFI calls (CPU only).

``batch_norm.cc`` computes what :func:`jaxcnn.batch_norm.batch_norm_activation` computes
(statistics, normalisation, activation; and the gradient of all three) in a few passes
over the activations on every core, where XLA:CPU runs each of its fusions on one thread.
:mod:`jaxcnn.batch_norm` calls these when its ``native_kernel_activation`` says so
(``JAXCNN_NORM_BACKEND``, the dtypes, the activation, a single CPU device).

Examples (tests/test_batch_norm_native.py runs them where the binding builds):
    >>> import jax.numpy as jnp
    >>> y, mean, var = forward(jnp.array([[1.0], [3.0]]), jnp.ones(1), jnp.zeros(1), 0.0,
    ...                        "identity", jnp.float32)
    >>> y.ravel().tolist(), mean.tolist(), var.tolist()
    ([-1.0, 1.0], [2.0], [1.0])
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn.onednn import build

# The activations the kernels apply, by jaxcnn.activations name -> the "activation"
# attribute ("gelu": the tanh form, flax's nn.gelu; "gelu_exact": the erf form).
ACTIVATIONS = {"identity": 0, "relu": 1, "gelu": 2, "gelu_exact": 3}
DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


def supports(x_dtype, out_dtype, activation: str | None) -> bool:
    """Whether the kernels take these dtypes and this activation name.

    Examples:
        >>> supports(jnp.bfloat16, jnp.bfloat16, "gelu"), supports(jnp.float32, jnp.float32, "silu")
        (True, False)
    """
    return (
        jnp.dtype(x_dtype) in DTYPES and jnp.dtype(out_dtype) in DTYPES
        and activation in ACTIVATIONS
    )  # fmt: skip


def _vector(shape) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def _residual_operand(residual, like: jax.ShapeDtypeStruct):
    """The residual as the kernels take it: like ``y``, or an empty array for none."""
    if residual is None:
        return jnp.zeros((0,), like.dtype)
    if residual.shape != like.shape:
        raise ValueError(
            f"batch norm: residual must have y's shape {like.shape}; got {residual.shape}"
        )
    return residual.astype(like.dtype)


def forward(x, scale, bias, epsilon: float, activation: str, dtype, residual=None):
    """``(y, mean, var)`` of training-mode batch norm over the last axis, then ``activation``.

    Args:
      x: ``(..., C)``, float32 or bfloat16, at least 2-D.
      scale, bias: ``(C,)`` (computed in float32).
      epsilon: added to the variance.
      activation: a name in :data:`ACTIVATIONS`.
      dtype: of ``y``, float32 or bfloat16.
      residual: ``None``, or an array of ``x``'s shape added after the norm, before the
        activation (a residual block's shortcut; cast to ``dtype``).

    Returns:
      ``y`` like ``x`` in ``dtype``; ``mean`` and biased ``var``, float32 ``(C,)``.
    """
    build.require()
    channels = (x.shape[-1],)
    y = jax.ShapeDtypeStruct(x.shape, dtype)
    return jax.ffi.ffi_call(
        "jaxcnn_batch_norm_forward",
        (y, _vector(channels), _vector(channels)),
        vmap_method="sequential",
    )(
        x,
        _residual_operand(residual, y),
        scale.astype(jnp.float32),
        bias.astype(jnp.float32),
        epsilon=np.float32(epsilon),
        activation=np.int64(ACTIVATIONS[activation]),
    )


def backward(
    x, dy, mean, var, scale, bias, dmean, dvar, epsilon: float, activation: str, residual=None
):
    """``(dx, dresidual, dscale, dbias)``: :func:`forward`'s inputs' cotangents.

    From its outputs' cotangents ``dy, dmean, dvar``. ``dx`` has ``x``'s dtype,
    ``dresidual`` (``None`` without a residual) ``dy``'s; ``dscale`` and ``dbias`` are
    float32 ``(C,)``.
    """
    build.require()
    f32 = [a.astype(jnp.float32) for a in (mean, var, scale, bias, dmean, dvar)]
    operand = _residual_operand(residual, jax.ShapeDtypeStruct(dy.shape, dy.dtype))
    dx, dresidual, dscale, dbias = jax.ffi.ffi_call(
        "jaxcnn_batch_norm_backward",
        (
            jax.ShapeDtypeStruct(x.shape, x.dtype),
            jax.ShapeDtypeStruct(operand.shape, operand.dtype),
            _vector(scale.shape),
            _vector(bias.shape),
        ),
        vmap_method="sequential",
    )(
        x,
        operand,
        dy,
        *f32,
        epsilon=np.float32(epsilon),
        activation=np.int64(ACTIVATIONS[activation]),
    )
    return dx, None if residual is None else dresidual, dscale, dbias


def bias_forward(x, bias, activation: str, dtype):
    """``activation(x + bias)`` over the last axis, in ``dtype`` (a conv's bias without a norm).

    Args:
      x: ``(..., C)``, float32 or bfloat16, at least 2-D.
      bias: ``(C,)`` (added in float32).
      activation: a name in :data:`ACTIVATIONS`.
      dtype: of the result, float32 or bfloat16.
    """
    build.require()
    return jax.ffi.ffi_call(
        "jaxcnn_bias_activation_forward",
        jax.ShapeDtypeStruct(x.shape, dtype),
        vmap_method="sequential",
    )(x, bias.astype(jnp.float32), activation=np.int64(ACTIVATIONS[activation]))


def bias_backward(x, dy, bias, activation: str):
    """``(dx, dbias)`` of :func:`bias_forward` from ``dy``: ``dx`` in ``x``'s dtype, ``dbias``
    float32 ``(C,)`` (summed in float, then double)."""
    build.require()
    return jax.ffi.ffi_call(
        "jaxcnn_bias_activation_backward",
        (jax.ShapeDtypeStruct(x.shape, x.dtype), _vector(bias.shape)),
        vmap_method="sequential",
    )(x, dy, bias.astype(jnp.float32), activation=np.int64(ACTIVATIONS[activation]))
