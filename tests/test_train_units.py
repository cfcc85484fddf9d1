"""Unit tests of jaxcnn.train's parts: optimisers, schedules, losses, diagnosis, checkpoints,
steps (with a tiny Flax model defined here), config validation. No full training run."""

from __future__ import annotations

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxcnn.train import checkpoint as checkpoint_lib
from jaxcnn.train import optim
from jaxcnn.train.config import ConfigError, base_config, validate_config
from jaxcnn.train.diagnosis import diagnose
from jaxcnn.train.early_stopping import should_stop
from jaxcnn.train.losses import batch_metrics, cross_entropy, finalize_metrics
from jaxcnn.train.sharding import check_batch_size, make_mesh
from jaxcnn.train.state import create_train_state
from jaxcnn.train.steps import make_eval_step, make_train_step
from jaxcnn.train.volumes import rotate_nearest, twisted_volumes

# ----- schedules and optimisers ---------------------------------------------------------


def _schedule(**kwargs):
    return optim.build_schedule(kwargs, 1.0, steps_per_epoch=10, num_epochs=10)


def test_constant_and_cosine_schedules():
    assert float(_schedule(name="constant")(57)) == 1.0
    cosine = _schedule(name="cosine", end_factor=0.1)
    assert float(cosine(0)) == pytest.approx(1.0)
    assert float(cosine(50)) == pytest.approx(0.55, abs=1e-6)  # halfway: (1 + 0.1) / 2
    assert float(cosine(100)) == pytest.approx(0.1, abs=1e-6)


def test_warmup_cosine_rises_then_decays():
    schedule = _schedule(name="warmup_cosine", warmup_epochs=2)
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(0.5)
    assert float(schedule(20)) == pytest.approx(1.0)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-6)


def test_onecycle_peaks_at_pct_start():
    schedule = _schedule(name="onecycle", pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    values = np.asarray(jax.vmap(schedule)(jnp.arange(101)))
    assert values[0] == pytest.approx(1 / 25)
    assert int(values.argmax()) == 30
    assert values[-1] == pytest.approx(1 / 25 / 1e4, rel=1e-3)


def test_piecewise_and_linear_schedules():
    schedule = _schedule(name="piecewise", boundaries_epochs=[3, 6], factors=[0.1, 0.5])
    assert [round(float(schedule(s)), 6) for s in (29, 30, 59, 60)] == [1.0, 0.1, 0.1, 0.05]
    assert float(_schedule(name="linear", end_factor=0.0)(50)) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(name="exponential"), "schedule.name"),
        (dict(name="piecewise", boundaries_epochs=[1], factors=[]), "same length"),
        (dict(name="piecewise", boundaries_epochs=[5, 2], factors=[1, 1]), "increasing"),
        (dict(name="warmup_cosine", warmup_epochs=10), "warmup_epochs"),
        (dict(name="onecycle", pct_start=1.5), "pct_start"),
    ],
)
def test_schedule_errors_name_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        _schedule(**bad)


def test_weight_decay_mask_skips_biases_and_norm_scales():
    params = {
        "conv": {"kernel": jnp.ones((3, 3, 1, 4)), "bias": jnp.ones(4)},
        "bn": {"scale": jnp.ones(4), "bias": jnp.ones(4)},
        "dense": {"kernel": jnp.ones((4, 2))},
    }
    mask = optim.weight_decay_mask(params)
    assert mask == {
        "conv": {"kernel": True, "bias": False},
        "bn": {"scale": False, "bias": False},
        "dense": {"kernel": True},
    }


@pytest.mark.parametrize("name", ["sgd", "adamw", "lamb"])
def test_weight_decay_touches_kernels_only(name):
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    tx = optim.build_optimizer({"name": name, "weight_decay": 0.1, "momentum": 0.0}, lambda _: 0.1)
    zero_grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    assert float(jnp.abs(updates["kernel"]).max()) > 0  # decayed
    assert float(jnp.abs(updates["bias"]).max()) == 0.0  # not decayed


def test_grad_clipping_bounds_the_update():
    tx = optim.build_optimizer(
        {"name": "sgd", "momentum": 0.0, "grad_clip_norm": 1.0}, lambda _: 1.0
    )
    params = {"w": jnp.zeros(4)}
    updates, _ = tx.update({"w": jnp.full(4, 100.0)}, tx.init(params), params)
    assert float(optax.tree.norm(updates)) == pytest.approx(1.0, rel=1e-5)


def test_every_optimizer_builds_and_steps():
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    for name in optim.OPTIMIZERS:
        tx = optim.build_optimizer({"name": name, "nesterov": True}, lambda _: 0.01)
        updates, _ = tx.update(grads, tx.init(params), params)
        assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree_util.tree_leaves(updates))
    with pytest.raises(ValueError, match="optimizer.name"):
        optim.build_optimizer({"name": "adamax9"}, lambda _: 0.1)


# ----- losses and metrics ---------------------------------------------------------------


def test_cross_entropy_with_label_smoothing_matches_the_formula():
    logits = jnp.array([[2.0, 0.5, -1.0]])
    log_p = jax.nn.log_softmax(logits)[0]
    s = 0.3
    expected = -((1 - s) * log_p[1] + s / 3 * log_p.sum())
    assert float(cross_entropy(logits, jnp.array([1]), s)[0]) == pytest.approx(float(expected))
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy(logits, jnp.array([1]), 1.0)


def test_batch_metrics_mask_and_top5():
    logits = jnp.tile(jnp.arange(7.0), (3, 1))  # class 6 highest, class 0 lowest
    labels = jnp.array([6, 2, 0])  # top-1 hit, top-5 hit, miss
    sums = batch_metrics(logits, labels, jnp.ones(3), jnp.array([True, True, False]), top5=True)
    assert {k: float(v) for k, v in sums.items()} == {
        "loss_sum": 2.0,
        "correct": 1.0,
        "count": 2.0,
        "correct_top5": 2.0,
    }
    assert finalize_metrics(sums, "val_") == {"val_loss": 1.0, "val_accuracy": 0.5, "val_top5": 1.0}


# ----- diagnosis and early stopping --------------------------------------------------------


def _history(train_loss, val_loss, train_acc, val_acc):
    return [
        {"epoch": i + 1, "train_loss": a, "val_loss": b, "train_accuracy": c, "val_accuracy": d}
        for i, (a, b, c, d) in enumerate(zip(train_loss, val_loss, train_acc, val_acc, strict=True))
    ]


def test_diagnose_overfitting_from_rising_validation_loss():
    history = _history(
        [1.0, 0.6, 0.4, 0.3, 0.2, 0.1],
        [0.9, 0.6, 0.62, 0.66, 0.7, 0.75],
        [0.7, 0.85, 0.9, 0.93, 0.96, 0.99],
        [0.7, 0.85, 0.9, 0.91, 0.915, 0.917],
    )
    verdict = diagnose(history)
    assert verdict.verdict == "overfitting"
    assert "validation loss rising for 4 epochs" in verdict.evidence
    assert "gap 7.3 points" in verdict.evidence


def test_diagnose_overfitting_from_the_accuracy_gap():
    history = _history([0.5, 0.2], [0.5, 0.45], [0.9, 0.99], [0.88, 0.91])
    verdict = diagnose(history)
    assert verdict.verdict == "overfitting" and "8.0 points" in verdict.evidence


def test_diagnose_underfitting_rising_and_flat():
    rising = diagnose(
        _history([2.0, 1.5, 1.2], [2.0, 1.6, 1.3], [0.3, 0.45, 0.55], [0.3, 0.44, 0.54])
    )
    assert rising.verdict == "underfitting" and "still rising" in rising.evidence
    flat = diagnose(_history([1.5, 1.5, 1.5], [1.5, 1.5, 1.5], [0.4, 0.4, 0.4], [0.4, 0.4, 0.401]))
    assert flat.verdict == "underfitting" and "flat" in flat.evidence


def test_diagnose_good_fit_still_improving_diverged_and_empty():
    good = diagnose(_history([0.3, 0.1], [0.12, 0.1], [0.95, 0.97], [0.968, 0.97]))
    assert good.verdict == "good fit"
    improving = diagnose(_history([0.3, 0.2], [0.3, 0.2], [0.93, 0.95], [0.92, 0.95]))
    assert improving.verdict == "still improving" and "rose 3.0 points" in improving.evidence
    diverged = diagnose(_history([0.3, math.nan], [0.3, math.nan], [0.9, 0.1], [0.9, 0.1]))
    assert diverged.verdict == "diverged"
    assert diagnose([{"event": "test"}]).verdict == "no data"


def test_diagnose_sees_instability_and_earlier_divergence():
    # Validation accuracy falls 6 points, its loss x8: not a good fit.
    fell = diagnose(_history([0.1, 0.09], [0.05, 0.4], [0.97, 0.97], [0.99, 0.93]))
    assert fell.verdict == "unstable" and "fell 6.00 points in the last epoch" in fell.evidence
    # Both losses rising for 3 epochs at a flat 95 %: the optimisation, not overfitting.
    both = diagnose(_history([1, 1.1, 1.2, 1.3], [0.5, 0.6, 0.7, 0.8], [0.95] * 4, [0.95] * 4))
    assert both.verdict == "unstable" and "training loss rising for 3 epochs" in both.evidence
    # An Inf two epochs back is a divergence, even if the last epoch is finite.
    earlier = diagnose(_history([1, math.inf, 2.3], [1, math.inf, 2.3], [0.5, 0.1, 0.1], [0.5] * 3))
    assert earlier.verdict == "diverged" and "at epoch 2" in earlier.evidence


def test_diagnose_evidence_says_what_it_measured():
    # Training accuracy rose 25 points; validation is flat: the text says validation.
    flat = diagnose(_history([2, 1.2], [1, 0.99], [0.30, 0.55], [0.60, 0.601]))
    assert "validation flat" in flat.evidence and "+0.10 points" in flat.evidence
    one = diagnose(_history([2.0], [2.0], [0.3], [0.3]))
    assert "after one epoch" in one.evidence and "rising" not in one.evidence


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"rising_epochs": 0}, "rising_epochs must be an int >= 1; got 0"),
        ({"gap_points": -5}, "gap_points must be a number of percentage points >= 0"),
        ({"low_accuracy": 90}, r"low_accuracy must be a fraction in \(0, 1\]; got 90"),
        ({"improving_points": math.nan}, "improving_points must be a number"),
    ],
)
def test_diagnose_refuses_bad_thresholds(arguments, message):
    with pytest.raises(ValueError, match=message):
        diagnose(_history([1.0], [1.0], [0.5], [0.5]), **arguments)


def test_diagnose_refuses_percentages_and_missing_curves():
    with pytest.raises(ValueError, match=r"train_accuracy must be fractions in \[0, 1\]; got 97"):
        diagnose(_history([1.0], [1.0], [97.0], [0.9]))
    with pytest.raises(ValueError, match=r"epochs \[1\] have no 'train_accuracy'"):
        diagnose([{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.5}])


def test_should_stop_counts_epochs_without_improvement():
    rule = {"metric": "val_accuracy", "patience": 2, "min_delta": 0.01}
    history = [{"epoch": i + 1, "val_accuracy": v} for i, v in enumerate([0.5, 0.8, 0.805, 0.809])]
    assert "not improved for 2 epochs" in should_stop(history, rule)
    assert should_stop(history[:3], rule) is None
    assert should_stop(history, {**rule, "patience": 0}) is None


# ----- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("batch_size", -1, "config.batch_size = -1"),
        ("dtype", "float16", "config.dtype = 'float16'"),
        ("validation_split", 1.0, "config.validation_split"),
        ("early_stopping.metric", "val_f1", "early_stopping.metric"),
        ("batch_size", True, r"config.batch_size = True is invalid: a positive integer"),
        ("optimizer.momentum", 2.0, r"config.optimizer.momentum = 2.0 is invalid: in \[0, 1\)"),
        ("model", "resnet99", r"config.model = 'resnet99'.*registered again in each process"),
        ("volume.depth", 4, r"config.augment switches on \{'rotation': 5.0\}.*3-D volumes"),
    ],
)
def test_validate_config_names_field_and_value(field, value, match):
    config = base_config()
    config.augment.rotation = 5.0  # the 2-D augmentation a volume run must not have
    config.update_from_flattened_dict({field: value})
    with pytest.raises(ConfigError, match=match):
        validate_config(config)


def test_validate_config_rejects_unknown_fields_and_fills_defaults():
    with pytest.raises(ConfigError, match="optimizer.lr"):
        validate_config(ml_collections.ConfigDict({"optimizer": {"lr": 0.1}}))
    filled = validate_config(ml_collections.ConfigDict({"num_epochs": 3}))
    assert filled.num_epochs == 3 and filled.optimizer.name == "sgd"
    assert validate_config({"num_epochs": 2}).num_epochs == 2  # a plain dict is a config
    assert filled.model == "digits_cnn" and filled.dataset == "digits"  # a pair that fits
    with pytest.raises(ConfigError, match=r"optimizer.frozen = 'conv1' is invalid: a list"):
        validate_config(ml_collections.ConfigDict({"optimizer": {"frozen": "conv1"}}))
    with pytest.raises(ConfigError, match="config must be an ml_collections.ConfigDict or a dict"):
        validate_config(3)


# ----- sharding, volumes ------------------------------------------------------------------


def test_batch_size_must_split_over_devices():
    mesh = make_mesh(1)
    check_batch_size(7, mesh)  # any size works on one device
    with pytest.raises(ValueError, match="num_devices"):
        make_mesh(len(jax.devices()) + 1)


def test_twisted_volumes_rotate_each_slice():
    image = np.zeros((1, 5, 5, 1), np.uint8)
    image[0, 0, 2, 0] = 200  # top middle
    quarter = rotate_nearest(image, np.array([90.0]))
    assert quarter[0, 2, 0, 0] == 200 and quarter.sum() == 200  # now left middle
    volumes = twisted_volumes(np.repeat(image, 3, axis=0), 4, 90.0, seed=1, max_start=0.0)
    assert volumes.shape == (3, 4, 5, 5, 1)
    np.testing.assert_array_equal(volumes[:, 1], np.repeat(quarter, 3, axis=0))


# ----- checkpoints ----------------------------------------------------------------------------


def _tree(value):
    return {"params": {"w": jnp.full((3,), value, jnp.float32)}, "step": jnp.int32(value)}


def _abstract(tree):
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree
    )


def test_checkpoints_keep_the_last_n_and_the_best(tmp_path):
    store = checkpoint_lib.CheckpointStore(tmp_path, keep=2, best_metric="val_accuracy")
    for step, accuracy in [(1, 0.5), (2, 0.9), (3, 0.6), (4, 0.7), (5, 0.65)]:
        tree = _tree(step)
        store.save(
            step, tree, {"shapes": checkpoint_lib.tree_shapes(tree)}, {"val_accuracy": accuracy}
        )
    assert store.steps() == [2, 4, 5]
    assert (store.best_step(), store.latest_step()) == (2, 5)
    restored, meta = store.restore(store.step_for("best"), _abstract(_tree(0)))
    assert int(restored["step"]) == 2 and "params/w" in meta["shapes"]
    store.close()


def test_crash_before_the_commit_leaves_no_complete_looking_checkpoint(tmp_path, monkeypatch):
    from orbax.checkpoint._src.path import atomicity

    store = checkpoint_lib.CheckpointStore(tmp_path, keep=3)
    store.save(1, _tree(1), {"shapes": {}}, {"val_accuracy": 0.5})

    async def crash(*args, **kwargs):
        raise OSError("simulated crash between writing the files and the final rename")

    # Every file of step 2 is written; only the rename that publishes it fails.
    monkeypatch.setattr(atomicity.async_path, "rename", crash)
    with pytest.raises(Exception, match="simulated crash"):
        store.save(2, _tree(2), {"shapes": {}}, {"val_accuracy": 0.9})
    monkeypatch.undo()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith("2")]
    assert leftovers and all("tmp" in name for name in leftovers)
    reopened = checkpoint_lib.CheckpointStore(tmp_path, keep=3)
    assert reopened.steps() == [1] and reopened.latest_step() == 1
    restored, _ = reopened.restore(1, _abstract(_tree(0)))
    assert int(restored["step"]) == 1
    reopened.save(2, _tree(2), {"shapes": {}}, {"val_accuracy": 0.9})  # the resumed run saves
    assert reopened.steps() == [1, 2]
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]  # the debris is gone
    reopened.close()


def test_changed_shapes_give_a_clear_error(tmp_path):
    store = checkpoint_lib.CheckpointStore(tmp_path, keep=1)
    tree = _tree(1)
    store.save(1, tree, {"shapes": checkpoint_lib.tree_shapes(tree), "model_description": "A"})
    changed = dict(checkpoint_lib.tree_shapes(tree), **{"params/w": "float32[4]"})
    with pytest.raises(
        checkpoint_lib.CheckpointMismatchError,
        match=r"(?s)the model changed.*params/w: checkpoint float32\[3\], now ",
    ):
        store.check_compatible(1, changed, "B")
    store.check_compatible(1, checkpoint_lib.tree_shapes(tree), "A")  # same shapes: fine
    store.close()


# ----- steps on a tiny model ---------------------------------------------------------------


class TinyNet(nn.Module):
    """Conv + batch norm + dropout: exercises every collection and rng stream a step uses."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.relu(x).reshape(x.shape[0], -1)
        x = nn.Dropout(0.1, deterministic=not train)(x)
        return nn.Dense(3)(x)


@pytest.fixture(scope="module")
def tiny_setup():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 6, 6, 1), dtype=np.uint8)
    labels = (images.reshape(16, -1).mean(axis=1) > 127).astype(np.int32)
    config = ml_collections.ConfigDict(
        dict(
            num_epochs=1,
            optimizer=dict(name="adam", learning_rate=0.01),
            schedule=dict(name="constant"),
        )
    )
    model = TinyNet()
    state = create_train_state(model, config, jax.random.PRNGKey(0), (1, 6, 6, 1))
    return model, state, {"image": jnp.asarray(images), "label": jnp.asarray(labels)}


def test_train_step_learns_and_is_compiled_once(tiny_setup):
    model, state, batch = tiny_setup
    chex.clear_trace_counter()
    step = jax.jit(
        chex.assert_max_traces(make_train_step(model, mean=[0.5], std=[0.25]), n=1),
        donate_argnums=0,
    )
    state = jax.tree_util.tree_map(jnp.copy, state)  # the fixture's state is not donated
    losses = []
    for _ in range(30):
        state, sums = step(state, batch)
        losses.append(float(sums["loss_sum"] / sums["count"]))
    assert losses[-1] < 0.5 * losses[0]
    assert int(state.step) == 30
    assert state.batch_stats  # running statistics were updated


def test_train_step_takes_float_images_in_0_1_as_the_eval_step_does(tiny_setup):
    model, state, batch = tiny_setup
    step = jax.jit(make_train_step(model, mean=[0.5], std=[0.25]))
    _, from_uint8 = step(state, batch)
    floats = {**batch, "image": batch["image"].astype(jnp.float32) / 255.0}
    _, from_floats = step(state, floats)  # not divided by 255 a second time
    np.testing.assert_allclose(from_floats["loss_sum"], from_uint8["loss_sum"], rtol=1e-6)


def test_frozen_parameters_cost_no_gradient_and_leave_the_rest_unchanged(tiny_setup):
    model, state, batch = tiny_setup

    def compiled(frozen):
        step = jax.jit(make_train_step(model, mean=[0.5], std=[0.25], frozen=frozen))
        return step.lower(state, batch).compile()

    plain, frozen = compiled(()), compiled(["Conv_0/kernel"])
    # XLA drops the frozen kernel's gradient: one convolution (the forward) instead of two.
    assert plain.as_text().count(" convolution(") == 2
    assert frozen.as_text().count(" convolution(") == 1
    (after_plain, _), (after_frozen, _) = plain(state, batch), frozen(state, batch)
    kernel = ("Conv_0", "kernel")
    # The fixture's Adam does not freeze: a zero gradient still leaves the kernel in place.
    np.testing.assert_array_equal(
        after_frozen.params[kernel[0]][kernel[1]], state.params[kernel[0]][kernel[1]]
    )
    for (path, got), (_, want) in zip(
        jax.tree_util.tree_leaves_with_path(after_frozen.params),
        jax.tree_util.tree_leaves_with_path(after_plain.params),
        strict=True,
    ):
        if tuple(k.key for k in path) != kernel:  # every other update is the same
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_eval_step_masks_padding(tiny_setup):
    model, state, batch = tiny_setup
    eval_step = jax.jit(make_eval_step(model, mean=[0.5], std=[0.25], num_classes=3))
    mask = jnp.arange(16) < 10
    sums = eval_step(state, {**batch, "mask": mask})
    first_ten = eval_step(state, {"image": batch["image"][:10], "label": batch["label"][:10]})
    assert float(sums["count"]) == 10.0
    np.testing.assert_allclose(float(sums["loss_sum"]), float(first_ten["loss_sum"]), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(sums["confusion"]), np.asarray(first_ten["confusion"]))
    assert float(np.asarray(sums["confusion"]).sum()) == 10.0


def test_bfloat16_compute_keeps_float32_parameters(tiny_setup):
    from jaxcnn.train.components import build_model

    _, _, batch = tiny_setup
    config = validate_config(
        ml_collections.ConfigDict(
            {
                "model": "spec",
                "dtype": "bfloat16",
                "num_epochs": 1,
                "model_kwargs": {
                    "spec": {
                        "stages": [{"type": "conv", "features": 4}],
                        "head": [{"type": "flatten"}],
                    }
                },
                "optimizer": {"name": "adam", "learning_rate": 1e-3},
            }
        )
    )
    model = build_model(config, num_classes=3, in_channels=1)
    state = create_train_state(model, config, jax.random.PRNGKey(0), (1, 6, 6, 1))
    step = jax.jit(make_train_step(model, mean=[0.5], std=[0.25]))
    state, sums = step(state, batch)
    leaves = jax.tree_util.tree_leaves(state.params)
    assert all(leaf.dtype == jnp.float32 for leaf in leaves)
    assert math.isfinite(float(sums["loss_sum"]))
    logits = model.apply({"params": state.params}, jnp.zeros((1, 6, 6, 1)), train=False)
    assert logits.dtype == jnp.float32  # the contract: logits in float32 whatever the compute
    # The convolution really ran in bfloat16.
    hlo = (
        jax.jit(lambda x: model.apply({"params": state.params}, x))
        .lower(jnp.zeros((1, 6, 6, 1)))
        .as_text()
    )
    assert "bf16" in hlo


# ----- the config files -----------------------------------------------------------------------


def _load_config_file(path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def test_every_config_file_validates_and_names_a_zoo_model():
    from pathlib import Path

    from jaxcnn import models

    paths = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.py"))
    assert {p.stem for p in paths} >= {
        "default",
        "mnist",
        "fashion_mnist",
        "cifar10",
        "cifar10_resnet",
        "cifar10_fast",
        "digits3d",
    }
    for path in paths:
        config = validate_config(_load_config_file(path))
        assert config.model in models.names(), path
        module_doc = path.read_text().split('"""')[1]
        assert "python scripts/train.py" in module_doc and "easured" in module_doc, path


def test_cifar10_fast_patterns_match_its_model():
    # The recipe's frozen, lr_multipliers and freeze_after globs must name real parameters
    # of the net its model_kwargs build; eval_shape initialises nothing: no compile.
    from pathlib import Path

    from jaxcnn import models
    from jaxcnn.train.state import frozen_patterns

    path = Path(__file__).resolve().parents[1] / "configs" / "cifar10_fast.py"
    config = validate_config(_load_config_file(path))
    model = models.get(config.model, **config.model_kwargs)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    patterns = frozen_patterns(config) + [p for p, _ in optim.lr_multiplier_pairs(config.optimizer)]
    patterns += [p for p, _ in optim.freeze_after_pairs(config.optimizer)]
    assert optim.unmatched_patterns(shapes["params"], patterns) == []
    labels = optim.multiplier_labels(optim.lr_multiplier_pairs(config.optimizer))(shapes["params"])
    assert labels["group3_conv2"]["norm"] == {"bias": "x0", "scale": "base"}
