"""Pure train and eval steps, and their index-gathering forms the fit loop jits.

``train_step(state, batch) -> (state, metric_sums)`` and
``eval_step(state, batch) -> metric_sums`` take a batch of **uint8** images: the
conversion to [0, 1], the augmentation (training only) and the normalisation
with the training split's mean/std all happen inside the compiled step, so the
host never touches pixels.

The fit loop does not even send batches: the whole uint8 split sits on the device
and the step gathers its batch with an index array (:func:`gathering_train_step`,
:func:`gathering_eval_step`). Batch shapes are fixed (the last training batch is
dropped, the last evaluation batch is padded and masked), so each step compiles
exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from jaxcnn.train.losses import add_metrics, batch_metrics, cross_entropy

Batch = Mapping[str, jax.Array]
Augment = Callable[[jax.Array, jax.Array], jax.Array]


def preprocess(images: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """uint8 ``(N, *spatial, C)`` -> float32 normalised with per-channel ``mean``/``std``.

    ``mean`` and ``std`` are in [0, 1] units (as ``jaxcnn.data.normalization_stats``
    returns them); float input is taken to be in [0, 1] already.

    Examples:
      >>> import jax.numpy as jnp
      >>> preprocess(jnp.full((1, 1, 1), 255, jnp.uint8), jnp.array([0.5]), jnp.array([0.5]))
      Array([[[1.]]], dtype=float32)
    """
    x = images.astype(jnp.float32)
    if images.dtype == jnp.uint8:
        x = x / 255.0
    # Explicit per-channel broadcast (the tests run with rank promotion set to "raise").
    shape = (1,) * (x.ndim - 1) + (-1,)
    mean = jnp.asarray(mean, jnp.float32).reshape(shape)
    std = jnp.asarray(std, jnp.float32).reshape(shape)
    return (x - mean) / std


def _variables(state: Any) -> dict:
    """Accept a TrainState (or anything with ``params``/``batch_stats``) or a variables dict."""
    if isinstance(state, Mapping):
        return dict(state)
    return state.variables


def make_train_step(
    model: nn.Module,
    *,
    mean: Any,
    std: Any,
    augment: Augment | None = None,
    label_smoothing: float = 0.0,
    top5: bool = False,
) -> Callable[[Any, Batch], tuple[Any, dict]]:
    """The pure training step for ``model``.

    Args:
      model: Linen module; ``apply(..., train=True)`` uses the ``'dropout'`` rng
        stream and updates ``'batch_stats'`` when it has batch norm.
      mean, std: per-channel normalisation stats of the training split, [0, 1] units.
      augment: ``fn(key, images_float01) -> images`` (``jaxcnn.data.augment.build``),
        or ``None`` for none.
      label_smoothing: passed to :func:`~jaxcnn.train.losses.cross_entropy`.
      top5: also count top-5 hits (for more than 5 classes).

    Returns:
      ``train_step(state, batch) -> (new_state, metric_sums)`` where ``batch`` has
      ``"image"`` (uint8) and ``"label"`` (int32). Pure: jit it, donating ``state``.

    Examples:
      >>> # step = jax.jit(make_train_step(model, mean=m, std=s), donate_argnums=0)
      >>> # state, sums = step(state, {"image": x_uint8, "label": y})
    """
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)

    def train_step(state, batch: Batch):
        # One key per step, from the step number: resuming at step k replays step k exactly.
        step_key = jax.random.fold_in(state.rng, state.step)
        augment_key, dropout_key = jax.random.split(step_key)
        images = batch["image"].astype(jnp.float32) / 255.0
        if augment is not None:
            images = augment(augment_key, images)
        inputs = preprocess(images, mean, std)
        labels = batch["label"]

        def loss_fn(params):
            variables = {"params": params}
            if state.batch_stats:
                variables["batch_stats"] = state.batch_stats
            logits, updates = model.apply(
                variables,
                inputs,
                train=True,
                rngs={"dropout": dropout_key},
                mutable=["batch_stats"],
            )
            losses = cross_entropy(logits, labels, label_smoothing)
            return jnp.mean(losses), (logits, losses, updates)

        grads, (logits, losses, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
        new_state = state.apply_gradients(grads, updates.get("batch_stats", state.batch_stats))
        return new_state, batch_metrics(logits, labels, losses, top5=top5)

    return train_step


def make_eval_step(
    model: nn.Module, *, mean: Any, std: Any, top5: bool = False, num_classes: int = 0
) -> Callable[[Any, Batch], dict]:
    """The pure evaluation step: metric sums of one (possibly padded) batch.

    Args:
      model: Linen module, applied with ``train=False`` (running batch-norm stats).
      mean, std: the training split's normalisation stats.
      top5: also count top-5 hits.
      num_classes: when > 0, also accumulate a ``confusion`` matrix
        ``(num_classes, num_classes)`` (rows: true class, columns: predicted).

    Returns:
      ``eval_step(state_or_variables, batch) -> metric_sums``; ``batch`` has
      ``"image"``, ``"label"`` and optionally ``"mask"`` (bool, False = padding).

    Examples:
      >>> # sums = jax.jit(make_eval_step(model, mean=m, std=s))(state, batch)
    """
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)

    def eval_step(state, batch: Batch):
        logits = model.apply(_variables(state), preprocess(batch["image"], mean, std), train=False)
        labels = batch["label"]
        mask = batch.get("mask")
        sums = batch_metrics(logits, labels, cross_entropy(logits, labels), mask, top5=top5)
        if num_classes:
            weights = jnp.ones(labels.shape) if mask is None else mask.astype(jnp.float32)
            true = jax.nn.one_hot(labels, num_classes) * weights[:, None]
            predicted = jax.nn.one_hot(jnp.argmax(logits, axis=-1), num_classes)
            sums["confusion"] = true.T @ predicted
        return sums

    return eval_step


def gathering_train_step(
    train_step: Callable, steps_per_epoch: int, batch_sharding: NamedSharding | None = None
) -> Callable:
    """``(state, totals, images, labels, epoch_indices) -> (state, totals)``.

    The row of ``epoch_indices`` (``(steps_per_epoch, batch)`` int32) is chosen by
    ``state.step % steps_per_epoch`` on the device, so the host sends nothing per
    step and a run resumed mid-epoch continues with the right batch.
    """

    def step(state, totals, images, labels, epoch_indices):
        row = jax.lax.rem(state.step, steps_per_epoch)
        indices = jax.lax.dynamic_index_in_dim(epoch_indices, row, keepdims=False)
        batch = {"image": images[indices], "label": labels[indices]}
        if batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        state, sums = train_step(state, batch)
        return state, add_metrics(totals, sums)

    return step


def gathering_eval_step(eval_step: Callable, batch_sharding: NamedSharding | None = None):
    """``(state, totals, images, labels, indices, mask, row) -> totals``."""

    def step(state, totals, images, labels, indices, mask, row):
        rows = jax.lax.dynamic_index_in_dim(indices, row, keepdims=False)
        batch = {
            "image": images[rows],
            "label": labels[rows],
            "mask": jax.lax.dynamic_index_in_dim(mask, row, keepdims=False),
        }
        if batch_sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        return add_metrics(totals, eval_step(state, batch))

    return step
