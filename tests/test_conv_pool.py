"""jaxcnn.conv_pool.conv_max_pool equals conv -> max pool, value and gradient, ties included."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax import lax

from jaxcnn import conv_pool, shapes
from jaxcnn.conv_backend import use_conv_backend
from jaxcnn.layers import ConvBlock


def reference(x, kernel, window, padding="VALID"):
    rank = x.ndim - 2
    window = (window,) * rank if isinstance(window, int) else tuple(window)
    z = lax.conv_general_dilated(
        x, kernel, (1,) * rank, padding, dimension_numbers=conv_pool.dimension_numbers(rank)
    )
    return nn.max_pool(z, window, strides=window, padding="VALID")


def small_ints(seed, shape):
    # Small integers: every sum is exact in float32, so both formulations produce the
    # same conv outputs bit for bit and must break the many ties the same way.
    return jnp.asarray(np.random.default_rng(seed).integers(-2, 3, shape), jnp.float32)


def assert_equal_value_and_grad(x, kernel, window, padding="VALID"):
    def fast(a, b):
        return conv_pool.conv_max_pool(a, b, window, padding)

    def ref(a, b):
        return reference(a, b, window, padding)

    out = jax.jit(fast)(x, kernel)
    expected = jax.jit(ref)(x, kernel)
    np.testing.assert_array_equal(out, expected)
    probe = small_ints(99, expected.shape)
    grads = jax.jit(jax.grad(lambda a, b: jnp.sum(fast(a, b) * probe), (0, 1)))(x, kernel)
    wanted = jax.jit(jax.grad(lambda a, b: jnp.sum(ref(a, b) * probe), (0, 1)))(x, kernel)
    for got, want in zip(grads, wanted, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "x_shape, kernel_size, window, padding",
    [
        ((2, 10, 10, 3), (3, 3), (2, 2), "VALID"),  # CIFAR conv1 in small: tiles exactly
        ((2, 9, 9, 1), (3, 3), (2, 2), "VALID"),  # odd conv output: last row dropped
        ((1, 8, 11, 2), (3, 2), (2, 3), "SAME"),  # unequal kernel and window per axis
        ((1, 12, 2), (5,), (3,), ((1, 2),)),  # 1-D, explicit padding
        ((1, 7, 8, 6, 2), (3, 3, 2), (2, 2, 2), "VALID"),  # 3-D
        ((1, 11, 11, 3), (5, 5), (2, 2), ((2, 2), (2, 2))),  # 5x5 kernel: 3 taps per axis
        ((1, 9, 9, 2), (1, 1), (3, 3), "VALID"),  # 1x1 kernel, window 3
    ],
)
def test_equals_conv_then_max_pool(x_shape, kernel_size, window, padding):
    x = small_ints(0, x_shape)
    kernel = small_ints(1, (*kernel_size, x_shape[-1], 4))
    assert_equal_value_and_grad(x, kernel, window, padding)


def test_all_tied_windows_send_the_gradient_to_the_first_position():
    x = jnp.ones((1, 6, 6, 1))
    kernel = jnp.ones((3, 3, 1, 1))  # every conv output is 9: each window is a 4-way tie
    grad = jax.grad(lambda k: jnp.sum(conv_pool.conv_max_pool(x, k, 2)))(kernel)
    want = jax.grad(lambda k: jnp.sum(reference(x, k, 2)))(kernel)
    np.testing.assert_array_equal(grad, want)


def test_float_inputs_match_to_rounding():
    keys = jax.random.split(jax.random.key(0), 2)
    x = jax.random.normal(keys[0], (2, 16, 16, 3))
    kernel = jax.random.normal(keys[1], (3, 3, 3, 8))
    np.testing.assert_allclose(
        conv_pool.conv_max_pool(x, kernel, 2), reference(x, kernel, 2), rtol=1e-5, atol=1e-5
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(4, 11),
    k=st.integers(1, 4),
    p=st.integers(1, 3),
    channels=st.integers(1, 3),
    pad=st.sampled_from(["VALID", "SAME"]),
)
def test_shape_is_the_calculators_and_values_are_exact(size, k, p, channels, pad):
    conv = shapes.conv_output_shape((size, size), (k, k), (1, 1), pad)
    if min(conv) < p:
        return  # no whole window: covered by the error test below
    x = small_ints(size, (1, size, size, channels))
    kernel = small_ints(k, (k, k, channels, 2))
    out = conv_pool.conv_max_pool(x, kernel, p, pad)
    assert out.shape == (1, *shapes.pool_output_shape(conv, (p, p), (p, p), "VALID"), 2)
    np.testing.assert_array_equal(out, reference(x, kernel, p, pad))


@pytest.mark.parametrize(
    "kernel_shape, window, padding, message",
    [
        ((3, 3, 2, 4), 2, "VALID", "kernel must be"),  # 2 input channels, x has 3
        ((3, 3, 3, 4), (2, 0), "VALID", "window must be"),
        ((3, 3, 3, 4), (2, 2, 2), "VALID", "window must be"),
        ((3, 3, 3, 4), 5, "VALID", "larger than the conv output"),  # 6 - 3 + 1 = 4 < 5
        ((3, 3, 3, 4), 2, ((1, -1), (0, 0)), "padding must be"),
    ],
)
def test_bad_arguments_raise_naming_them(kernel_shape, window, padding, message):
    with pytest.raises(ValueError, match=message):
        conv_pool.conv_max_pool(jnp.ones((1, 6, 6, 3)), jnp.ones(kernel_shape), window, padding)


def _uses_space_to_depth(block, x) -> bool:
    with use_conv_backend("xla"):  # lax's convolutions, so the jaxpr names them
        variables = block.init(jax.random.key(0), x)
        jaxpr = str(jax.make_jaxpr(lambda v: block.apply(v, x))(variables))
    # The plain conv is traced either way (XLA drops it when unused); conv_max_pool adds
    # a second one (space-to-depth) or the binding's fused kernel.
    return jaxpr.count("conv_general_dilated[") == 2 or "jaxcnn_conv_max_pool" in jaxpr


@pytest.mark.parametrize(
    "channels, setting, expected",
    [(3, None, True), (8, None, False), (8, True, True), (3, False, False)],
)
def test_conv_block_switch(channels, setting, expected):
    # The automatic choice is for CPU, where this suite runs.
    block = ConvBlock(4, (3, 3), pool="max", space_to_depth=setting)
    assert _uses_space_to_depth(block, jnp.ones((1, 8, 8, channels))) is expected


def test_conv_block_values_and_grads_do_not_depend_on_the_switch():
    x = small_ints(3, (2, 10, 10, 3))
    on, off = (ConvBlock(4, (3, 3), pool="max", space_to_depth=s) for s in (True, False))
    variables = off.init(jax.random.key(0), x)
    variables = jax.tree.map(lambda v: jnp.round(v * 4), variables)  # exact sums again

    def loss(block, v):
        return jnp.sum(block.apply(v, x) * jnp.arange(4.0).reshape(1, 1, 1, 4))

    np.testing.assert_array_equal(on.apply(variables, x), off.apply(variables, x))
    g_on, g_off = (jax.grad(lambda v, b=b: loss(b, v))(variables) for b in (on, off))
    jax.tree.map(np.testing.assert_array_equal, g_on, g_off)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"stride": 2}, "space_to_depth=True needs a stride-1"),
        ({"pool": "avg"}, "space_to_depth=True needs the fused"),
        ({"space_to_depth": "yes"}, "space_to_depth='yes'; valid"),
    ],
)
def test_conv_block_rejects_space_to_depth_where_it_cannot_apply(kwargs, message):
    block = ConvBlock(4, (3, 3), **{"pool": "max", "space_to_depth": True, **kwargs})
    with pytest.raises(ValueError, match=message):
        block.init(jax.random.key(0), jnp.ones((1, 9, 9, 3)))
