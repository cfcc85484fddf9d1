"""Batch norm and the activation after it as one op, with a hand-written gradient.

:func:`batch_norm_activation` computes, over every axis but the last (channels),
``y = activation((x - mean) * rsqrt(var + epsilon) * scale + bias)`` with the batch's
``mean`` and (biased) ``var``, and returns ``(y, mean, var)``. :class:`BatchNorm` is
``flax.linen.BatchNorm`` with the same variables and defaults, plus an ``activation``,
that uses it when training.

Why: autodiff of Flax's batch norm followed by an activation keeps float32 copies of
the centred input and of the pre-activation for the backward pass, and reads them in
several passes. On a CPU each pass over a large map is paid in memory traffic (4-7 GB/s
on the 2-core machine of the perf notes). The gradient written out keeps only ``x``
(the conv output, alive anyway), two numbers per channel and the parameters, and
recomputes the rest: one pass for the two sums ``sum(dpre)`` and ``sum(dpre * xhat)``
(XLA may split it), one for ``dx``. Measured at the fast CIFAR net's shapes, the
gradient of norm + GELU is 1.5-1.6x faster in bfloat16 (48 -> 30 ms), norm + ReLU
1.2-1.7x in float32 at ResNet-20's; the fast CIFAR net's bfloat16 training step 1.18x
(``docs/perf_notes.md``, item 29).

On a CPU the forward and backward passes run on the binding's kernels
(``jaxcnn/onednn/batch_norm.cc``, through XLA's FFI) when the activation is identity,
ReLU or either GELU and the dtypes float32 / bfloat16: XLA:CPU runs each of its fusions
on one thread, the kernels split every pass over all cores. ResNet-20's training step
1.04x in float32, 1.22x in bfloat16 on a 2-core Zen 4, 1.12x and 1.42x on the Intel
Xeon; the fast CIFAR net's 1.03x and 1.17x there (``docs/perf_notes.md``, items 38-39).
``JAXCNN_NORM_BACKEND=auto|xla|native`` chooses (:func:`norm_backend`); other
activations (SiLU, ELU, ...) and other platforms use the XLA path below.

Numerics: the statistics are float32 (at least), as Flax's; the activation is applied
to the float32 pre-activation and the result rounded once to ``dtype``. In float32 the
forward value is Flax's up to XLA's rounding; in bfloat16 it skips one rounding.
A custom VJP has no forward-mode rule: ``jax.jvp`` through a training-mode
``BatchNorm`` raises (``ConvBlock(fused_norm=False)`` keeps Flax's autodiff; oneDNN's
convolutions have no forward mode either, see :mod:`jaxcnn.conv_backend`).

Examples:
    >>> x = jnp.array([[1.0], [3.0]])
    >>> y, mean, var = batch_norm_activation(x, jnp.ones(1), jnp.zeros(1), 0.0)
    >>> y.ravel().tolist(), mean.tolist(), var.tolist()
    ([-1.0, 1.0], [2.0], [1.0])
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxcnn import placement
from jaxcnn.activations import Activation, activate, get_activation


def batch_norm_activation(
    x: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    epsilon: float,
    activation: Activation = None,
    dtype: Any = None,
    residual: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Training-mode batch norm over the last axis, then ``activation``; custom gradient.

    Args:
      x: ``(..., channels)``, any float dtype.
      scale, bias: ``(channels,)``.
      epsilon: added to the variance.
      activation: as for :func:`jaxcnn.activations.get_activation` (a name, an
        elementwise callable, or ``None`` for identity). It is applied to the float32
        pre-activation; its gradient comes from ``jax.vjp``.
      dtype: of ``y``; ``None`` promotes ``x``'s dtype with the parameters' (Flax's rule).
      residual: ``None``, or an array of ``x``'s shape added to the normalised value
        before the activation, ``y = activation(norm(x) + residual)``: a residual block's
        shortcut, so that the add, the activation and their gradient need no pass of
        their own. Its gradient is the pre-activation's.

    Returns:
      ``(y, mean, var)``: ``y`` like ``x`` in ``dtype``; the batch mean and biased
      variance per channel, in float32 (or wider), differentiable too.

    Raises:
      ValueError: if ``scale`` or ``bias`` is not ``(channels,)``, ``residual`` is not
        ``x``'s shape, or the activation name is unknown.

    Examples:
      >>> y, _, _ = batch_norm_activation(
      ...     jnp.array([[-1.0], [1.0]]), jnp.ones(1), jnp.zeros(1), 0.0, jax.nn.relu
      ... )
      >>> y.ravel().tolist()
      [0.0, 1.0]
    """
    channels = (x.shape[-1],) if x.ndim else ()
    for name, value in (("scale", scale), ("bias", bias)):
        if x.ndim < 2 or jnp.shape(value) != channels:
            raise ValueError(
                f"batch_norm_activation: {name} must have shape (channels,) = {channels} "
                f"for x of shape {tuple(x.shape)} (at least 2-D, channels last); got "
                f"{name} of shape {tuple(jnp.shape(value))}"
            )
    if residual is not None:
        _check_residual("batch_norm_activation", x, residual)
    out_dtype = jnp.dtype(dtype or jnp.result_type(x, scale, bias))
    fn = get_activation(activation)
    native = native_kernel_activation(x, fn, out_dtype, residual)
    return _fused(x, scale, bias, residual, float(epsilon), fn, out_dtype, native)


NORM_BACKENDS = ("auto", "xla", "native")


def norm_backend() -> str:
    """``JAXCNN_NORM_BACKEND``, validated: who runs training-mode batch norm on a CPU.

    * ``"auto"`` (default): the binding's kernels (``jaxcnn/onednn/batch_norm.cc``, every
      core) when the library builds here and the call is one they take (see
      :func:`native_kernel_activation`), else XLA;
    * ``"xla"``: always XLA's fusions (one thread each on jaxlib 0.10);
    * ``"native"``: the kernels wherever the call allows; raises if the library is
      unavailable.

    Read when a function is traced. ``docs/perf_notes.md``, item 38, has the measurements.

    Examples:
        >>> norm_backend() in NORM_BACKENDS
        True
    """
    from jaxcnn.conv_backend import env_choice

    return env_choice("JAXCNN_NORM_BACKEND", "auto", NORM_BACKENDS)


def native_kernel_activation(x: jax.Array, activation, dtype, residual=None) -> str | None:
    """The kernels' activation name if this call runs on them, else None (XLA runs it).

    They take float32 / bfloat16 ``x`` and ``y``, the activations named in
    ``ffi_norm.ACTIVATIONS`` (identity, ReLU, both GELUs), traced for a single CPU device
    (XLA cannot split a foreign call over several devices' shards); a residual in
    ``y``'s dtype (they add it in that dtype). :mod:`jaxcnn.bias_activation` asks it
    too, for the same kernels without a norm.

    Examples:
      >>> name = native_kernel_activation(jnp.ones((2, 8)), jax.nn.relu, jnp.float32)
      >>> name in ("relu", None)  # None where the binding does not build or is off
      True
    """
    choice = norm_backend()
    if choice == "xla":
        return None
    from jaxcnn.onednn import build, ffi_norm

    name = {get_activation(n): n for n in ffi_norm.ACTIVATIONS}.get(activation)
    if not ffi_norm.supports(x.dtype, dtype, name) or x.ndim < 2 or x.size == 0:
        return None
    if residual is not None and jnp.dtype(residual.dtype) != jnp.dtype(dtype):
        return None
    if not placement.one_cpu_device():
        return None
    if choice == "native":
        build.require()
    elif name in _VECTOR_GELUS and not build.simd16_built():
        return None  # no faster than XLA's fusions without AVX-512 (see _VECTOR_GELUS)
    return name if build.available() else None


# The kernels' GELUs are fast only with simd16.h's AVX-512 loops. Built without them (an
# AVX2-only CPU such as AMD's Zen 3) XLA's fusions won: the fast CIFAR net's training step
# 1.30x in float32 and in bfloat16 there; ReLU and identity kept the kernels, 1.02-1.05x
# (docs/perf_notes.md, item 77). Since the build's -fno-trapping-math lets GCC vectorise
# those loops (item 83) the kernels are level with XLA's fusions in that step, no faster.
_VECTOR_GELUS = ("gelu", "gelu_exact")


def trains_on_kernels(
    x: jax.Array, activation, dtype=None, param_dtype=jnp.float32, residual=None
) -> bool:
    """Whether :class:`BatchNorm` in training runs on the kernels for this input.

    Their output is a foreign call's result, so it is in memory already: a residual
    block need not write it again (``jaxcnn.fast_ops.materialize``). Same arguments as
    the module's: ``x`` the pre-norm map, ``dtype`` and ``param_dtype`` its attributes.

    Examples:
      >>> trains_on_kernels(jnp.ones((2, 8)), "relu", jnp.float32) in (True, False)
      True
    """
    out_dtype = jnp.dtype(dtype or jnp.result_type(x.dtype, param_dtype))
    return native_kernel_activation(x, get_activation(activation), out_dtype, residual) is not None


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _fused(x, scale, bias, residual, epsilon, activation, dtype, native):
    return _forward(x, scale, bias, residual, epsilon, activation, dtype, native)[0]


def _compute_dtype(x: jax.Array) -> Any:
    return jnp.promote_types(x.dtype, jnp.float32)


def _forward(x, scale, bias, residual, epsilon, activation, dtype, native):
    if native is not None:
        from jaxcnn.onednn import ffi_norm

        y, mean, var = ffi_norm.forward(x, scale, bias, epsilon, native, dtype, residual)
        return (y, mean, var), (x, residual, mean, var, scale, bias)
    axes = tuple(range(x.ndim - 1))
    wide = x.astype(_compute_dtype(x))
    # E[x^2] - E[x]^2, clipped at 0: Flax's default (use_fast_variance) in one pass.
    mean = wide.mean(axes)
    raw_var = (wide * wide).mean(axes) - mean * mean
    var = jnp.maximum(raw_var, 0.0)
    inv = lax.rsqrt(var + epsilon)
    # Flax's order: (x - mean) * (rsqrt(var + eps) * scale) + bias.
    c = functools.partial(_per_channel, x.ndim)
    pre = (wide - c(mean)) * c(inv * scale) + c(bias)
    if residual is not None:
        pre = pre + residual.astype(pre.dtype)
    y = activation(pre).astype(dtype)
    return (y, mean, var), (x, residual, mean, inv, raw_var > 0, scale, bias)


def _per_channel(ndim: int, v: jax.Array) -> jax.Array:
    """``v`` of shape ``(channels,)`` as ``(1, ..., 1, channels)``: explicit broadcasting."""
    return v.reshape((1,) * (ndim - 1) + v.shape)


def _fused_bwd(epsilon, activation, dtype, native, residuals, cotangents):
    del dtype
    if native is not None:
        from jaxcnn.onednn import ffi_norm

        x, residual, mean, var, scale, bias = residuals
        dy, dmean, dvar = cotangents
        dx, dresidual, dscale, dbias = ffi_norm.backward(
            x, dy, mean, var, scale, bias, dmean, dvar, epsilon, native, residual
        )
        return dx, dscale.astype(scale.dtype), dbias.astype(bias.dtype), dresidual
    x, residual, mean, inv, var_positive, scale, bias = residuals
    dy, dmean, dvar = cotangents
    axes = tuple(range(x.ndim - 1))
    n = x.size // x.shape[-1]
    wide = x.astype(_compute_dtype(x))
    c = functools.partial(_per_channel, x.ndim)
    # Recomputed rather than kept: a pass over x is cheaper than writing and reading
    # float32 copies of xhat and of the pre-activation.
    xhat = (wide - c(mean)) * c(inv)
    pre = xhat * c(scale) + c(bias)
    if residual is not None:
        pre = pre + residual.astype(pre.dtype)
    dpre = jax.vjp(activation, pre)[1](dy.astype(pre.dtype))[0]
    dresidual = None if residual is None else dpre.astype(residual.dtype)
    dbias = dpre.sum(axes)
    dscale = (dpre * xhat).sum(axes)
    # d/dx of the normalisation: (scale * inv / n) * (n * dpre - dbias - xhat * dscale).
    # Plus the mean and var outputs' own cotangents (the running statistics; zero in a
    # loss): d mean/dx = 1/n, d var/dx = 2 (x - mean) / n = 2 xhat / (n inv) where var > 0.
    per_n = scale * inv / n
    offset = dmean / n - per_n * dbias
    slope = jnp.where(var_positive, 2 * dvar / (n * inv), 0.0) - per_n * dscale
    dx = c(scale * inv) * dpre + c(offset) + c(slope) * xhat
    return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype), dresidual


_fused.defvjp(_forward, _fused_bwd)


def _check_residual(where: str, x: jax.Array, residual: jax.Array) -> None:
    """Raises ``ValueError`` (prefixed ``where``) unless ``residual`` has ``x``'s shape."""
    if jnp.shape(residual) != x.shape:
        raise ValueError(
            f"{where}: residual must have x's shape {tuple(x.shape)}; got "
            f"residual of shape {tuple(jnp.shape(residual))}"
        )


class BatchNorm(nn.Module):
    """``flax.linen.BatchNorm`` over the last axis, with the activation after it fused.

    Same variables (``params``: ``scale``, ``bias``; ``batch_stats``: ``mean``,
    ``var``), initial values, momentum rule and epsilon as Flax's, so checkpoints move
    between the two. When training (``use_running_average=False``) it runs
    :func:`batch_norm_activation` (one op with a hand-written gradient); otherwise the
    running statistics normalise exactly as Flax's do, and the activation follows
    through :func:`jaxcnn.activations.activate`.

    Attributes:
      use_running_average: as Flax's; may also be given to ``__call__``.
      momentum: weight of the old running value (0.9 = PyTorch's ``momentum=0.1``).
      epsilon: added to the variance.
      activation: name, callable or ``None`` (identity), applied after the norm.
      dtype: output dtype (``None``: from input and parameters).
      param_dtype: of ``scale`` and ``bias``.

    ``__call__(x, use_running_average=None, residual=None)``: ``residual``, of ``x``'s
    shape, is added to the normalised value before the activation (a residual block's
    shortcut: ``activation(norm(x) + residual)`` with no pass of its own).

    Examples:
      >>> norm = BatchNorm(False, momentum=0.9, epsilon=0.0, activation="relu")
      >>> x = jnp.array([[1.0, 0.0], [3.0, 2.0]])
      >>> variables = norm.init(jax.random.key(0), x)
      >>> y, updates = norm.apply(variables, x, mutable=["batch_stats"])
      >>> y.tolist(), updates["batch_stats"]["mean"].tolist()
      ([[0.0, 0.0], [1.0, 1.0]], [0.20000000298023224, 0.10000000149011612])
    """

    use_running_average: bool | None = None
    momentum: float = 0.99
    epsilon: float = 1e-5
    activation: Activation = None
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        use_running_average: bool | None = None,
        residual: jax.Array | None = None,
    ) -> jax.Array:
        """Normalises ``x`` (``residual``: added before the activation, ``x``'s shape)."""
        use_running_average = nn.merge_param(
            "use_running_average", self.use_running_average, use_running_average
        )
        features = (x.shape[-1],)
        scale = self.param("scale", nn.initializers.ones, features, self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, features, self.param_dtype)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
        fn = get_activation(self.activation)  # raises at once on an unknown name
        if use_running_average:
            c = functools.partial(_per_channel, x.ndim)
            y = x - c(ra_mean.value)  # promotes to float32 at least, as Flax's
            y = y * c(lax.rsqrt(ra_var.value + self.epsilon) * scale) + c(bias)
            if residual is not None:
                _check_residual("BatchNorm", x, residual)
                y = y + residual
            out_dtype = self.dtype or jnp.result_type(x, scale, bias)
            return activate(fn, y.astype(out_dtype))
        y, mean, var = batch_norm_activation(x, scale, bias, self.epsilon, fn, self.dtype, residual)
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y
