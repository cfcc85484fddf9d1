"""Patch whitening, frozen parameters and test-time augmentation (``jaxcnn.train``)."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_train_fit import TINY_SPEC

from jaxcnn.train import base_config, fit, restore
from jaxcnn.train.config import ConfigError, validate_config
from jaxcnn.train.optim import build_optimizer, is_frozen, unmatched_patterns
from jaxcnn.train.steps import make_eval_step
from jaxcnn.train.tta import tta_logits, tta_views
from jaxcnn.train.whitening import image_patches, patch_whitening, whitened_params


def _correlated_images(seed=0, shape=(200, 10, 10, 3)):
    """Images whose channels and neighbouring pixels are correlated, with an offset."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape)
    x[..., 1] += 0.8 * x[..., 0]
    return x + 0.5 * np.roll(x, 1, axis=2) + 0.3


def _conv(images, kernel, bias):
    out = jax.lax.conv_general_dilated(
        jnp.asarray(images, jnp.float32),
        jnp.asarray(kernel),
        (1, 1),
        "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return (np.asarray(out) + bias).reshape(-1, kernel.shape[-1])


@pytest.mark.parametrize("kernel_size", [1, 2, 3])
def test_whitened_outputs_have_zero_mean_and_unit_covariance(kernel_size):
    images = _correlated_images()
    dims = kernel_size * kernel_size * 3
    kernel, bias = patch_whitening(images, kernel_size, 2 * dims, eps=1e-6)
    outputs = _conv(images, kernel, bias)
    np.testing.assert_allclose(outputs.mean(axis=0), 0.0, atol=1e-4)
    covariance = np.cov(outputs[:, :dims].T, bias=True)
    np.testing.assert_allclose(covariance, np.eye(dims), atol=2e-3)
    # The second half is the negation of the first (both signs survive a GELU).
    np.testing.assert_allclose(outputs[:, dims:], -outputs[:, :dims], atol=1e-5)
    # Directions come in order of decreasing variance: the raw patch variance along
    # each filter's direction is 1 / |filter|^2, and it must not increase.
    filters = kernel.reshape(dims, 2 * dims)[:, :dims].T
    variances = 1.0 / np.sum(filters.astype(np.float64) ** 2, axis=1)
    assert np.all(np.diff(variances) <= 1e-6 * variances[0])


def test_image_patches_are_in_kernel_order():
    images = np.random.default_rng(1).normal(size=(3, 5, 6, 2)).astype(np.float32)
    kernel = np.random.default_rng(2).normal(size=(2, 2, 2, 4)).astype(np.float32)
    by_patches = image_patches(images, 2) @ kernel.reshape(-1, 4)
    np.testing.assert_allclose(by_patches, _conv(images, kernel, 0.0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"out_channels": 10}, "out_channels = 10 .* valid: 12 .* or 24"),
        ({"eps": 0.0}, "eps = 0.0"),
        ({"kernel_size": 11, "out_channels": 363}, "kernel_size = 11 does not fit .* 10x10"),
    ],
)
def test_patch_whitening_names_the_bad_argument(kwargs, message):
    arguments = {"kernel_size": 2, "out_channels": 24, **kwargs}
    with pytest.raises(ValueError, match=message):
        patch_whitening(_correlated_images(), **arguments)


def test_whitened_params_sets_one_layer_and_leaves_the_input_alone():
    params = {
        "whiten": {"conv": {"kernel": np.zeros((2, 2, 3, 12), np.float32), "bias": np.zeros(12)}},
        "head": {"kernel": np.ones((4, 2), np.float32)},
    }
    images = _correlated_images()
    new = whitened_params(params, "whiten", images)
    kernel, bias = patch_whitening(images, 2, 12)
    np.testing.assert_array_equal(new["whiten"]["conv"]["kernel"], kernel)
    np.testing.assert_allclose(new["whiten"]["conv"]["bias"], bias)
    assert new["head"] is params["head"]
    assert not params["whiten"]["conv"]["kernel"].any()
    with pytest.raises(ConfigError, match="'stem' is not a layer of this model; its layers"):
        whitened_params(params, "stem", images)
    with pytest.raises(ConfigError, match="'head' must hold exactly one 2-D convolution kernel"):
        whitened_params(params, "head", images)
    with pytest.raises(ConfigError, match="over 3 channels; whitening needs .* 1 channels"):
        whitened_params(params, "whiten", images[..., :1])


def test_frozen_parameters_do_not_move_under_momentum_and_weight_decay():
    params = {"conv1": {"kernel": jnp.ones((3, 3, 1, 2)), "bias": jnp.ones(2)},
              "dense": {"kernel": jnp.ones((4, 2))}}  # fmt: skip
    tx = build_optimizer(
        {"name": "sgd", "momentum": 0.9, "weight_decay": 0.1, "frozen": ["conv1/kernel"]},
        optax.constant_schedule(0.5),
    )
    state = tx.init(params)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    for _ in range(3):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(params["conv1"]["kernel"], 1.0)
    assert float(params["conv1"]["bias"][0]) < 0  # trained
    assert float(params["dense"]["kernel"][0, 0]) < 0


def test_frozen_patterns_match_layers_paths_and_globs():
    assert is_frozen("conv1/kernel", ["conv1"])
    assert not is_frozen("conv10/kernel", ["conv1"])
    assert is_frozen("whiten/conv/kernel", ["whiten/*kernel"])
    assert not is_frozen("whiten/conv/bias", ["whiten/*kernel"])
    params = {"conv1": {"kernel": 0}, "classifier": {"bias": 0}}
    assert unmatched_patterns(params, ["conv1", "conv2/*", "classifier/bias"]) == ["conv2/*"]


def test_tta_views_flip_and_shift_with_zero_fill():
    x = jnp.arange(9.0).reshape(1, 3, 3, 1)
    views = [np.asarray(v[0, :, :, 0]) for v in tta_views(x, "flip_translate")]
    np.testing.assert_array_equal(views[1], np.fliplr(views[0]))
    # Shifted up-left by one pixel, zeros enter at the bottom and right.
    np.testing.assert_array_equal(views[2], [[4, 5, 0], [7, 8, 0], [0, 0, 0]])
    np.testing.assert_array_equal(views[3], [[0, 0, 0], [0, 0, 1], [0, 3, 4]])
    np.testing.assert_array_equal(views[4], np.pad(views[1], 1)[2:, 2:])
    with pytest.raises(ValueError, match="eval_tta = 'rotate' .* valid"):
        tta_views(x, "rotate")
    with pytest.raises(ValueError, match="needs 2-D images"):
        tta_views(jnp.zeros((1, 2, 2, 2, 1)), "flip")


def test_tta_views_with_reflect_fill_mirror_the_border():
    x = jnp.arange(9.0).reshape(1, 3, 3, 1)
    views = [np.asarray(v[0, :, :, 0]) for v in tta_views(x, "translate", "reflect")]
    # Shifted up-left by one pixel: the row and column before the border come back.
    np.testing.assert_array_equal(views[1], [[4, 5, 4], [7, 8, 7], [4, 5, 4]])
    np.testing.assert_array_equal(views[2], [[4, 3, 4], [1, 0, 1], [4, 3, 4]])
    with pytest.raises(ValueError, match=r"tta fill = 'edge' is not a border fill"):
        tta_views(x, "translate", "edge")


def test_eval_step_with_tta_scores_the_mean_logits():
    class Asymmetric(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(3)(x.reshape(x.shape[0], -1))

    model = Asymmetric()
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 1), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1], np.int32)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
    mean, std = np.array([0.5]), np.array([0.25])
    plain = make_eval_step(model, mean=mean, std=std)
    flipped = make_eval_step(model, mean=mean, std=std, tta="flip")
    x = images.astype(np.float32) / 255.0
    logits = (
        model.apply(variables, (x - 0.5) / 0.25)
        + model.apply(variables, (x[:, :, ::-1] - 0.5) / 0.25)
    ) / 2
    expected_loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()
    batch = {"image": images, "label": labels}
    sums = flipped(variables, batch)
    np.testing.assert_allclose(sums["loss_sum"], expected_loss, rtol=1e-5)
    assert not np.isclose(plain(variables, batch)["loss_sum"], expected_loss, rtol=1e-3)
    np.testing.assert_allclose(
        tta_logits(lambda v: model.apply(variables, (v - 0.5) / 0.25), x, "flip"),
        logits,
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="tta = 'mirror' is not a test-time augmentation"):
        make_eval_step(model, mean=mean, std=std, tta="mirror")


WHITENED_SPEC = {
    # A 2x2 whitening conv (8 = 2 * 2*2*1 channels) before test_train_fit's tiny conv.
    "stages": [
        {"type": "conv", "features": 8, "kernel": 2, "activation": "gelu", "name": "whiten"},
        TINY_SPEC["stages"][0],
    ],
    "head": [{"type": "flatten"}],
}


def _whitened_config(**overrides):
    config = base_config()
    config.update_from_flattened_dict(
        {
            "dataset": "digits",
            "model": "spec",
            "batch_size": 64,
            "eval_batch_size": 120,
            "num_epochs": 3,
            "optimizer.name": "adam",
            "optimizer.learning_rate": 3e-3,
            "whitening.layer": "whiten",
            "eval_tta": "translate",  # digits are not mirror-symmetric: no flips
            # The shifted test views must fill as the crops did, in fit and in restore.
            "augment.crop_padding": 1,
            "augment.crop_mode": "reflect",
            "ema_decay": 0.9,
            "progress_bar": False,
            "tensorboard": False,
            **overrides,
        }
    )
    config.model_kwargs = {"spec": WHITENED_SPEC}
    return config


def test_fit_whitens_keeps_an_average_and_evaluates_it_with_tta(tmp_path):
    """One run for three features: whitened, frozen first layer; EMA weights; TTA."""
    result = fit(_whitened_config(), tmp_path / "run")
    assert result.test_metrics["test_accuracy"] > 0.75  # chance is 0.1
    restored = restore(tmp_path / "run", "latest")
    # The restored model is the moving average, which differs from the last weights.
    ema, last = jax.device_get((result.state.ema_params, result.state.params))
    restored_params = jax.device_get(restored.variables["params"])
    chex.assert_trees_all_equal(restored_params, ema)
    ema_kernel, last_kernel = ema["conv1"]["conv"]["kernel"], last["conv1"]["conv"]["kernel"]
    assert not np.allclose(ema_kernel, last_kernel, atol=1e-4)
    train = restored.config  # the same data and sample as the run
    from jaxcnn.train.components import load_training_data

    data = load_training_data(train)
    images = (data.train.images.astype(np.float32) / 255.0 - data.mean) / data.std
    kernel, bias = patch_whitening(images, 2, 8)  # 1,438 images < num_images: all of them
    params = jax.device_get(result.state.params)
    np.testing.assert_allclose(params["whiten"]["conv"]["kernel"], kernel, rtol=1e-6)
    assert not np.allclose(params["whiten"]["conv"]["bias"], bias, atol=1e-4)  # trained
    # Evaluating the restored model (average weights, the run's test-time augmentation)
    # gives what fit reported: fit evaluated the average with the same views.
    from jaxcnn.train.evaluation import evaluate_restored

    report = evaluate_restored(restored, "test")
    accuracy = result.test_metrics["test_accuracy"]
    assert report.tta == "translate" and restored.tta_fill == "reflect"
    assert 0.5 < result.test_metrics["test_accuracy_without_tta"] != accuracy
    assert report.metrics["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    predicted = restored.predict(data.test.images).argmax(-1)
    assert np.mean(predicted == data.test.labels) == pytest.approx(accuracy, abs=1e-6)
    plain = evaluate_restored(restored, "test", tta="none").metrics["test_loss"]
    assert plain != pytest.approx(report.metrics["test_loss"], rel=1e-4)
    with pytest.raises(ValueError, match="tta = 'mirror' is not a test-time augmentation"):
        restored.predict(data.test.images[:2], tta="mirror")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"whitening.layer": "stem"}, "whitening.layer = 'stem' is not a layer"),
        ({"optimizer.frozen": ["conv2"]}, r"optimizer.frozen: \['conv2'\] match no parameter"),
        ({"eval_tta": "mirror"}, "config.eval_tta = 'mirror' is invalid"),
        ({"whitening.num_images": 0}, "config.whitening.num_images = 0 is invalid"),
        ({"ema_decay": 1.0}, r"config.ema_decay = 1.0 is invalid: in \[0, 1\)"),
        ({"augment.crop_mode": "edge"}, r"config.augment crop_mode='edge': must be one of"),
        ({"optimizer.lr_multipliers": (("conv9", 2.0),)}, r"lr_multipliers: \['conv9'\] match no"),
        ({"optimizer.freeze_after": (("conv9", 1),)}, r"freeze_after: \['conv9'\] match no"),
    ],
)
def test_bad_recipe_settings_fail_before_training(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        fit(_whitened_config(**overrides), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_ema_decay_follows_the_weights_early_and_decay_later():
    from jaxcnn.train.state import ema_decay_at

    assert float(ema_decay_at(0, 0.999)) == pytest.approx(0.1)
    assert float(ema_decay_at(90, 0.999)) == pytest.approx(91 / 100)
    assert float(ema_decay_at(1_000_000, 0.999)) == pytest.approx(0.999)


def test_validate_config_accepts_the_defaults():
    config = validate_config(base_config())
    assert config.eval_tta == "none" and config.whitening.layer == ""
