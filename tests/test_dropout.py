"""jaxcnn.dropout: Bernoulli masks from a few random bits, and a drop-in for Flax's Dropout."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import dropout
from jaxcnn.models import mnist_cnn


@pytest.mark.parametrize(
    "keep, bits",
    [(0.5, 1), (0.25, 2), (0.75, 2), (0.125, 4), (0.3125, 4), (1 / 256, 8), (1.0, 1),
     (1 - 2**-16, 16), (0.7, None), (0.9, None), (1 / 3, None)],
)  # fmt: skip
def test_mask_bits_is_the_fewest_that_decide_exactly(keep, bits):
    assert dropout.mask_bits(keep) == bits


@pytest.mark.parametrize("keep", [0.5, 0.75, 0.125])
def test_mask_frequencies_match_keep(keep):
    # 2**18 draws: the mean's standard error is below 1e-3; independence across
    # neighbours (drawn from the same 32-bit word) shows in the pair frequency.
    mask = np.asarray(dropout.bernoulli_mask(jax.random.key(7), keep, (512, 512)))
    assert abs(mask.mean() - keep) < 5e-3
    pairs = mask[:, ::2] & mask[:, 1::2]
    assert abs(pairs.mean() - keep * keep) < 5e-3


def test_other_rates_draw_exactly_jax_bernoulli():
    key = jax.random.key(3)
    np.testing.assert_array_equal(
        dropout.bernoulli_mask(key, 0.7, (5, 33)), jax.random.bernoulli(key, 0.7, (5, 33))
    )


def test_mask_shapes_that_do_not_fill_a_word():
    mask = dropout.bernoulli_mask(jax.random.key(0), 0.5, (3, 5, 7))  # 105 = 3 words + 9
    assert mask.shape == (3, 5, 7) and mask.dtype == jnp.bool_


@pytest.mark.parametrize("keep", [0.0, -0.5, 1.5])
def test_bad_keep_raises_naming_it(keep):
    with pytest.raises(ValueError, match=f"keep={keep}; valid: 0 < keep <= 1"):
        dropout.bernoulli_mask(jax.random.key(0), keep, (4,))


def apply(layer, x, key=0, **kwargs):
    return layer.apply({}, x, rngs={"dropout": jax.random.key(key)}, **kwargs)


def test_kept_elements_are_scaled_and_the_rest_zero():
    x = jnp.arange(1.0, 4097.0).reshape(64, 64)
    y = np.asarray(apply(dropout.Dropout(0.25), x, deterministic=False))
    kept = y != 0
    np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / 0.75, rtol=1e-6)
    assert 0.72 < kept.mean() < 0.78


def test_evaluation_rate_zero_and_rate_one():
    x = jnp.ones((4, 6))
    np.testing.assert_array_equal(apply(dropout.Dropout(0.5, deterministic=True), x), x)
    np.testing.assert_array_equal(apply(dropout.Dropout(0.0), x, deterministic=False), x)
    np.testing.assert_array_equal(apply(dropout.Dropout(1.0), x, deterministic=False), 0 * x)


@pytest.mark.parametrize("dims", [(0,), (-1,), (1, 2)])
def test_broadcast_dims_share_one_mask_value(dims):
    y = np.asarray(apply(dropout.Dropout(0.5, broadcast_dims=dims), jnp.ones((6, 5, 4)),
                         deterministic=False))  # fmt: skip
    for axis in dims:
        assert (np.ptp(y, axis=axis) == 0).all()


def test_same_flax_interface_and_names():
    # A model written with Flax's Dropout and one with jaxcnn's have the same variables,
    # and jaxcnn's takes the same call arguments.
    class Net(nn.Module):
        layer: type

        @nn.compact
        def __call__(self, x, train):
            return nn.Dense(3)(self.layer(0.5)(x, deterministic=not train))

    x = jnp.ones((2, 4))
    ours = Net(dropout.Dropout).init(jax.random.key(0), x, False)
    theirs = Net(nn.Dropout).init(jax.random.key(0), x, False)
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    key = jax.random.key(5)
    y = dropout.Dropout(0.5).apply({}, x, False, key)  # positional rng, as Flax's
    assert y.shape == x.shape


def test_bad_rate_raises_naming_it():
    with pytest.raises(ValueError, match="rate=1.5; valid: 0 <= rate <= 1"):
        apply(dropout.Dropout(1.5), jnp.ones((2,)), deterministic=False)


def test_the_mnist_net_draws_its_mask_from_one_bit_per_element():
    model = mnist_cnn()
    x = jnp.ones((2, 28, 28, 1))
    variables = model.init(jax.random.key(0), x)
    jaxpr = str(
        jax.make_jaxpr(
            lambda v: model.apply(v, x, train=True, rngs={"dropout": jax.random.key(1)})
        )(variables)
    )
    # 2 x 1600 features at 32 per word: 100 words of random bits, not 3200.
    draws = [line for line in jaxpr.splitlines() if "random_bits[" in line]
    assert len(draws) == 1 and "shape=(100,)" in draws[0]
