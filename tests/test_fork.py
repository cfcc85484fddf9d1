"""``fast_ops.fork``: two copies of a value whose gradients are summed on the binding's
team (``jaxcnn/onednn/add.cc``), bit for bit what XLA's own add gives.

The kernel's tests need the binding and skip with its reason where it does not build;
the fallback to ``(x, x)`` and the argument checks are tested everywhere.
"""

from __future__ import annotations

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import fast_ops, models
from jaxcnn.onednn import build, ffi_add

needs_native = pytest.mark.skipif(
    not build.available(), reason=f"binding unavailable: {build.unavailable_reason()}"
)
RNG = np.random.default_rng(0)


def special_values(dtype) -> tuple[jax.Array, jax.Array]:
    """Two arrays that meet every rounding case: random values over a wide range, ties to
    even in bfloat16, infinities, NaNs, signed zeros, sums that overflow, subnormals."""
    finfo = jnp.finfo(dtype)
    a = RNG.normal(size=40_000) * 10.0 ** RNG.integers(-30, 30, size=40_000)
    b = RNG.normal(size=40_000) * 10.0 ** RNG.integers(-30, 30, size=40_000)
    edge_a = [np.inf, -np.inf, np.nan, 0.0, -0.0, float(finfo.max), 1.0, float(finfo.tiny) / 4]
    edge_b = [1.0, np.inf, 2.0, -0.0, -0.0, float(finfo.max), 2.0**-8, float(finfo.tiny) / 4]
    a = np.concatenate([a, edge_a]).astype(np.float32)
    b = np.concatenate([b, edge_b]).astype(np.float32)
    # The edges, pair by pair: inf + 1, -inf + inf (NaN), NaN + 2, 0 + -0, -0 + -0 (-0),
    # max + max (overflows to inf), 1 + 2^-8 (a tie in bfloat16: rounds to even, 1), and
    # two subnormals.
    shape = (len(a) // 8, 8)
    return jnp.asarray(a, dtype).reshape(shape), jnp.asarray(b, dtype).reshape(shape)


@needs_native
def test_doctests():
    result = doctest.testmod(ffi_add)
    assert result.failed == 0 and result.attempted > 0


@needs_native
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_the_kernels_sum_is_xlas_bit_for_bit(dtype):
    a, b = special_values(dtype)
    got = jax.jit(ffi_add.add)(a, b)
    want = jax.jit(jnp.add)(a, b)
    assert got.dtype == want.dtype and got.shape == want.shape
    bits = np.uint16 if dtype == jnp.bfloat16 else np.uint32
    np.testing.assert_array_equal(np.asarray(got).view(bits), np.asarray(want).view(bits))


@needs_native
def test_odd_sizes_and_one_element_are_added_whole():
    for n in (1, 8191, 8193, 3 * 8192 + 5):  # around the kernel's chunks of 8,192 elements
        a = jnp.arange(n, dtype=jnp.float32)
        np.testing.assert_array_equal(ffi_add.add(a, a), 2 * a)


@pytest.mark.parametrize(
    "a, b, message",
    [
        (jnp.ones((2, 3)), jnp.ones((3, 2)), r"shape and dtype; got \(2, 3\) float32 and \(3, 2\)"),
        (jnp.ones(3), jnp.ones(3, jnp.bfloat16), "got .3,. float32 and .3,. bfloat16"),
        (jnp.ones(3, jnp.int32), jnp.ones(3, jnp.int32), "dtype int32; valid: float32, bfloat16"),
    ],
)
def test_add_refuses_arrays_it_cannot_take_by_name(a, b, message):
    with pytest.raises(ValueError, match=message):
        ffi_add.add(a, b)


def loss_of_two_consumers(split):
    """A probe loss whose input feeds two different consumers through ``split``."""

    def loss(x):
        a, b = split(x)
        return jnp.sum(jnp.sin(a.astype(jnp.float32))) + jnp.sum(b.astype(jnp.float32) ** 3)

    return loss


@needs_native
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_fork_gradient_equals_autodiffs_sum_and_runs_on_the_kernel(dtype, monkeypatch):
    monkeypatch.setenv("JAXCNN_NORM_BACKEND", "auto")
    x = jnp.asarray(RNG.normal(size=(4, 5, 5, 16)), dtype)
    forked = jax.jit(jax.grad(loss_of_two_consumers(fast_ops.fork)))
    plain = jax.jit(jax.grad(loss_of_two_consumers(lambda x: (x, x))))
    assert "jaxcnn_add" in forked.lower(x).as_text()
    # Without the fork XLA fuses the add into the terms' computation, where float32 may
    # round once less (a fused multiply-add): equal to float32's last bit, bfloat16 exact.
    np.testing.assert_allclose(
        np.asarray(forked(x), np.float32), np.asarray(plain(x), np.float32), rtol=2.0**-22
    )
    a, b = jax.jit(fast_ops.fork)(x)
    np.testing.assert_array_equal(a, x)
    np.testing.assert_array_equal(b, x)


@pytest.mark.parametrize(
    "why, x",
    [
        ("the xla switch", jnp.ones((2, 8))),
        ("an integer array", jnp.ones((2, 8), jnp.int32)),
        ("float16", jnp.ones((2, 8), jnp.float16)),
        ("a 1-D array", jnp.ones(8)),
    ],
)
def test_fork_is_plain_autodiff_where_the_kernels_do_not_run(why, x, monkeypatch):
    monkeypatch.setenv("JAXCNN_NORM_BACKEND", "xla" if why == "the xla switch" else "auto")
    a, b = fast_ops.fork(x)
    assert a is x and b is x  # no custom rule at all: XLA adds the gradients


@needs_native
@pytest.mark.parametrize("block_cls", [models.ResidualBlock, models.BottleneckBlock])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_blocks_sum_their_inputs_gradient_on_the_kernel_in_training(block_cls, dtype, monkeypatch):
    """One sum per block in training, none in evaluation, and the same gradients as
    when XLA adds (the option-A shortcut's subsampling and padding included)."""
    monkeypatch.setenv("JAXCNN_NORM_BACKEND", "auto")
    x = jnp.asarray(RNG.normal(size=(2, 6, 6, 8)), dtype)
    block = block_cls(8, stride=2, shortcut="A", dtype=dtype)
    variables = block.init(jax.random.key(0), x)

    def grads():
        def loss(x, params):
            y, _ = block.apply({**variables, "params": params}, x, True, mutable=["batch_stats"])
            weights = jnp.linspace(-1.0, 1.0, y.size).reshape(y.shape)
            return jnp.sum(y.astype(jnp.float32) * weights)

        step = jax.jit(jax.grad(loss, (0, 1)))
        return step.lower(x, variables["params"]).as_text(), step(x, variables["params"])

    text, forked = grads()
    assert text.count("jaxcnn_add") == 1
    monkeypatch.setattr("jaxcnn.models.residual.fork", lambda x: (x, x))
    text, plain = grads()
    assert "jaxcnn_add" not in text
    jax.tree.map(np.testing.assert_array_equal, forked, plain)
    evaluate = jax.jit(lambda x: block.apply(variables, x))
    assert "jaxcnn_add" not in evaluate.lower(x).as_text()
