"""bias + GELU on the norm kernels (``jaxcnn.bias_activation``) equals XLA's, and routes right."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import bias_activation as ba
from jaxcnn.layers import ConvBlock
from jaxcnn.onednn import build

needs_native = pytest.mark.skipif(
    not build.available(), reason=f"binding unavailable: {build.unavailable_reason()}"
)


def run(backend, monkeypatch, x, bias, activation):
    """Value and gradients (x, bias) of a probe loss, and the lowered text, under ``backend``."""
    monkeypatch.setenv("JAXCNN_NORM_BACKEND", backend)

    def loss(x, bias):  # a fresh function: jit traces it under `backend`
        y = ba.bias_activation(x, bias, activation)
        weights = jnp.linspace(-1.0, 1.0, y.size).reshape(y.shape)
        return jnp.sum(y.astype(jnp.float32) * weights), y

    (_, y), grads = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(x, bias)
    return y, grads, jax.jit(loss).lower(x, bias).as_text()


def close(got, want, dtype):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    # float32: a sum's rounding (dbias: float32 sums in XLA, double in the kernel);
    # bfloat16: one rounding step (the kernel computes in float32 and rounds once).
    tolerance = 3e-5 if dtype == jnp.float32 else 2.0**-7
    np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * np.abs(want).max())


@needs_native
# (4, 7, 7, 24), (300, 3): a pixel a row; (2, 5, 16), (2, 4, 4, 24): rows of 16 and 192 lanes
# (the GELU on 16-lane vectors where the build has AVX-512, simd16.h).
@pytest.mark.parametrize("shape", [(4, 7, 7, 24), (2, 5, 16), (2, 4, 4, 24), (300, 3)])
@pytest.mark.parametrize("activation", ["gelu", "gelu_exact"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
def test_the_kernels_equal_xla(shape, activation, dtype, monkeypatch):
    x = (jax.random.normal(jax.random.key(0), shape) * 3.0).astype(dtype)
    bias = jax.random.normal(jax.random.key(1), shape[-1:])
    native = run("native", monkeypatch, x, bias, activation)
    # Against XLA's path in float32 on the same inputs: in bfloat16 XLA rounds x + bias and
    # the GELU's gradient terms to bfloat16 too, several steps from the exact values.
    xla = run("xla", monkeypatch, x.astype(jnp.float32), bias, activation)
    assert "jaxcnn_bias_activation_forward" in native[2]
    assert "jaxcnn_bias_activation" not in xla[2]
    assert native[0].dtype == dtype and native[1][0].dtype == dtype
    assert native[1][1].dtype == jnp.float32  # the parameter's dtype
    for got, want in zip((native[0], *native[1]), (xla[0], *xla[1]), strict=True):
        close(got, want, dtype)


@pytest.mark.parametrize("activation", ["relu", None, "silu"])
def test_other_activations_stay_on_xla(activation, monkeypatch):
    x, bias = jnp.ones((2, 3, 3, 4)), jnp.zeros(4)
    _, grads, text = run("auto", monkeypatch, x, bias, activation)
    assert "jaxcnn_bias_activation" not in text
    assert grads[1].shape == (4,)


def test_a_wrong_bias_names_the_shapes():
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\) for x of shape \(2, 4\)"):
        ba.bias_activation(jnp.ones((2, 4)), jnp.ones(3), "gelu")


@needs_native
@pytest.mark.parametrize(
    "block, routed",
    [
        (dict(norm=None, activation="gelu"), True),  # the whitening layer's form
        (dict(norm=None, activation="gelu", pool="max", pool_first=True), False),
        (dict(norm=None, activation="relu", fused_pool=False), False),
        (dict(norm="batch", activation="gelu"), False),  # the norm kernels take it
    ],
)
def test_conv_blocks_route_a_bias_and_gelu_without_norm(block, routed, monkeypatch):
    monkeypatch.setenv("JAXCNN_NORM_BACKEND", "auto")
    # As on AVX-512: auto leaves GELU to XLA where the kernels lack simd16.h's loops
    # (tests/test_batch_norm_native.py); which blocks route is what is tested here.
    monkeypatch.setattr(build, "simd16_built", lambda: True)
    model = ConvBlock(features=8, kernel_size=2, padding="VALID", **block)
    x = jax.random.normal(jax.random.key(0), (2, 7, 7, 3))
    variables = model.init(jax.random.key(1), x)

    def loss(params, x):
        y, _ = model.apply({**variables, "params": params}, x, train=True, mutable=True)
        return jnp.sum(y * y)

    text = jax.jit(jax.grad(loss)).lower(variables["params"], x).as_text()
    assert ("jaxcnn_bias_activation_backward" in text) is routed
    if routed:  # the block's output equals the plain sequence's
        monkeypatch.setenv("JAXCNN_NORM_BACKEND", "xla")
        want = model.apply(variables, x)
        monkeypatch.setenv("JAXCNN_NORM_BACKEND", "auto")
        np.testing.assert_allclose(model.apply(variables, x), want, rtol=1e-5, atol=1e-6)
