"""A conv's bias and a GELU without a norm between them, as one op with its own gradient.

:func:`bias_activation` computes ``activation(x + bias)`` over the last axis (channels).
On a CPU, for either GELU, it runs on the batch-norm kernels' OpenMP team
(``jaxcnn/onednn/batch_norm.cc``): one pass forward, one backward that writes ``dx`` and
sums ``dbias``. Elsewhere it is :func:`jaxcnn.fast_ops.add_channel_bias` then
:func:`jaxcnn.activations.activate`, with ordinary autodiff: what :class:`jaxcnn.layers.ConvBlock`
computes without a norm.

Why: the fast CIFAR net's first layer (the 2x2 whitening conv, 24 channels, no norm)
ended in XLA fusions that XLA:CPU runs on one thread: bias + GELU forward (3.8 ms of a
150 ms bfloat16 step at batch 128) and the GELU's gradient behind the bias gradient's
sum. When the whitening kernel is frozen that sum is the gradient's only consumer, and
XLA turned it into a YNNPACK reduction that took six float32 copies of the map (122 MB
more scratch at batch 256); here it is one kernel pass (``docs/perf_notes.md``, item 50).
Identity and ReLU stay on XLA: cheap enough there. Same switch as the norm kernels:
``JAXCNN_NORM_BACKEND`` (:func:`jaxcnn.batch_norm.norm_backend`).

Numerics: the sum and the GELU are computed in float32 and rounded once to ``x``'s
dtype (XLA's path rounds the sum first in bfloat16); ``dbias`` is float32.

Examples:
    >>> y = bias_activation(jnp.array([[0.0, 1.0]]), jnp.array([1.0, -1.0]), "gelu")
    >>> [round(v, 4) for v in y.ravel().tolist()]
    [0.8412, 0.0]
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp  # noqa: F401 (the docstring examples use it)

from jaxcnn import fast_ops
from jaxcnn.activations import Activation, activate, get_activation

# The activations that run on the kernels here (the others cost XLA little).
NATIVE_ACTIVATIONS = ("gelu", "gelu_exact")


def native_activation(x: jax.Array, activation: Activation) -> str | None:
    """The kernels' name for ``activation`` if :func:`bias_activation` runs on them here."""
    from jaxcnn import batch_norm

    name = batch_norm.native_kernel_activation(x, get_activation(activation), x.dtype)
    return name if name in NATIVE_ACTIVATIONS else None


def bias_activation(x: jax.Array, bias: jax.Array, activation: Activation) -> jax.Array:
    """``activation(x + bias)`` over the last axis, in ``x``'s dtype.

    Args:
      x: ``(..., channels)``, at least 2-D; a conv's bias-free output.
      bias: ``(channels,)``, typically the float32 parameter.
      activation: as for :func:`jaxcnn.activations.get_activation`.

    Raises:
      ValueError: if ``bias`` is not ``(channels,)`` for ``x`` (or the name is unknown).
    """
    if bias.shape != (x.shape[-1],) or x.ndim < 2:
        raise ValueError(
            f"bias_activation: bias must have shape ({x.shape[-1]},) for x of shape "
            f"{tuple(x.shape)} (at least 2-D, channels last); got {tuple(bias.shape)}"
        )
    name = native_activation(x, activation)
    if name is None:
        return activate(activation, fast_ops.add_channel_bias(x, bias))
    return _native(x, bias, name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _native(x, bias, name):
    from jaxcnn.onednn import ffi_norm

    return ffi_norm.bias_forward(x, bias, name, x.dtype)


def _native_fwd(x, bias, name):
    return _native(x, bias, name), (x, bias)


def _native_bwd(name, residuals, dy):
    from jaxcnn.onednn import ffi_norm

    x, bias = residuals
    dx, dbias = ffi_norm.bias_backward(x, dy, bias, name)
    return dx, dbias.astype(bias.dtype)


_native.defvjp(_native_fwd, _native_bwd)
