"""jaxcnn.initializers draws jax's initial weights flat: the same numbers, bit for bit.

jax's own initializer in the kernel's shape is the slow compile being avoided, so each
reference costs ~1 s here: one kernel shape for every mode and distribution, a few
more for the fans of other ranks and for the dtypes.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import initializers
from jaxcnn.layers import ConvBlock, DenseStack
from jaxcnn.models.spec import KERNEL_INITS

KEY = jax.random.key(7)


def _assert_same_as_jax(scale, mode, distribution, shape, dtype):
    want = jax.nn.initializers.variance_scaling(scale, mode, distribution)(KEY, shape, dtype)
    got = initializers.variance_scaling(scale, mode, distribution)(KEY, shape, dtype)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


@pytest.mark.parametrize("distribution", initializers.DISTRIBUTIONS)
def test_every_mode_equals_jax_on_a_conv_kernel(distribution):
    # One draw per distribution in the kernel's shape (compiled once), four scales on it.
    for mode, scale in zip(initializers.MODES, (1.0, 2.0, 1.0 / 3.0, 0.5), strict=True):
        _assert_same_as_jax(scale, mode, distribution, (3, 3, 2, 4), jnp.float32)


@pytest.mark.parametrize(
    "shape, dtype, mode",
    [
        ((5, 7), jnp.float32, "fan_avg"),  # a dense kernel: no receptive field
        ((1, 2, 3, 4, 5), jnp.float32, "fan_geo_avg"),  # a 3-D conv kernel
        ((3, 3, 2, 4), jnp.bfloat16, "fan_in"),  # rounded in the parameter dtype
    ],
)
def test_other_ranks_and_dtypes_equal_jax(shape, dtype, mode):
    _assert_same_as_jax(2.0, mode, "truncated_normal", shape, dtype)


def test_what_it_does_not_draw_flat_goes_to_jax_unchanged():
    # A vector has no fan-in on axis -2: jax's error, word for word.
    with pytest.raises(ValueError, match="Can't compute input and output sizes"):
        initializers.lecun_normal()(KEY, (6,))


@pytest.mark.parametrize(
    "argument, value, valid",
    [("mode", "fan_sum", "fan_in"), ("distribution", "gaussian", "truncated_normal")],
)
def test_a_bad_mode_or_distribution_raises_at_once_naming_it(argument, value, valid):
    kwargs = {"scale": 1.0, "mode": "fan_in", "distribution": "normal", argument: value}
    with pytest.raises(ValueError, match=rf"{argument}='{value}'; valid: one of \(.*'{valid}'"):
        initializers.variance_scaling(**kwargs)


def test_the_layers_defaults_give_flax_default_weights(monkeypatch):
    """ConvBlock, DenseStack and a spec CNN with no kernel_init: the weights they would get
    with flax's own default initialiser in every place jaxcnn draws flat."""
    from jaxcnn.models.spec import from_spec

    cases = [
        (ConvBlock(4, kernel_size=3, use_bias=True), jnp.ones((1, 6, 6, 2))),
        (DenseStack((5,), out_features=3), jnp.ones((1, 7))),
        (
            from_spec(
                {"stages": [{"type": "conv", "features": 4}], "head": [{"type": "flatten"}]},
                num_classes=3,
            ),
            jnp.ones((1, 5, 5, 1)),
        ),
    ]
    ours = [module.init(KEY, x) for module, x in cases]
    monkeypatch.setattr(initializers, "lecun_normal", nn.initializers.lecun_normal)
    for (module, x), got in zip(cases, ours, strict=True):
        jax.tree.map(np.testing.assert_array_equal, got, module.init(KEY, x))


def test_the_spec_names_are_jax_initializers():
    shape = (3, 3, 2, 4)
    reference = {
        "lecun_normal": nn.initializers.lecun_normal(),
        "glorot_uniform": nn.initializers.glorot_uniform(),
        "he_normal": nn.initializers.he_normal(),
        "he_normal_fan_out": nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
        "torch_default": nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
    }
    assert set(KERNEL_INITS) == {*reference, "torch_default_dirac"}
    for name, init in reference.items():
        got = KERNEL_INITS[name](KEY, shape)
        np.testing.assert_array_equal(got, init(KEY, shape), err_msg=name)
