"""Early stopping, decided from the history alone (so a resumed run decides the same)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def metric_mode(metric: str) -> str:
    """``"min"`` for losses, ``"max"`` for accuracies.

    Examples:
      >>> metric_mode("val_loss"), metric_mode("val_accuracy")
      ('min', 'max')
    """
    return "min" if metric.endswith("loss") else "max"


def epochs_without_improvement(history: Sequence[Mapping], metric: str, min_delta: float) -> int:
    """Epochs since ``metric`` last improved on its best by more than ``min_delta``.

    Examples:
      >>> h = [{"val_loss": v} for v in (1.0, 0.5, 0.52, 0.51)]
      >>> epochs_without_improvement(h, "val_loss", 0.0)
      2
    """
    sign = -1.0 if metric_mode(metric) == "min" else 1.0
    best, since = -math.inf, 0
    for record in history:
        value = record.get(metric)
        if value is None or not math.isfinite(float(value)):
            since += 1
            continue
        score = sign * float(value)
        if score > best + min_delta:
            best, since = score, 0
        else:
            since += 1
    return since


def should_stop(history: Sequence[Mapping], stopping: Mapping) -> str | None:
    """A message if training should stop now, else ``None``.

    Args:
      history: per-epoch records so far.
      stopping: ``{"metric", "patience", "min_delta"}``; patience 0 disables it.

    Examples:
      >>> h = [{"val_loss": v} for v in (1.0, 0.5, 0.52, 0.51)]
      >>> should_stop(h, {"metric": "val_loss", "patience": 2, "min_delta": 0.0})
      'early stopping: val_loss has not improved for 2 epochs (patience 2); best 0.5000 at epoch 2'
    """
    patience = int(stopping["patience"])
    if patience <= 0 or not history:
        return None
    metric = stopping["metric"]
    since = epochs_without_improvement(history, metric, float(stopping["min_delta"]))
    if since < patience:
        return None
    best_index = len(history) - 1 - since
    best = history[best_index].get(metric) if best_index >= 0 else None
    where = (
        f"; best {float(best):.4f} at epoch {history[best_index].get('epoch', best_index + 1)}"
        if best is not None
        else ""
    )
    return (
        f"early stopping: {metric} has not improved for {since} epochs (patience {patience}){where}"
    )
