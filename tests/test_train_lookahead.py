"""airbench's last three training tricks: lookahead, alternating flips, and parameters
frozen after some epochs. Tiny arrays only (no model compiles here); resuming a run
with lookahead bit for bit is in test_train_fit (its reference config uses it)."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn.data import augment
from jaxcnn.train import optim
from jaxcnn.train.config import ConfigError, base_config, validate_config
from jaxcnn.train.lookahead import Lookahead, from_config
from jaxcnn.train.state import TrainState
from jaxcnn.train.steps import gathering_train_step, make_train_step

# ----- lookahead -------------------------------------------------------------------------


def _airbench_lookahead(moves, *, every, start_epochs, steps_per_epoch):
    """airbench94's loop, re-typed with numpy: the fast weights after each step."""
    total = len(moves)
    fast, slow, out = np.zeros_like(moves[0]), None, []
    for index, move in enumerate(moves):
        epoch, step = index // steps_per_epoch, index + 1
        fast = fast + move
        if epoch >= start_epochs and step % every == 0:
            if slow is None:
                slow = fast.copy()
            else:
                rho = 0.95**every * (step / total) ** 3
                slow = slow + (1 - rho) * (fast - slow)
                fast = slow.copy()
        if step % steps_per_epoch == 0 and slow is not None:
            fast = slow.copy()  # the copy-back at each epoch's end
        out.append(fast.copy())
    return np.stack(out)


@pytest.mark.parametrize(("every", "start_epochs", "steps_per_epoch"), [(5, 3, 12), (4, 1, 8)])
def test_lookahead_follows_airbenchs_loop_step_for_step(every, start_epochs, steps_per_epoch):
    moves = np.random.default_rng(0).normal(size=(10 * steps_per_epoch, 3)).astype(np.float32)
    want = _airbench_lookahead(
        moves, every=every, start_epochs=start_epochs, steps_per_epoch=steps_per_epoch
    )
    lookahead = Lookahead(
        every=every,
        start_step=start_epochs * steps_per_epoch,
        total_steps=len(moves),
        steps_per_epoch=steps_per_epoch,
    )
    apply = jax.jit(lookahead.apply)
    fast, slow, got = jnp.zeros(3), jnp.zeros(3), []
    for index, move in enumerate(moves):
        slow, fast = apply(index + 1, slow, fast + move)
        got.append(np.asarray(fast))
    np.testing.assert_allclose(np.stack(got), want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(want, np.cumsum(moves, axis=0))  # it did pull the weights back


def test_lookahead_rho_grows_to_decay_base_to_the_every():
    lookahead = Lookahead(every=5, start_step=144, total_steps=480, steps_per_epoch=48)
    assert lookahead.first_sync == 145
    assert float(lookahead.decay_at(240)) == pytest.approx(0.95**5 / 8)
    assert float(lookahead.decay_at(480)) == pytest.approx(0.95**5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": 0}, "every=0: must be an int >= 1"),
        ({"start_step": 100}, r"start_step=100: must be an int in \[0, total_steps=100\)"),
        ({"decay_base": 1.5}, r"decay_base=1.5: must be in \(0, 1\]"),
        ({"decay_power": -1.0}, "decay_power=-1.0: must be >= 0"),
    ],
)
def test_lookahead_rejects_bad_settings(kwargs, message):
    settings = dict(every=5, start_step=0, total_steps=100, steps_per_epoch=10) | kwargs
    with pytest.raises(ValueError, match=message):
        Lookahead(**settings)


def test_lookahead_from_config_counts_epochs_and_is_off_by_default():
    config = validate_config(base_config())
    assert from_config(config, 10) is None
    config.lookahead.every_steps = 5
    config.num_epochs = 10
    assert from_config(config, 48) == Lookahead(5, 144, 480, 48)
    with pytest.raises(ValueError, match="steps_per_epoch is needed"):
        from_config(config, None)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lookahead.every_steps": -1}, r"lookahead.every_steps = -1 is invalid: an integer >= 0"),
        (
            {"lookahead.every_steps": 5, "lookahead.start_epochs": 2.0},
            r"lookahead.start_epochs = 2.0 is invalid: in \[0, num_epochs=2\)",
        ),
        (
            {
                "lookahead.every_steps": 5,
                "lookahead.start_epochs": 0.0,
                "lookahead.decay_base": 0.0,
            },
            r"lookahead.decay_base = 0.0 is invalid: in \(0, 1\]",
        ),
    ],
)
def test_bad_lookahead_config_names_the_field(overrides, message):
    config = base_config()
    config.num_epochs = 2
    config.update_from_flattened_dict(overrides)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def _state(lookahead):
    params = {"w": jnp.zeros(2)}
    stats = {"bn": {"mean": jnp.zeros(2)}}
    tx = optax.sgd(1.0)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=stats,
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(0),
        tx=tx,
        lookahead_slow=jax.tree_util.tree_map(jnp.copy, {"params": params, "batch_stats": stats}),
        lookahead=lookahead,
    )


def test_train_state_syncs_weights_and_batch_stats_and_checkpoints_the_slow_copy():
    state = _state(Lookahead(every=2, start_step=0, total_steps=4, steps_per_epoch=4))
    for value in (1.0, 1.0, 1.0, 1.0):  # gradient -1: the weights grow by 1 a step
        state = state.apply_gradients(
            {"w": jnp.full(2, -value)}, {"bn": {"mean": state.params["w"] + 1}}
        )
    # Step 2 copies (w = 2); step 4 pulls w = 4 back to 2 + 0.0975 * 2 = 2.195, and the
    # batch statistics (3 + 1 = 4 -> 2.195 as well: they were 2 at the copy).
    assert float(state.params["w"][0]) == pytest.approx(2.195)
    assert float(state.batch_stats["bn"]["mean"][0]) == pytest.approx(2.195)
    assert "lookahead_slow" in state.checkpoint_tree()
    restarted = state.with_params({"w": jnp.full(2, 7.0)})
    assert float(restarted.lookahead_slow["params"]["w"][0]) == 7.0
    assert "lookahead_slow" not in _state(None).replace(lookahead_slow=None).checkpoint_tree()


# ----- alternating flips -----------------------------------------------------------------


def test_alternating_flip_mirrors_each_image_every_other_epoch():
    images = jax.random.uniform(jax.random.key(1), (64, 4, 5, 3))
    ids = jnp.arange(64)
    key = jax.random.key(7)
    by_epoch = [augment.alternating_flip(key, images, ids, epoch) for epoch in range(4)]
    mirrored = [np.asarray((out != images).any(axis=(1, 2, 3))) for out in by_epoch]
    assert 16 < mirrored[0].sum() < 48  # about half, by each image's own coin
    np.testing.assert_array_equal(mirrored[1], ~mirrored[0])
    np.testing.assert_array_equal(mirrored[2], mirrored[0])
    np.testing.assert_array_equal(by_epoch[1][mirrored[1]], images[mirrored[1]][:, :, ::-1])
    # The coin belongs to the image, not to its place in the batch.
    order = jax.random.permutation(jax.random.key(2), 64)
    shuffled = augment.alternating_flip(key, images[order], ids[order], 0)
    np.testing.assert_array_equal(shuffled, by_epoch[0][order])


def test_alternate_flip_mode_needs_ids_and_epoch():
    fn = augment.build({"flip": True, "flip_mode": "alternate", "crop_padding": 1}, seed=3)
    assert fn.needs_example_ids and not augment.build({"flip": True}).needs_example_ids
    images = jnp.ones((2, 4, 4, 1))
    assert fn(jax.random.key(0), images, example_ids=jnp.arange(2), epoch=0).shape == images.shape
    with pytest.raises(ValueError, match="flip_mode='alternate' needs example_ids="):
        fn(jax.random.key(0), images)
    with pytest.raises(ValueError, match=r"augment flip_mode='sometimes': must be one of"):
        augment.build({"flip": True, "flip_mode": "sometimes"})
    config = base_config()
    config.augment.flip_mode = "sometimes"
    with pytest.raises(ConfigError, match="config.augment flip_mode='sometimes'"):
        validate_config(config)


def test_gathering_step_hands_the_rows_and_epoch_to_the_step():
    seen = []

    def train_step(state, batch):
        seen.append((np.asarray(batch["index"]), int(batch["epoch"])))
        return state.replace(step=state.step + 1), {"n": jnp.zeros(())}

    state = _state(None)
    step = gathering_train_step(train_step, steps_per_epoch=2)
    rows = jnp.array([[3, 1], [0, 2]], jnp.int32)
    images, labels = jnp.zeros((4, 1, 1, 1), jnp.uint8), jnp.arange(4)
    totals = {"n": jnp.zeros(())}
    for _ in range(3):
        state, totals = step(state, totals, images, labels, rows)
    assert [(index.tolist(), epoch) for index, epoch in seen] == [
        ([3, 1], 0),
        ([0, 2], 0),
        ([3, 1], 1),
    ]


def test_train_step_without_rows_says_what_alternating_flips_need():
    fn = augment.build({"flip": True, "flip_mode": "alternate"})
    model = types.SimpleNamespace()  # never reached: the batch is checked first
    step = make_train_step(model, mean=[0.0], std=[1.0], augment=fn)
    batch = {"image": jnp.zeros((2, 4, 4, 1), jnp.uint8), "label": jnp.zeros(2, jnp.int32)}
    with pytest.raises(
        ValueError, match=r"needs the batch's 'index'.*has only \['image', 'label'\]"
    ):
        step(_state(None), batch)


# ----- freeze_after ------------------------------------------------------------------------


def test_freeze_after_stops_the_matched_parameters_after_that_many_epochs():
    params = {"whiten": {"bias": jnp.zeros(2), "kernel": jnp.zeros(2)}}
    tx = optim.build_optimizer(
        {"name": "sgd", "momentum": 0.9, "freeze_after": [("whiten/bias", 1.5)]},
        optax.constant_schedule(0.1),
        steps_per_epoch=2,
    )
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    opt_state, moved = tx.init(params), []
    for _ in range(5):
        updates, opt_state = tx.update(grads, opt_state, params)
        moved.append((float(updates["whiten"]["bias"][0]), float(updates["whiten"]["kernel"][0])))
    assert [bias != 0 for bias, _ in moved] == [True, True, True, False, False]  # 1.5 x 2 steps
    assert all(kernel != 0 for _, kernel in moved)
    with pytest.raises(ValueError, match="freeze_after=.* needs steps_per_epoch"):
        optim.build_optimizer({"freeze_after": [("whiten/bias", 1)]}, optax.constant_schedule(0.1))


@pytest.mark.parametrize("entry", [("whiten/bias",), ("whiten/bias", -1), ("", 3), "whiten/bias"])
def test_bad_freeze_after_names_the_entry(entry):
    config = base_config()
    config.optimizer.freeze_after = (entry,)
    with pytest.raises(ConfigError, match=r"config.optimizer.freeze_after entry .* epochs >= 0"):
        validate_config(config)
