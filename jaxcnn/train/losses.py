"""Loss and metrics of a classification batch, as sums that add up across batches.

Metrics are kept as *sums* (``loss_sum``, ``correct``, ``count``, ...) rather than
means so that the training loop can add them up on the device step after step and
fetch them once per log interval; :func:`finalize_metrics` turns the sums into
means on the host.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Softmax cross-entropy per example, with optional label smoothing.

    Label smoothing ``s`` replaces the one-hot target by ``(1 - s) * onehot + s / C``:
    the model is never asked for a probability of exactly 1, which keeps the logits
    from growing without bound.

    Args:
      logits: ``(N, C)`` unnormalised scores (any float dtype; computed in float32).
      labels: ``(N,)`` integer class ids in ``[0, C)``.
      label_smoothing: ``s`` in ``[0, 1)``.

    Returns:
      ``(N,)`` float32 losses.

    Examples:
      >>> import jax.numpy as jnp
      >>> loss = cross_entropy(jnp.array([[0.0, 0.0]]), jnp.array([1]))
      >>> round(float(loss[0]), 4)  # log 2
      0.6931
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing!r}")
    logits = logits.astype(jnp.float32)
    num_classes = logits.shape[-1]
    targets = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def batch_metrics(
    logits: jax.Array,
    labels: jax.Array,
    losses: jax.Array,
    mask: jax.Array | None = None,
    *,
    top5: bool = False,
) -> dict[str, jax.Array]:
    """Sums of loss, correct predictions (top-1 and optionally top-5) and example count.

    Args:
      logits: ``(N, C)`` scores.
      labels: ``(N,)`` class ids.
      losses: ``(N,)`` per-example losses (unsmoothed for evaluation, as trained otherwise).
      mask: optional ``(N,)`` bool; padded examples (``False``) count for nothing.
      top5: also count whether the label is among the 5 highest scores.

    Returns:
      float32 scalars ``loss_sum``, ``correct``, ``count`` (and ``correct_top5``).

    Examples:
      >>> import jax.numpy as jnp
      >>> m = batch_metrics(jnp.eye(3), jnp.array([0, 1, 0]), jnp.ones(3))
      >>> float(m["correct"]), float(m["count"])
      (2.0, 3.0)
    """
    weights = jnp.ones(labels.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
    hits = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    sums = {
        "loss_sum": jnp.sum(losses.astype(jnp.float32) * weights),
        "correct": jnp.sum(hits * weights),
        "count": jnp.sum(weights),
    }
    if top5:
        # The label is in the top 5 when fewer than 5 classes score strictly higher.
        label_score = jnp.take_along_axis(logits, labels[:, None], axis=-1)
        higher = jnp.sum((logits > label_score).astype(jnp.int32), axis=-1)
        sums["correct_top5"] = jnp.sum((higher < 5).astype(jnp.float32) * weights)
    return sums


def zeros_like_metrics(top5: bool) -> dict[str, jax.Array]:
    """An all-zero accumulator with the keys :func:`batch_metrics` returns."""
    keys = ["loss_sum", "correct", "count"] + (["correct_top5"] if top5 else [])
    return {key: jnp.zeros((), jnp.float32) for key in keys}


def add_metrics(total: Mapping[str, jax.Array], batch: Mapping[str, jax.Array]) -> dict:
    """Element-wise sum of two metric-sum dicts (jit-able)."""
    return {key: total[key] + batch[key] for key in total}


def finalize_metrics(sums: Mapping, prefix: str = "") -> dict[str, float]:
    """Turn fetched sums into ``{prefix}loss``, ``{prefix}accuracy`` (and ``{prefix}top5``).

    Args:
      sums: a dict from :func:`batch_metrics` / the accumulator (device or host values).
      prefix: e.g. ``"train_"`` or ``"val_"``.

    Returns:
      Python floats; ``nan`` when nothing was counted.

    Examples:
      >>> finalize_metrics({"loss_sum": 3.0, "correct": 2.0, "count": 4.0}, "val_")
      {'val_loss': 0.75, 'val_accuracy': 0.5}
    """
    host = {key: float(np.asarray(value)) for key, value in sums.items()}
    count = host["count"]
    safe = count if count > 0 else float("nan")
    out = {f"{prefix}loss": host["loss_sum"] / safe, f"{prefix}accuracy": host["correct"] / safe}
    if "correct_top5" in host:
        out[f"{prefix}top5"] = host["correct_top5"] / safe
    return out
