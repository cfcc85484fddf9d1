"""Batch norm on the binding's kernels (``JAXCNN_NORM_BACKEND``) equals XLA's, and routes right.

The equality tests need the binding (a C++ compiler and oneDNN: PyPI's
``onednn-devel-cpu-gomp``, a dependency, or ``apt install libdnnl-dev``) and skip with the
build's reason when it is missing; the switch's validation and the fallback for other
activations are tested everywhere.
"""

from __future__ import annotations

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import batch_norm
from jaxcnn.onednn import build, ffi_norm

needs_native = pytest.mark.skipif(
    not build.available(), reason=f"binding unavailable: {build.unavailable_reason()}"
)
EPSILON = 1e-5


def run(backend, monkeypatch, x, scale, bias, activation, dtype=None, residual=None):
    """Outputs and gradients (x, scale, bias[, residual]) of a probe loss under ``backend``."""
    monkeypatch.setenv("JAXCNN_NORM_BACKEND", backend)
    args = (x, scale, bias) if residual is None else (x, scale, bias, residual)

    def loss(x, scale, bias, residual=None):  # a fresh function: jit traces it under `backend`
        y, mean, var = batch_norm.batch_norm_activation(
            x, scale, bias, EPSILON, activation, dtype, residual
        )
        weights = jnp.linspace(-1.0, 1.0, y.size).reshape(y.shape)
        total = jnp.sum(y.astype(jnp.float32) * weights)
        return total + jnp.sum(mean) * 0.3 + jnp.sum(var * scale) * 0.7, (y, mean, var)

    argnums = tuple(range(len(args)))
    (_, outs), grads = jax.jit(jax.value_and_grad(loss, argnums, has_aux=True))(*args)
    text = jax.jit(loss).lower(*args).as_text()
    return outs, grads, text


def inputs(shape, dtype=jnp.float32):
    channels = shape[-1]
    x = jax.random.normal(jax.random.key(0), shape) * 2.0 + 0.5
    scale = 1.0 + 0.5 * jax.random.normal(jax.random.key(1), (channels,))
    bias = jax.random.normal(jax.random.key(2), (channels,))
    return x.astype(dtype), scale, bias


def close(got, want, dtype):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    # float32: the rounding of a sum over a few hundred rows (the parameter gradients, summed
    # in float32 by XLA and in double by the kernels), relative to the largest value;
    # bfloat16: one bfloat16 rounding step.
    tolerance = 3e-5 if dtype == jnp.float32 else 2.0**-7
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * np.abs(want).max())


@needs_native
# Rows of 64 lanes (the kernels' Layout, when C divides 64 and the count is a multiple of
# it): 16 and 8 channels. One pixel's channels per row: 37 and 3 channels.
@pytest.mark.parametrize("shape", [(4, 6, 6, 16), (2, 4, 4, 8), (2, 5, 37), (300, 3)])
@pytest.mark.parametrize("activation", [None, "relu", "gelu", "gelu_exact"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
def test_values_and_gradients_equal_xla(shape, activation, dtype, monkeypatch):
    x, scale, bias = inputs(shape, dtype)
    native = run("native", monkeypatch, x, scale, bias, activation)
    xla = run("xla", monkeypatch, x, scale, bias, activation)
    assert "jaxcnn_batch_norm_forward" in native[2] and "jaxcnn_batch_norm" not in xla[2]
    for got, want in zip(native[0] + native[1], xla[0] + xla[1], strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        close(got, want, dtype)


@needs_native
@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
def test_a_residual_before_the_activation_equals_xla(activation, dtype, monkeypatch):
    x, scale, bias = inputs((4, 6, 6, 16), dtype)
    residual = (jax.random.normal(jax.random.key(3), x.shape) * 1.5).astype(dtype)
    native = run("native", monkeypatch, x, scale, bias, activation, dtype, residual)
    xla = run("xla", monkeypatch, x, scale, bias, activation, dtype, residual)
    assert "jaxcnn_batch_norm_forward" in native[2] and "jaxcnn_batch_norm" not in xla[2]
    assert native[1][3].dtype == dtype  # the residual's gradient, in its dtype
    for got, want in zip(native[0] + native[1], xla[0] + xla[1], strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        close(got, want, dtype)


@needs_native
def test_a_residual_in_another_dtype_than_y_stays_on_xla(monkeypatch):
    monkeypatch.setenv("JAXCNN_NORM_BACKEND", "native")
    x, scale, bias = inputs((4, 3, 3, 8), jnp.bfloat16)
    residual = jnp.ones(x.shape, jnp.float32)  # y is bfloat16: XLA adds it in float32
    f = jax.jit(lambda x, r: batch_norm.batch_norm_activation(x, scale, bias, EPSILON, "relu",
                                                              jnp.bfloat16, r))  # fmt: skip
    assert "jaxcnn_batch_norm" not in f.lower(x, residual).as_text()


@needs_native
@pytest.mark.parametrize("activation", ["gelu", "gelu_exact"])
# 600 rows of 2: one pixel's channels per loop row (scalar); 640: rows of 64 lanes, on
# 16-lane vectors where the build has AVX-512 (simd16.h).
@pytest.mark.parametrize("rows", [600, 640])
def test_gelu_tails_equal_xla(activation, rows, monkeypatch):
    # Pre-activations from -120 to 120: the kernels' exp is clamped to float's range there
    # (tanh and erf at +-1 exactly, no inf or NaN in the value or the gradient).
    x = jnp.linspace(-3.0, 3.0, 2 * rows).reshape(rows, 2)
    scale, bias = jnp.array([40.0, 2.0]), jnp.array([0.0, -1.0])
    native = run("native", monkeypatch, x, scale, bias, activation)
    xla = run("xla", monkeypatch, x, scale, bias, activation)
    for got, want in zip(native[0] + native[1], xla[0] + xla[1], strict=True):
        assert np.isfinite(got).all()
        close(got, want, jnp.float32)


@needs_native
@pytest.mark.parametrize("activation", ["relu", "gelu"])  # gelu: dpre kept in dx, float32
def test_a_float32_input_with_a_bfloat16_output(activation, monkeypatch):
    x, scale, bias = inputs((8, 4, 4, 8))
    native = run("native", monkeypatch, x, scale, bias, activation, jnp.bfloat16)
    xla = run("xla", monkeypatch, x, scale, bias, activation, jnp.bfloat16)
    assert native[0][0].dtype == jnp.bfloat16 and native[1][0].dtype == jnp.float32
    for got, want in zip(native[0] + native[1], xla[0] + xla[1], strict=True):
        close(got, want, jnp.bfloat16)


@needs_native
# (6, 5, 4): rows of one pixel; (8, 8, 4): rows of 64 lanes (the GELU on 16-lane vectors).
@pytest.mark.parametrize("shape", [(6, 5, 4), (8, 8, 4)])
@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_exact"])
def test_nan_spreads_through_its_channel_only_as_in_xla(shape, activation, monkeypatch):
    x, scale, bias = inputs(shape)
    x = x.at[2, 3, 1].set(jnp.nan)
    native = run("native", monkeypatch, x, scale, bias, activation)
    xla = run("xla", monkeypatch, x, scale, bias, activation)
    for got, want in zip(native[0] + native[1], xla[0] + xla[1], strict=True):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(native[0][0][..., 1]).all() and not np.isnan(native[0][0][..., 0]).any()


@needs_native
def test_vmap_runs_each_slice_on_its_own_statistics(monkeypatch):
    monkeypatch.setenv("JAXCNN_NORM_BACKEND", "native")
    x, scale, bias = inputs((3, 10, 4))

    def norm(x):
        return batch_norm.batch_norm_activation(x, scale, bias, EPSILON, "relu")[0]

    batched = jax.jit(jax.vmap(norm))(x)
    one_by_one = jnp.stack([jax.jit(norm)(x[i]) for i in range(3)])
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-6, atol=1e-6)


def test_other_activations_and_the_xla_setting_stay_on_xla(monkeypatch):
    x, scale, bias = inputs((4, 3, 3, 8))
    monkeypatch.setenv("JAXCNN_NORM_BACKEND", "auto")
    silu = jax.jit(lambda x: batch_norm.batch_norm_activation(x, scale, bias, EPSILON, "silu"))
    assert "jaxcnn_batch_norm" not in silu.lower(x).as_text()
    monkeypatch.setenv("JAXCNN_NORM_BACKEND", "xla")
    relu = jax.jit(lambda x: batch_norm.batch_norm_activation(x, scale, bias, EPSILON, "relu"))
    assert "jaxcnn_batch_norm" not in relu.lower(x).as_text()


@needs_native
@pytest.mark.parametrize("simd16", [True, False])
def test_auto_leaves_gelu_to_xla_where_the_kernels_lack_avx512(simd16, monkeypatch):
    # Without simd16.h's loops (an AVX2-only CPU) the GELU kernels lost to XLA's fusions;
    # ReLU and identity stay on them, and "native" still takes every activation.
    monkeypatch.setattr(build, "simd16_built", lambda: simd16)
    x = jnp.ones((4, 3, 3, 8))
    monkeypatch.setenv("JAXCNN_NORM_BACKEND", "auto")
    names = {
        name: batch_norm.native_kernel_activation(x, batch_norm.get_activation(name), x.dtype)
        for name in ("gelu", "relu", "identity")
    }
    assert names == {"gelu": "gelu" if simd16 else None, "relu": "relu", "identity": "identity"}
    monkeypatch.setenv("JAXCNN_NORM_BACKEND", "native")
    exact = batch_norm.get_activation("gelu_exact")
    assert batch_norm.native_kernel_activation(x, exact, x.dtype) == "gelu_exact"


@pytest.mark.parametrize("value", ["onednn", "gpu", "1"])
def test_a_bad_setting_names_the_variable_and_the_choices(value, monkeypatch):
    monkeypatch.setenv("JAXCNN_NORM_BACKEND", value)
    x, scale, bias = inputs((4, 3))
    with pytest.raises(ValueError, match=rf"JAXCNN_NORM_BACKEND={value!r}.*auto, xla, native"):
        batch_norm.batch_norm_activation(x, scale, bias, EPSILON, "relu")


def test_supported_dtypes_and_activations():
    assert ffi_norm.supports(jnp.float32, jnp.bfloat16, "identity")
    assert not ffi_norm.supports(jnp.float16, jnp.float16, "relu")
    assert ffi_norm.supports(jnp.bfloat16, jnp.bfloat16, "gelu_exact")
    assert not ffi_norm.supports(jnp.float32, jnp.float32, None)
    assert not ffi_norm.supports(jnp.float32, jnp.float32, "silu")


@needs_native
def test_doctests():
    result = doctest.testmod(ffi_norm)
    assert result.failed == 0 and result.attempted > 0
