"""make_train_step(batch_splits=...): the gradient from slices of the batch equals the whole's;
eval_logits(batch_splits=...): so do the logits."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcnn import conv_backend, onednn
from jaxcnn.conv_backend import use_conv_backend
from jaxcnn.train import (
    ConfigError,
    auto_batch_splits,
    auto_eval_splits,
    base_config,
    create_train_state,
    eval_slices,
    make_train_step,
    steps,
    validate_config,
)
from jaxcnn.train.steps import eval_logits
from jaxcnn.train.tta import TTA_MODES, TTA_VIEW_COUNTS, tta_views


class SmallNet(nn.Module):
    """Conv + dense, no batch norm; dropout only when asked (its masks differ per slice)."""

    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Conv(4, (3, 3))(x)).reshape(x.shape[0], -1)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(3)(x)


class NormNet(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.BatchNorm(use_running_average=not train)(nn.Conv(4, (3, 3))(x))
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


CONFIG = ml_collections.ConfigDict(
    {"num_epochs": 1, "optimizer": {"name": "sgd", "learning_rate": 0.1},
     "schedule": {"name": "constant"}}
)  # fmt: skip


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 6, 6, 1), dtype=np.uint8)
    return {"image": jnp.asarray(images), "label": jnp.asarray(rng.integers(0, 3, 16), jnp.int32)}


def one_step(model, batch, splits):
    state = create_train_state(model, CONFIG, jax.random.key(0), (1, 6, 6, 1))
    step = jax.jit(make_train_step(model, mean=[0.5], std=[0.25], batch_splits=splits))
    return step(state, batch)


@pytest.mark.parametrize("splits", [2, 3])  # 3: slices of 5, 5 and 6 images, weighted
def test_sliced_gradient_equals_the_whole_batch_gradient(batch, splits):
    whole_state, whole_sums = one_step(SmallNet(), batch, 1)
    state, sums = one_step(SmallNet(), batch, splits)
    for got, want in zip(
        jax.tree.leaves(state.params), jax.tree.leaves(whole_state.params), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for key in whole_sums:
        np.testing.assert_allclose(sums[key], whole_sums[key], rtol=1e-5)


def test_sliced_step_with_dropout_is_reproducible(batch):
    first, _ = one_step(SmallNet(dropout=0.5), batch, 4)
    second, _ = one_step(SmallNet(dropout=0.5), batch, 4)
    jax.tree.map(np.testing.assert_array_equal, first.params, second.params)


@pytest.mark.parametrize(
    "model, splits, message",
    [
        (NormNet(), 2, "batch_splits=2 with a batch-norm model"),
        (SmallNet(), 17, "batch_splits=17 is more than the 16 images"),
        (SmallNet(), -1, "batch_splits=-1; valid"),
    ],
)
def test_splits_that_cannot_work_raise_when_traced(batch, model, splits, message):
    with pytest.raises(ValueError, match=message):
        one_step(model, batch, splits)


def test_automatic_choice():
    # This suite runs on one CPU device.
    with use_conv_backend("xla"):
        assert auto_batch_splits(128, has_batch_norm=False) == 4
        assert auto_batch_splits(128, has_batch_norm=True) == 1
        assert auto_batch_splits(32, has_batch_norm=False) == 1  # slices of 8 are too small
        assert auto_batch_splits(128, False, convolutions_on_binding=True) == 1
    if onednn.available():  # its convolutions use every core: slices would compete
        with use_conv_backend("onednn"):
            assert auto_batch_splits(128, has_batch_norm=False) == 1


class BindingConvNet(nn.Module):
    """A 3x3 conv through jaxcnn's backend switch (which the route recorder sees) + dense."""

    @nn.compact
    def __call__(self, x, train=False):
        conv = nn.Conv(16, (3, 3), conv_general_dilated=conv_backend.conv_general_dilated)
        return nn.Dense(3)(nn.relu(conv(x)).reshape(x.shape[0], -1))


@pytest.mark.skipif(not onednn.available(), reason="the binding does not load here")
@pytest.mark.parametrize("winograd, routes, splits", [("off", ["xla"], 4), ("on", ["binding"], 1)])
def test_the_step_keeps_the_batch_whole_where_the_binding_runs_its_convolutions(
    monkeypatch, winograd, routes, splits
):
    # JAXCNN_WINOGRAD=on sends every 3x3 stride-1 call to the binding, whose calls use
    # every core: 4 concurrent slices would only compete (item 89 in docs/perf_notes.md).
    monkeypatch.setenv("JAXCNN_WINOGRAD", winograd)
    chosen = []

    def spy(*args, **kwargs):
        chosen.append(auto_batch_splits(*args, **kwargs))
        return chosen[-1]

    monkeypatch.setattr(steps, "auto_batch_splits", spy)
    model = BindingConvNet()
    images = jax.ShapeDtypeStruct((64, 6, 6, 1), jnp.uint8)
    batch = {"image": images, "label": jax.ShapeDtypeStruct((64,), jnp.int32)}
    with use_conv_backend("xla"):
        state = create_train_state(model, CONFIG, jax.random.key(0), (1, 6, 6, 1))
        with conv_backend.record_routes() as recorded:
            jax.eval_shape(model.apply, state.variables, jnp.zeros((1, 6, 6, 1)))
        jax.eval_shape(make_train_step(model, mean=[0.5], std=[0.25]), state, batch)
    assert recorded == routes
    assert chosen[-1] == splits


def test_nested_route_recorders_each_see_the_calls_traced_inside_them():
    def conv(x):
        dims = ("NHWC", "HWIO", "NHWC")
        w = jnp.ones((2, 2, 1, 1))
        return conv_backend.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=dims)

    x = jax.ShapeDtypeStruct((1, 4, 4, 1), jnp.float32)
    with conv_backend.record_routes() as outer:
        with conv_backend.record_routes() as inner:
            pass
        jax.eval_shape(conv, x)
    assert (len(outer), inner) == (1, [])


def test_automatic_default_keeps_batch_norm_models_whole(batch):
    state, _ = one_step(NormNet(), batch, 0)
    assert int(state.step) == 1


@pytest.mark.parametrize("value", [-1, 129])
def test_config_field_is_validated(value):
    config = base_config()
    config.batch_splits = value
    with pytest.raises(ConfigError, match="config.batch_splits"):
        validate_config(config)


# --------------------------------------------------------------------------- evaluation
def eval_logits_of(model, batch, splits, tta="none"):
    variables = model.init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)))
    logits = jax.jit(
        lambda v, images: eval_logits(model, v, images, [0.5], [0.25], tta, batch_splits=splits)
    )
    return np.asarray(logits(variables, batch["image"]))


@pytest.mark.parametrize("model", [SmallNet(), NormNet()], ids=["plain", "batch_norm"])
# 3: one group of 3 side by side where XLA runs the convolution, else 3 in turn; 5: prime,
# one at a time through lax.map, the last slice padded (16 images -> 5 x 4).
@pytest.mark.parametrize("splits, tta", [(3, "none"), (2, "flip"), (5, "none")])
def test_sliced_evaluation_gives_the_whole_batch_logits(batch, model, splits, tta):
    # Batch norm evaluates with its running statistics, so slices change nothing there.
    whole = eval_logits_of(model, batch, 1, tta)
    np.testing.assert_allclose(eval_logits_of(model, batch, splits, tta), whole, rtol=1e-5,
                               atol=1e-6)  # fmt: skip


@pytest.mark.parametrize("splits", [-1, 17, 2.0])
def test_evaluation_splits_that_cannot_work_raise_naming_them(batch, splits):
    with pytest.raises(ValueError, match=rf"batch_splits={splits}; valid: 0 \(automatic\)"):
        eval_logits_of(SmallNet(), batch, splits)


def test_automatic_evaluation_slices():
    # Slices of at most 128 images, whichever backend: oneDNN's calls slow down past the
    # cache as XLA's do (item 90).
    assert [auto_eval_splits(n) for n in (16, 128, 129, 500, 1000)] == [1, 1, 2, 4, 8]
    if onednn.available():
        with use_conv_backend("onednn"):
            assert auto_eval_splits(1000) == 8


@pytest.mark.parametrize(
    "batch_size, splits, views, all_on_binding, plan",
    [
        (1000, 0, 1, False, (8, 4)),  # XLA runs convolutions: 4 slices side by side
        (1000, 0, 1, True, (8, 1)),  # the binding's calls use every core: one at a time
        (10000, 0, 1, False, (80, 4)),  # 79 rounded up to whole groups
        (1000, 0, 2, False, (8, 2)),  # two test-time views: two slices make 4 passes
        (1000, 0, 6, False, (8, 1)),
        (16, 6, 1, False, (6, 3)),  # asked for: the largest divisor <= 4
        (16, 5, 1, False, (5, 1)),
        (100, 0, 1, False, (1, 1)),  # one slice: the whole batch
    ],
)
def test_evaluation_slice_plans(batch_size, splits, views, all_on_binding, plan):
    assert eval_slices.eval_slice_plan(batch_size, splits, views, all_on_binding) == plan


@pytest.mark.parametrize("slices, side_by_side", [(1, 1), (4, 2), (5, 1), (7, 7)])
def test_sliced_apply_keeps_every_row_in_order(slices, side_by_side):
    images = jnp.arange(7 * 3, dtype=jnp.float32).reshape(7, 3)
    got = eval_slices.sliced_apply(lambda x: x * 2, images, slices, side_by_side)
    np.testing.assert_array_equal(got, images * 2)


@settings(max_examples=300, deadline=None)
@given(
    batch_size=st.integers(1, 5000),
    asked=st.integers(0, 40),
    views=st.sampled_from(sorted(set(TTA_VIEW_COUNTS.values()))),
    all_on_binding=st.booleans(),
)
def test_slice_plans_hold_their_promises(batch_size, asked, views, all_on_binding):
    splits = min(asked, batch_size)
    slices, side_by_side = eval_slices.eval_slice_plan(batch_size, splits, views, all_on_binding)
    assert 1 <= slices <= batch_size and slices % side_by_side == 0
    if splits:  # asked for: exactly that many
        assert slices == splits
    else:  # on this CPU: slices of at most 128 images, never more slices than needed + a group
        assert math.ceil(batch_size / slices) <= eval_slices.EVAL_SLICE_IMAGES
        assert slices < math.ceil(batch_size / eval_slices.EVAL_SLICE_IMAGES) + side_by_side
    # A group's forward passes: at most 4 (one slice alone may have more views), 1 slice
    # where the binding runs every convolution.
    assert side_by_side * views <= max(views, eval_slices.EVAL_SIDE_BY_SIDE)
    if all_on_binding:
        assert side_by_side == 1


@settings(max_examples=40, deadline=None)
@given(total=st.integers(1, 40), data=st.data())
def test_sliced_apply_equals_the_whole_for_any_plan(total, data):
    slices = data.draw(st.integers(1, total))
    side_by_side = data.draw(st.sampled_from([d for d in range(1, slices + 1) if slices % d == 0]))
    images = jnp.arange(total * 2, dtype=jnp.float32).reshape(total, 2)
    got = eval_slices.sliced_apply(lambda x: x * 3 + 1, images, slices, side_by_side)
    np.testing.assert_array_equal(got, images * 3 + 1)


def test_sliced_apply_rejects_a_group_that_does_not_divide():
    with pytest.raises(ValueError, match="side_by_side=3 does not divide slices=4"):
        eval_slices.sliced_apply(lambda x: x, jnp.zeros((8, 1)), 4, 3)


@pytest.mark.parametrize("backend, traced", [("xla", 5), ("onednn", 2)])
def test_evaluation_program_holds_one_group_of_the_net(backend, traced):
    # 1,000 images = 8 slices: the program traces the net once to see the routes and once
    # per slice of a group (4 where XLA runs a convolution, 1 where the binding runs them
    # all), not once per slice (8 before item 90).
    if backend == "onednn" and not onednn.available():
        pytest.skip("oneDNN binding not built here")
    model = BindingConvNet()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)))
    images = jax.ShapeDtypeStruct((1000, 6, 6, 1), jnp.uint8)
    with use_conv_backend(backend), conv_backend.record_routes() as routes:
        jax.eval_shape(lambda x: eval_logits(model, variables, x, [0.5], [0.25]), images)
    assert len(routes) == traced, routes


def test_the_view_counts_are_the_views_tta_makes():
    images = jnp.zeros((1, 4, 4, 1))
    assert {mode: len(tta_views(images, mode)) for mode in TTA_MODES} == TTA_VIEW_COUNTS
