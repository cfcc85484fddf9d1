"""The binding's fused conv + max pool (``JAXCNN_CONV_POOL_BACKEND``) equals XLA's; routing.

The equality tests need the binding (a C++ compiler and oneDNN: PyPI's
``onednn-devel-cpu-gomp``, a dependency, or ``apt install libdnnl-dev``) and skip with the
build's reason when it is missing; the switch's validation and routing are tested
everywhere.
"""

from __future__ import annotations

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import conv_backend, conv_pool
from jaxcnn.onednn import build, ffi_conv_pool

needs_native = pytest.mark.skipif(
    not build.available(), reason=f"binding unavailable: {build.unavailable_reason()}"
)


def run(backend, monkeypatch, x, kernel, window, padding="VALID"):
    """Output and gradients (x, kernel) of a probe loss, with conv_max_pool on ``backend``."""
    monkeypatch.setenv("JAXCNN_CONV_POOL_BACKEND", backend)

    def loss(x, kernel):  # a fresh function: jit traces it under `backend`
        y = conv_pool.conv_max_pool(x, kernel, window, padding)
        probe = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
        return jnp.sum(y.astype(jnp.float32) * probe), y

    (_, y), grads = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(x, kernel)
    text = jax.jit(loss).lower(x, kernel).as_text()
    return y, grads, text


def normal(seed, shape, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape).astype(dtype)


@needs_native
@pytest.mark.parametrize(
    "x_shape, kernel_size, features, window, padding",
    [
        ((4, 28, 28, 1), (3, 3), 32, (2, 2), "VALID"),  # the MNIST net's conv1
        ((2, 32, 32, 3), (3, 3), 32, (2, 2), "VALID"),  # the CIFAR net's conv1
        ((2, 11, 13, 2), (5, 3), 20, (3, 2), "SAME"),  # run-time sizes, a partial block
        ((2, 9, 9, 4), (2, 2), 7, (1, 1), ((1, 0), (2, 1))),  # window 1: no pooling at all
        ((1, 12, 12, 6), (3, 3), 40, (2, 2), "VALID"),  # 6 channels: "native" only
    ],
)
def test_float32_equals_xla(monkeypatch, x_shape, kernel_size, features, window, padding):
    x = normal(0, x_shape)
    kernel = normal(1, (*kernel_size, x_shape[-1], features))
    want_y, want_grads, xla_text = run("xla", monkeypatch, x, kernel, window, padding)
    y, grads, text = run("native", monkeypatch, x, kernel, window, padding)
    assert "jaxcnn_conv_max_pool_forward" in text
    assert "jaxcnn_conv_max_pool" not in xla_text
    # Sums of a few dozen products, grouped differently: float32 rounding.
    np.testing.assert_allclose(y, want_y, rtol=2e-6, atol=2e-6 * np.abs(want_y).max())
    for got, want in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5 * np.abs(want).max())


@needs_native
def test_bfloat16_ties_break_as_xla_does(monkeypatch):
    # In bfloat16 conv outputs that round alike tie; the first must win, as in XLA's
    # max_pool(conv(x)), or the gradient goes elsewhere.
    x = normal(2, (3, 28, 28, 1), jnp.bfloat16)
    kernel = normal(3, (3, 3, 1, 32), jnp.bfloat16)
    want_y, want_grads, _ = run("xla", monkeypatch, x, kernel, (2, 2))
    y, grads, _ = run("native", monkeypatch, x, kernel, (2, 2))
    assert y.dtype == jnp.bfloat16
    as_f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    np.testing.assert_array_equal(as_f32(y), as_f32(want_y))
    np.testing.assert_array_equal(as_f32(grads[0]), as_f32(want_grads[0]))
    # The kernel gradient: sums in float and double here, in float by XLA, then one
    # bfloat16 rounding each.
    np.testing.assert_allclose(as_f32(grads[1]), as_f32(want_grads[1]), rtol=2**-7)


@needs_native
def test_all_tied_windows_send_the_gradient_to_the_first_position(monkeypatch):
    monkeypatch.setenv("JAXCNN_CONV_POOL_BACKEND", "native")
    x = jnp.ones((1, 6, 6, 1))
    y, arg = ffi_conv_pool.forward(x, jnp.ones((3, 3, 1, 1)), (2, 2))
    assert np.all(np.asarray(y) == 9.0) and np.all(np.asarray(arg) == 0)
    grad = jax.grad(lambda k: jnp.sum(conv_pool.conv_max_pool(x, k, 2)))(jnp.ones((3, 3, 1, 1)))
    np.testing.assert_array_equal(grad, np.full((3, 3, 1, 1), 4.0))  # 4 windows, 9 ones each


@needs_native
def test_nan_propagates_like_max(monkeypatch):
    x = jnp.ones((1, 4, 4, 1)).at[0, 1, 1, 0].set(jnp.nan)
    monkeypatch.setenv("JAXCNN_CONV_POOL_BACKEND", "native")
    y = conv_pool.conv_max_pool(x, jnp.ones((1, 1, 1, 2)), 2)
    assert np.isnan(np.asarray(y[0, 0, 0])).all() and not np.isnan(np.asarray(y[0, 1, 1])).any()


@pytest.mark.parametrize(
    "backend, x, applies",
    [
        ("auto", jnp.ones((1, 8, 8, 3)), True),
        ("auto", jnp.ones((1, 8, 8, 8)), False),  # more than NATIVE_MAX_CHANNELS
        ("auto", jnp.ones((1, 8, 8, 1), jnp.bfloat16), True),
        ("auto", jnp.ones((1, 8, 8, 3), jnp.bfloat16), False),  # AMX's convolution wins
        ("native", jnp.ones((1, 8, 8, 3), jnp.bfloat16), True),
        ("native", jnp.ones((1, 8, 8, 8)), True),
        ("xla", jnp.ones((1, 8, 8, 3)), False),
        ("auto", jnp.ones((1, 8, 3)), False),  # 1-D
        ("auto", jnp.ones((1, 8, 8, 3), jnp.float16), False),
    ],
)
def test_routing(monkeypatch, backend, x, applies):
    monkeypatch.setenv("JAXCNN_CONV_POOL_BACKEND", backend)
    monkeypatch.setattr(conv_backend, "avx2_without_avx512_here", lambda: False)  # AVX-512
    kernel = jnp.ones((3,) * (x.ndim - 2) + (x.shape[-1], 4), x.dtype)
    window = (2,) * (x.ndim - 2)
    if applies and not build.available():
        pytest.skip(f"binding unavailable: {build.unavailable_reason()}")
    assert conv_pool._native_applies(x, kernel, window) is applies


@pytest.mark.parametrize("backend, applies", [("auto", False), ("native", True)])
def test_auto_leaves_an_avx2_only_cpu_to_space_to_depth(monkeypatch, backend, applies):
    # The kernel lost 2x to the space-to-depth convolution on the AVX2-only Zen 3.
    monkeypatch.setenv("JAXCNN_CONV_POOL_BACKEND", backend)
    monkeypatch.setattr(conv_backend, "avx2_without_avx512_here", lambda: True)
    if applies and not build.available():
        pytest.skip(f"binding unavailable: {build.unavailable_reason()}")
    x, kernel = jnp.ones((1, 8, 8, 1)), jnp.ones((3, 3, 1, 4))
    assert conv_pool._native_applies(x, kernel, (2, 2)) is applies


def test_a_bad_switch_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("JAXCNN_CONV_POOL_BACKEND", "fused")
    with pytest.raises(ValueError, match="JAXCNN_CONV_POOL_BACKEND='fused'; valid: auto, xla"):
        conv_pool.conv_max_pool(jnp.ones((1, 6, 6, 1)), jnp.ones((3, 3, 1, 2)), 2)


@needs_native
def test_the_kernel_rejects_more_taps_than_it_holds():
    # 7 x 7 x 3 = 147 taps > 128: the handler says so rather than overrunning its buffers.
    with pytest.raises(Exception, match="at most 128 taps"):
        jax.block_until_ready(
            ffi_conv_pool.forward(jnp.ones((1, 9, 9, 3)), jnp.ones((7, 7, 3, 2)), (1, 1))
        )


@needs_native
def test_doctests():
    assert doctest.testmod(ffi_conv_pool).failed == 0
