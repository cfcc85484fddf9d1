"""jaxcnn.batch_norm: the fused norm + activation equals Flax's BatchNorm then the activation.

Values, the hand-written gradient (against autodiff of Flax's module, and against autodiff
of the same forward for the mean and variance outputs), bfloat16's single rounding, the
module's variables and running statistics, ``ConvBlock(fused_norm=...)`` both ways, and
the errors. Tiny shapes: every jit here compiles in well under a second.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import batch_norm, conv_backend
from jaxcnn.activations import get_activation
from jaxcnn.layers import ConvBlock

SHAPE = (4, 5, 5, 3)
EPSILON = 1e-5


@pytest.fixture(scope="module")
def data():
    keys = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(keys[0], SHAPE) * 2 + 1
    scale = jax.random.normal(keys[1], (3,)) + 1
    bias = jax.random.normal(keys[2], (3,))
    probe = jax.random.normal(keys[3], SHAPE)
    return x, scale, bias, probe


def flax_reference(x, scale, bias, activation):
    """Flax's BatchNorm (training), then the activation: the unfused path."""
    variables = {
        "params": {"scale": scale, "bias": bias},
        "batch_stats": {"mean": jnp.zeros(3), "var": jnp.ones(3)},
    }
    module = nn.BatchNorm(use_running_average=False, momentum=0.0, epsilon=EPSILON)
    y, updates = module.apply(variables, x, mutable=["batch_stats"])
    stats = updates["batch_stats"]  # momentum 0: exactly the batch's mean and variance
    return get_activation(activation)(y), stats["mean"], stats["var"]


def fused(x, scale, bias, activation):
    return batch_norm.batch_norm_activation(x, scale, bias, EPSILON, get_activation(activation))


def relative_error(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("activation", [None, "relu", "gelu", "silu"])
def test_value_and_gradient_equal_flax(data, activation):
    x, scale, bias, probe = data
    outs = jax.jit(fused, static_argnums=3)(x, scale, bias, activation)
    refs = jax.jit(flax_reference, static_argnums=3)(x, scale, bias, activation)
    for out, ref in zip(outs, refs, strict=True):
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)

    def loss(fn):
        return jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a, activation)[0] * probe), (0, 1, 2)))(
            x, scale, bias
        )

    for got, want in zip(loss(fused), loss(flax_reference), strict=True):
        assert relative_error(got, want) < 1e-5


@pytest.mark.parametrize("activation", [None, "relu", "gelu"])
def test_a_residual_is_added_before_the_activation(data, activation, monkeypatch):
    # XLA's path here; tests/test_batch_norm_native.py holds the kernels to it.
    monkeypatch.setenv("JAXCNN_NORM_BACKEND", "xla")
    x, scale, bias, probe = data
    residual = jnp.flip(probe, axis=0) * 1.5
    fn = get_activation(activation)

    def with_residual(x, scale, bias, residual):
        return batch_norm.batch_norm_activation(x, scale, bias, EPSILON, fn, residual=residual)

    def reference(x, scale, bias, residual):
        y, mean, var = flax_reference(x, scale, bias, None)
        return fn(y + residual), mean, var

    for out, ref in zip(
        jax.jit(with_residual)(x, scale, bias, residual),
        jax.jit(reference)(x, scale, bias, residual),
        strict=True,
    ):
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)

    def grads(f):
        loss = lambda *a: jnp.sum(f(*a)[0] * probe)  # noqa: E731
        return jax.jit(jax.grad(loss, (0, 1, 2, 3)))(x, scale, bias, residual)

    for got, want in zip(grads(with_residual), grads(reference), strict=True):
        assert relative_error(got, want) < 1e-5


def test_a_residual_of_another_shape_is_refused(data):
    x, scale, bias, _ = data
    with pytest.raises(ValueError, match=r"residual must have x's shape \(4, 5, 5, 3\); got"):
        batch_norm.batch_norm_activation(x, scale, bias, EPSILON, residual=x[:2])


def test_mean_and_var_outputs_have_their_own_gradient(data):
    # The running statistics are outputs too; their cotangents flow into dx.
    x, scale, bias, probe = data

    def loss(fn):
        def f(x, scale, bias):
            y, mean, var = fn(x, scale, bias)
            return jnp.sum(y * probe) + jnp.sum(mean * scale) + jnp.sum(var * bias)

        return jax.jit(jax.grad(f, (0, 1, 2)))(x, scale, bias)

    relu = jax.nn.relu
    got = loss(lambda *a: batch_norm.batch_norm_activation(*a, EPSILON, relu))
    # XLA's autodiff of the plain forward (native=None), whichever backend runs `got`.
    want = loss(lambda *a: batch_norm._forward(*a, None, EPSILON, relu, jnp.float32, None)[0])
    for g, w in zip(got, want, strict=True):
        assert relative_error(g, w) < 1e-5


def test_bfloat16_rounds_once_and_gradients_are_float32_where_the_params_are(data):
    x, scale, bias, probe = data
    xb = x.astype(jnp.bfloat16)
    gelu = get_activation("gelu")
    y, mean, var = batch_norm.batch_norm_activation(xb, scale, bias, EPSILON, gelu, jnp.bfloat16)
    assert y.dtype == jnp.bfloat16 and mean.dtype == var.dtype == jnp.float32
    # One rounding: the activation of the float32 pre-activation, then bfloat16.
    wide = xb.astype(jnp.float32)
    pre = (wide - mean.reshape(1, 1, 1, 3)) * (jax.lax.rsqrt(var + EPSILON) * scale).reshape(
        1, 1, 1, 3
    ) + bias.reshape(1, 1, 1, 3)
    expected = gelu(pre).astype(jnp.bfloat16)
    assert relative_error(y, expected) <= 2.0**-8  # at most one bfloat16 ulp apart

    def loss(x, scale, bias):
        out = batch_norm.batch_norm_activation(x, scale, bias, EPSILON, gelu, jnp.bfloat16)[0]
        return jnp.sum(out.astype(jnp.float32) * probe)

    dx, dscale, dbias = jax.jit(jax.grad(loss, (0, 1, 2)))(xb, scale, bias)
    assert dx.dtype == jnp.bfloat16 and dscale.dtype == dbias.dtype == jnp.float32
    want = jax.grad(loss, (0, 1, 2))(wide, scale, bias)
    assert relative_error(dx, want[0]) < 2e-2
    assert relative_error(dscale, want[1]) < 2e-2 and relative_error(dbias, want[2]) < 2e-2


def test_module_matches_flax_batch_norm_variables_and_running_stats(data):
    x, *_ = data
    ours = batch_norm.BatchNorm(momentum=0.8, activation="relu")
    theirs = nn.BatchNorm(momentum=0.8)
    v_ours = ours.init(jax.random.key(1), x, use_running_average=False)
    v_theirs = theirs.init(jax.random.key(1), x, use_running_average=False)
    chex_tree = jax.tree.map(lambda a: (a.shape, a.dtype, a.tolist()), v_ours)
    assert chex_tree == jax.tree.map(lambda a: (a.shape, a.dtype, a.tolist()), v_theirs)
    # Training: the same running-statistics update; output = relu(flax's).
    y, up_ours = ours.apply(v_ours, x, use_running_average=False, mutable=["batch_stats"])
    ref, up_theirs = theirs.apply(v_theirs, x, use_running_average=False, mutable=["batch_stats"])
    np.testing.assert_allclose(y, jax.nn.relu(ref), rtol=1e-5, atol=1e-5)
    for name in ("mean", "var"):
        np.testing.assert_allclose(
            up_ours["batch_stats"][name], up_theirs["batch_stats"][name], rtol=1e-6
        )
    # Evaluation with those statistics: Flax's arithmetic exactly, then the activation.
    variables = {"params": v_ours["params"], **up_ours}
    y_eval = ours.apply(variables, x, use_running_average=True)
    ref_eval = theirs.apply({"params": v_theirs["params"], **up_ours}, x, use_running_average=True)
    np.testing.assert_array_equal(y_eval, jax.nn.relu(ref_eval))


@pytest.fixture(scope="module")
def conv_blocks():
    x = jax.random.normal(jax.random.key(2), (4, 6, 6, 2))
    blocks = {
        fused_norm: ConvBlock(
            3, (3, 3), padding="SAME", norm="batch", activation="gelu", fused_norm=fused_norm
        )
        for fused_norm in (True, False)
    }
    variables = blocks[True].init(jax.random.key(3), x)
    return x, blocks, variables


def test_conv_block_fused_norm_equals_flax_path(conv_blocks):
    x, blocks, variables = conv_blocks
    plain_vars = blocks[False].init(jax.random.key(3), x)
    assert jax.tree.structure(variables) == jax.tree.structure(plain_vars)
    probe = jax.random.normal(jax.random.key(4), (4, 6, 6, 3))

    def run(block):
        def loss(params):
            y, updates = block.apply(
                {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
            )
            return jnp.sum(y * probe), updates

        return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])

    (loss_f, stats_f), grads_f = run(blocks[True])
    (loss_p, stats_p), grads_p = run(blocks[False])
    np.testing.assert_allclose(loss_f, loss_p, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(grads_f), jax.tree.leaves(grads_p), strict=True):
        assert relative_error(got, want) < 1e-5
    for got, want in zip(jax.tree.leaves(stats_f), jax.tree.leaves(stats_p), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    evaluated = [jax.jit(b.apply)(variables, x) for b in (blocks[True], blocks[False])]
    np.testing.assert_array_equal(*evaluated)


def test_forward_mode_needs_fused_norm_false(conv_blocks):
    x, blocks, variables = conv_blocks

    def output(block):
        return lambda x: block.apply(variables, x, train=True, mutable=["batch_stats"])[0]

    # The XLA convolution backend: oneDNN's convolutions have no forward mode either.
    with conv_backend.use_conv_backend("xla"):
        with pytest.raises(TypeError, match="custom_vjp"):
            jax.jvp(output(blocks[True]), (x,), (x,))
        _, tangent = jax.jvp(output(blocks[False]), (x,), (x,))
    assert tangent.shape == (4, 6, 6, 3)


@pytest.mark.parametrize(
    "x_shape, scale_shape, match",
    [
        ((2, 3), (4,), r"scale must have shape \(channels,\) = \(3,\).*got scale of shape \(4,\)"),
        ((3,), (3,), r"at least 2-D.*shape \(3,\)"),
    ],
)
def test_bad_shapes_raise_naming_the_parameter(x_shape, scale_shape, match):
    with pytest.raises(ValueError, match=match):
        batch_norm.batch_norm_activation(
            jnp.ones(x_shape), jnp.ones(scale_shape), jnp.zeros(x_shape[-1:]), EPSILON
        )


def test_unknown_activation_raises_before_running():
    module = batch_norm.BatchNorm(use_running_average=False, activation="gelu_fast")
    with pytest.raises(ValueError, match="activation='gelu_fast' is not known; valid names"):
        module.init(jax.random.key(0), jnp.ones((2, 3)))
