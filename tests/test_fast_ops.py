"""jaxcnn.fast_ops equals the reference op (lax.reduce_window max-pool) in value and gradient."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import full_optimization_env
from jax import lax

from jaxcnn import fast_ops


def reference_max_pool(x, window, strides=None):
    window = (window,) * (x.ndim - 2) if isinstance(window, int) else tuple(window)
    strides = window if strides is None else strides
    strides = (strides,) * (x.ndim - 2) if isinstance(strides, int) else tuple(strides)
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), "VALID")


def assert_same_value_and_grad(fast, reference, *args, rtol=1e-5, atol=1e-5):
    """Values equal, and gradients of a random projection of the output equal."""
    # One jit per function: op-by-op eager autodiff compiles every small op separately.
    out_ref = jax.jit(reference)(*args)
    np.testing.assert_allclose(jax.jit(fast)(*args), out_ref, rtol=rtol, atol=atol)
    probe = jax.random.normal(jax.random.key(7), out_ref.shape, out_ref.dtype)
    argnums = tuple(range(len(args)))
    g_fast = jax.jit(jax.grad(lambda *a: jnp.sum(fast(*a) * probe), argnums))(*args)
    g_ref = jax.jit(jax.grad(lambda *a: jnp.sum(reference(*a) * probe), argnums))(*args)
    for gf, gr in zip(g_fast, g_ref, strict=True):
        scale = max(1.0, float(jnp.abs(gr).max()))
        np.testing.assert_allclose(gf, gr, rtol=rtol, atol=atol * scale)


@pytest.mark.parametrize(
    "shape, window, strides",
    [
        ((2, 26, 26, 3), 2, None),  # tiles exactly (MNIST conv1 output)
        ((2, 11, 11, 4), 2, None),  # odd: last row/column dropped (MNIST conv2 output)
        ((1, 7, 9, 2), (3, 2), None),  # unequal window per axis
        ((2, 9, 3), 2, None),  # 1-D
        ((1, 5, 4, 6, 2), 2, None),  # 3-D
        ((2, 9, 9, 2), 3, 2),  # overlapping windows: falls back to reduce_window
    ],
)
def test_max_pool_matches_reduce_window_in_value_and_gradient(shape, window, strides):
    x = jax.random.normal(jax.random.key(0), shape)  # continuous: no ties
    assert_same_value_and_grad(
        lambda x: fast_ops.max_pool(x, window, strides),
        lambda x: reference_max_pool(x, window, strides),
        x,
    )


def test_max_pool_after_relu_has_the_reference_gradient_despite_tied_zeros():
    x = jax.random.normal(jax.random.key(1), (4, 12, 12, 3))  # half the windows tie at 0

    def loss(pool, x):
        return jnp.sum(pool(jax.nn.relu(x)) ** 2)

    fast = jax.grad(lambda x: loss(lambda y: fast_ops.max_pool(y, 2), x))(x)
    ref = jax.grad(lambda x: loss(lambda y: reference_max_pool(y, 2), x))(x)
    np.testing.assert_array_equal(fast, ref)


def test_max_pool_gradient_equals_select_and_scatter_at_exact_ties():
    # Values on a coarse grid: many windows hold several equal maxima.
    x = jnp.round(jax.random.normal(jax.random.key(2), (3, 10, 10, 4)) * 2) / 2
    assert_same_value_and_grad(
        lambda x: fast_ops.max_pool(x, 2), lambda x: reference_max_pool(x, 2), x, atol=0
    )
    grad = jax.grad(lambda x: fast_ops.max_pool(x, 2).sum())(jnp.ones((1, 2, 2, 1)))
    np.testing.assert_array_equal(grad[0, :, :, 0], [[1.0, 0.0], [0.0, 0.0]])  # first max


RECOMPUTED_PRODUCER = """
import jax, jax.numpy as jnp, numpy as np
from jax import lax
from jaxcnn import fast_ops

x, scale, probe = (
    jax.random.normal(jax.random.key(seed), shape)
    for seed, shape in ((0, (1, 10, 10, 70)), (1, (70,)), (2, (1, 5, 5, 70)))
)

def loss(pool, x, scale):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return jnp.sum(pool(jax.nn.relu((x - mean) * lax.rsqrt(variance + 1e-6) * scale)) * probe)

def ours(y):
    return fast_ops.max_pool(y, (2, 2), (2, 2))

def reference(y):
    return lax.reduce_window(y, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

got = jax.jit(jax.grad(lambda x, s: loss(ours, x, s), (0, 1)))(x, scale)
want = jax.grad(lambda x, s: loss(reference, x, s), (0, 1))(x, scale)
print(max(float(jnp.abs(a - b).max() / jnp.abs(b).max()) for a, b in zip(got, want)))
"""


def test_max_pool_gradient_under_jit_after_a_recomputable_producer():
    # XLA:CPU fused the layer norm + ReLU that feeds the pool into each consumer, so the
    # backward pass compared the pooled maxima with a differently rounded recomputation:
    # windows with no match lost their gradient (a third of it here) until the pool's
    # input was materialised once for both. It shows only in code compiled as users
    # compile it (LLVM's optimizations on): a child process without the suite's flag.
    run = subprocess.run(
        [sys.executable, "-c", RECOMPUTED_PRODUCER],
        capture_output=True,
        text=True,
        env=full_optimization_env(),
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert float(run.stdout.split()[-1]) < 1e-5


@pytest.mark.parametrize("stored_input, copies", [(False, True), (True, False)])
def test_only_an_input_xla_may_recompute_is_copied_before_the_pool(stored_input, copies):
    # The copy (materialize's conditional) guards the gradient above; for a convolution's
    # output, which XLA does not recompute, it only cost time (the CIFAR net's step 9 %).
    x = jnp.ones((2, 8, 8, 4))

    def loss(x):
        return fast_ops.max_pool_relu(x, 2, stored_input=stored_input).sum()

    text = jax.jit(jax.grad(loss)).lower(x).as_text()
    assert ("stablehlo.case" in text) == copies


def test_max_pool_gradient_is_elementwise_without_scatter_or_concatenate():
    # Why fast_ops exists: its backward must stay a reduce plus one broadcast select that
    # XLA fuses into the next op. A scatter or a per-position concatenate was 1.4x slower.
    x = jnp.ones((2, 9, 9, 3))
    text = jax.jit(jax.grad(lambda x: fast_ops.max_pool(x, 2).sum())).lower(x).as_text()
    assert "select_and_scatter" not in text
    assert "concatenate" not in text


@pytest.mark.parametrize("with_bias", [False, True])
def test_max_pool_relu_equals_pool_of_relu_in_value_and_gradient(with_bias):
    x = jnp.round(jax.random.normal(jax.random.key(3), (2, 11, 11, 3)) * 4) / 4  # ties
    bias = jnp.array([0.5, -0.25, 0.0]) if with_bias else None
    shift = bias.reshape(1, 1, 1, 3) if with_bias else 0.0
    assert_same_value_and_grad(
        lambda x: fast_ops.max_pool_relu(x, 2, bias=bias),
        lambda x: reference_max_pool(jax.nn.relu(x + shift), 2),
        x,
        atol=0,
    )


def test_max_pool_relu_rejects_a_bias_of_the_wrong_shape():
    with pytest.raises(ValueError, match="bias must have shape"):
        fast_ops.max_pool_relu(jnp.zeros((1, 4, 4, 3)), 2, bias=jnp.zeros(2))


def test_max_pool_keeps_bfloat16():
    x = jnp.ones((1, 4, 4, 2), jnp.bfloat16)
    assert fast_ops.max_pool(x, 2).dtype == jnp.bfloat16


@pytest.mark.parametrize(
    "shape, window, message",
    [((4, 4), 2, "spatial"), ((1, 4, 4, 1), 0, "window"), ((1, 3, 3, 1), 4, "larger")],
)
def test_max_pool_rejects_bad_input(shape, window, message):
    with pytest.raises(ValueError, match=message):
        fast_ops.max_pool(jnp.zeros(shape), window)


def test_materialize_is_the_identity_bit_for_bit_in_value_and_gradient():
    x = jnp.array([-0.0, 0.0, 1.5, -2.0, jnp.inf, jnp.nan], jnp.float32)
    y = jax.jit(fast_ops.materialize)(x)
    np.testing.assert_array_equal(np.asarray(y).view(np.uint32), np.asarray(x).view(np.uint32))
    grad = jax.jit(jax.grad(lambda v: jnp.sum(fast_ops.materialize(v) * jnp.arange(6.0))))(x)
    np.testing.assert_array_equal(grad, np.arange(6.0))
    assert fast_ops.materialize(jnp.arange(3)).dtype == jnp.int32  # non-floats pass through
    assert fast_ops.materialize(jnp.zeros((0, 2), jnp.bfloat16)).shape == (0, 2)


@pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="a CPU barrier: XLA:GPU may drop the conditional"
)
def test_materialize_keeps_its_fusion_boundary_on_cpu():
    # The whole point: XLA must not prove the conditional redundant and drop it. If a new
    # jaxlib does, this fails, and ResNet training on CPU loses about a quarter of its speed.
    def block_output_then_transpose(x):
        y = fast_ops.materialize(jnp.maximum(x * 2.0 + 1.0, 0.0))
        return jnp.transpose(y, (3, 1, 2, 0)), y.sum()

    compiled = jax.jit(block_output_then_transpose).lower(jnp.ones((4, 3, 3, 2))).compile()
    assert "conditional" in compiled.as_text()


def _bias_gradient(add, x, bias, cotangent):
    return jax.jit(jax.grad(lambda b: jnp.sum((add(x, b) * cotangent).astype(jnp.float32))))(bias)


def test_add_channel_bias_is_the_plain_add_in_float32():
    x = jax.random.normal(jax.random.key(4), (2, 5, 5, 3))
    bias = jnp.array([0.5, -0.25, 2.0])
    assert_same_value_and_grad(
        fast_ops.add_channel_bias, lambda x, b: x + b.reshape(1, 1, 1, 3), x, bias, atol=0
    )


def test_add_channel_bias_sums_a_bfloat16_gradient_in_float32():
    x = jnp.zeros((8, 6, 6, 2), jnp.bfloat16)
    bias = jnp.zeros(2, jnp.float32)
    # 288 terms of 1 + 2^-7 each: exact in float32, not representable in bfloat16.
    cotangent = jnp.full(x.shape, 1 + 2**-7, jnp.bfloat16)
    got = _bias_gradient(fast_ops.add_channel_bias, x, bias, cotangent)
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(got, [288 * (1 + 2**-7)] * 2)
    plain = _bias_gradient(lambda x, b: x + b.astype(x.dtype)[None, None, None], x, bias, cotangent)
    assert not np.array_equal(plain, got)  # autodiff's bfloat16 sum rounds: why this exists
    jaxpr = jax.make_jaxpr(jax.grad(lambda b: fast_ops.add_channel_bias(x, b).sum()))(bias)
    sums = [e for e in jaxpr.eqns if e.primitive.name == "reduce_sum"]
    assert sums and all(e.invars[0].aval.dtype == jnp.float32 for e in sums)


def test_add_channel_bias_rejects_a_bias_of_the_wrong_shape():
    with pytest.raises(
        ValueError, match=r"bias must have shape \(3,\) for x \(1, 4, 3\), got \(2,\)"
    ):
        fast_ops.add_channel_bias(jnp.zeros((1, 4, 3)), jnp.zeros(2))


def test_add_channel_bias_keeps_forward_mode_autodiff():
    x, bias = jnp.ones((2, 3), jnp.bfloat16), jnp.zeros(3)
    dx, dbias = jnp.full((2, 3), 0.5, jnp.bfloat16), jnp.array([1.0, 2.0, 3.0])
    _, tangent = jax.jvp(fast_ops.add_channel_bias, (x, bias), (dx, dbias))
    assert tangent.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.float32(tangent), [[1.5, 2.5, 3.5]] * 2)
