"""Per-parameter learning rates, weight decay on every parameter, the linear one-cycle
schedule, and the model knobs airbench's recipe needs (logit scale, batch-norm momentum,
PyTorch's default init). Tiny arrays and one 16x16 net, so it compiles in seconds."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn import models
from jaxcnn.models.spec import from_spec
from jaxcnn.train import optim
from jaxcnn.train.config import ConfigError, base_config, validate_config

# ----- optimiser -----------------------------------------------------------------------


def _params():
    return {
        "conv": {"kernel": jnp.ones((3, 3, 1, 2))},
        "conv_bn": {"norm": {"bias": jnp.ones(2), "scale": jnp.ones(2)}},
    }


def _one_sgd_step(grad_value, **optimizer):
    params = _params()
    tx = optim.build_optimizer({"name": "sgd", **optimizer}, optax.constant_schedule(0.1))
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, grad_value), params)
    updates, _ = tx.update(grads, tx.init(params), params)
    return jax.tree_util.tree_map(lambda u: float(u.reshape(-1)[0]), updates)


def test_lr_multiplier_scales_the_gradient_step_of_matching_parameters_only():
    plain = _one_sgd_step(1.0)
    scaled = _one_sgd_step(1.0, lr_multipliers=[("*/norm/bias", 64.0)])
    assert scaled["conv_bn"]["norm"]["bias"] == pytest.approx(64 * plain["conv_bn"]["norm"]["bias"])
    assert scaled["conv_bn"]["norm"]["scale"] == pytest.approx(plain["conv_bn"]["norm"]["scale"])
    assert scaled["conv"]["kernel"] == pytest.approx(plain["conv"]["kernel"])


def test_lr_multiplier_keeps_the_weight_decay_step():
    # Zero gradient: the update is the decay alone, lr * wd * w, whatever the multiplier.
    kwargs = dict(weight_decay=0.01, weight_decay_on="all")
    plain = _one_sgd_step(0.0, **kwargs)
    scaled = _one_sgd_step(0.0, lr_multipliers=[("*/norm/bias", 64.0)], **kwargs)
    assert scaled["conv_bn"]["norm"]["bias"] == pytest.approx(-0.1 * 0.01)
    assert jax.tree_util.tree_leaves(scaled) == pytest.approx(jax.tree_util.tree_leaves(plain))


def test_weight_decay_on_all_decays_biases_and_scales_too():
    kernels_only = _one_sgd_step(0.0, weight_decay=0.01)
    everything = _one_sgd_step(0.0, weight_decay=0.01, weight_decay_on="all")
    assert kernels_only["conv_bn"]["norm"] == {"bias": 0.0, "scale": 0.0}
    assert everything["conv_bn"]["norm"]["bias"] == pytest.approx(-1e-3)
    with pytest.raises(ValueError, match="weight_decay_on must be one of .*'none'"):
        _one_sgd_step(0.0, weight_decay_on="none")


def test_first_matching_multiplier_wins_and_frozen_still_freezes():
    labels = optim.multiplier_labels([("conv_bn", 2.0), ("*bias", 3.0)])(_params())
    assert labels["conv_bn"]["norm"] == {"bias": "x0", "scale": "x0"}
    frozen = _one_sgd_step(1.0, lr_multipliers=[("conv_bn", 2.0)], frozen=["*/scale"])
    assert frozen["conv_bn"]["norm"]["scale"] == 0.0


@pytest.mark.parametrize(
    "entry", [("*bias",), ("*bias", 0.0), ("", 2.0), ("*bias", True), "*bias=64"]
)
def test_bad_lr_multipliers_name_the_entry(entry):
    with pytest.raises(ValueError, match="lr_multipliers entry .* is invalid"):
        optim.lr_multiplier_pairs({"lr_multipliers": [entry]})
    config = base_config()
    config.optimizer.lr_multipliers = (entry,)
    with pytest.raises(ConfigError, match="config.optimizer.lr_multipliers entry"):
        validate_config(config)


# ----- schedule ------------------------------------------------------------------------


def test_linear_onecycle_rises_then_falls_linearly():
    schedule = optim.build_schedule(
        {"name": "linear_onecycle", "pct_start": 0.25, "div_factor": 5.0, "end_factor": 0.1},
        2.0,
        steps_per_epoch=10,
        num_epochs=4,
    )
    values = [float(schedule(step)) for step in (0, 5, 10, 25, 40)]
    assert values == pytest.approx([0.4, 1.2, 2.0, 1.1, 0.2])
    with pytest.raises(ValueError, match="pct_start=0.001 must give between 1 and 39"):
        optim.build_schedule(
            {"name": "linear_onecycle", "pct_start": 0.001}, 1.0, steps_per_epoch=10, num_epochs=4
        )


# ----- model knobs ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_fast_cifar():
    model = models.get("fast_cifar", widths=(4, 8, 8), norm_momentum=0.4, logit_scale=0.5)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    return model, variables, x


def test_logit_scale_multiplies_the_logits(tiny_fast_cifar):
    model, variables, x = tiny_fast_cifar
    unscaled = models.get("fast_cifar", widths=(4, 8, 8), norm_momentum=0.4)
    np.testing.assert_allclose(
        model.apply(variables, x), 0.5 * unscaled.apply(variables, x), rtol=1e-6, atol=1e-7
    )
    with pytest.raises(ValueError, match="spec.logit_scale=0; valid: a number > 0"):
        from_spec({"stages": [], "logit_scale": 0}).init(jax.random.PRNGKey(0), x)


def test_norm_momentum_sets_how_much_of_the_running_mean_is_kept(tiny_fast_cifar):
    model, variables, x = tiny_fast_cifar
    default = models.get("fast_cifar", widths=(4, 8, 8), logit_scale=0.5)
    means = []
    for net in (model, default):
        _, updated = net.apply(variables, x, train=True, mutable=["batch_stats"])
        means.append(updated["batch_stats"]["group1_conv1"]["norm"]["mean"])
    # Running means start at 0, so one step leaves (1 - momentum) * the batch mean:
    # 0.6 of it at momentum 0.4, 0.1 at the default 0.9.
    assert float(jnp.abs(means[1]).max()) > 0
    np.testing.assert_allclose(means[0], 6.0 * means[1], rtol=1e-5)
    with pytest.raises(ValueError, match=r"norm_momentum=1.0; valid: 0 <= m < 1"):
        models.get("fast_cifar", norm_momentum=1.0).init(jax.random.PRNGKey(0), x)


def test_torch_default_init_is_uniform_within_one_over_sqrt_fan_in():
    model = from_spec(
        {"kernel_init": "torch_default", "stages": [{"type": "conv", "features": 64}]}
    )
    kernel = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 16)))["params"]
    kernel = np.asarray(kernel["ConvBlock_0"]["conv"]["kernel"])
    fan_in = 3 * 3 * 16
    assert np.abs(kernel).max() <= 1 / np.sqrt(fan_in)
    assert kernel.std() == pytest.approx(1 / np.sqrt(3 * fan_in), rel=0.05)


def test_torch_default_dirac_starts_square_convs_as_the_identity():
    model = from_spec(
        {
            "kernel_init": "torch_default_dirac",
            "stages": [{"type": "conv", "features": 4, "padding": "SAME", "activation": None}],
        }
    )
    x = jax.random.normal(jax.random.PRNGKey(1), (1, 5, 5, 4))
    variables = model.init(jax.random.PRNGKey(0), x)
    conv = variables["params"]["ConvBlock_0"]["conv"]
    # Conv bias starts at zero, so with 4 -> 4 channels the conv is exactly the identity.
    features = model.apply(variables, x, capture_intermediates=True)[1]["intermediates"]
    np.testing.assert_allclose(features["ConvBlock_0"]["__call__"][0], x, atol=1e-6)
    assert conv["kernel"].shape == (3, 3, 4, 4)


def test_pool_first_pools_the_conv_output_before_norm_and_activation():
    from jaxcnn.layers import ConvBlock

    x = jax.random.normal(jax.random.PRNGKey(2), (2, 6, 6, 3))
    kwargs = dict(padding="SAME", norm="batch", activation="gelu", pool="max")
    first = ConvBlock(4, (3, 3), pool_first=True, **kwargs)
    variables = first.init(jax.random.PRNGKey(0), x)
    out, state = first.apply(variables, x, capture_intermediates=True)
    conv = state["intermediates"]["conv"]["__call__"][0]
    pooled = conv.reshape(2, 3, 2, 3, 2, 4).max(axis=(2, 4))
    # Fresh running statistics (mean 0, var 1): eval-mode BN divides by sqrt(1 + eps).
    np.testing.assert_allclose(out, jax.nn.gelu(pooled / np.sqrt(1 + 1e-5)), rtol=1e-5, atol=1e-6)
    # In training the batch statistics are those of the pooled map, so the orders differ.
    last, _ = ConvBlock(4, (3, 3), **kwargs).apply(
        variables, x, train=True, mutable=["batch_stats"]
    )
    out, _ = first.apply(variables, x, train=True, mutable=["batch_stats"])
    assert last.shape == out.shape and not np.allclose(last, out)


def test_airbench_net_details_epsilon_exact_gelu_and_no_classifier_bias():
    from jaxcnn.layers import ConvBlock

    x = jax.random.normal(jax.random.PRNGKey(3), (2, 4, 4, 2))
    kwargs = dict(padding="SAME", norm="batch", activation="gelu_exact")
    block = ConvBlock(3, (3, 3), norm_epsilon=1e-12, **kwargs)
    variables = block.init(jax.random.PRNGKey(0), x)
    out, state = block.apply(variables, x, capture_intermediates=True)
    conv = state["intermediates"]["conv"]["__call__"][0]
    # Fresh running statistics (mean 0, var 1): eval-mode BN divides by sqrt(1 + eps),
    # and the exact GELU is x * Phi(x), not flax's tanh approximation.
    exact = jax.nn.gelu(conv / np.sqrt(1 + 1e-12), approximate=False)
    np.testing.assert_allclose(out, exact, rtol=1e-6, atol=1e-7)
    assert not np.allclose(exact, jax.nn.gelu(conv), rtol=1e-6, atol=1e-7)
    net = models.get("fast_cifar", widths=(4, 8, 8), classifier_bias=False, norm_epsilon=1e-12)
    params = jax.eval_shape(net.init, jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
    assert set(params["params"]["classifier"]) == {"kernel"}
    with pytest.raises(ValueError, match=r"norm_epsilon=0; valid: None or a number > 0"):
        from_spec({"stages": [{"type": "conv", "features": 2, "norm_epsilon": 0}]}).init(
            jax.random.PRNGKey(0), x
        )
    with pytest.raises(ValueError, match="spec.classifier_bias='no'; valid: True, False"):
        from_spec({"stages": [], "classifier_bias": "no"}).init(jax.random.PRNGKey(0), x)
