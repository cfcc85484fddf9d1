"""Tell over- from underfitting by reading the train and validation curves.

The rules are the ones a teacher applies by eye, written down with thresholds a
caller can change:

* **diverged** – a loss is NaN/Inf.
* **overfitting** – validation loss has been rising for ``rising_epochs`` epochs
  while training loss falls, or the train–validation accuracy gap exceeds
  ``gap_points`` percentage points.
* **underfitting** – training *and* validation accuracy are below ``low_accuracy``
  (training accuracy alone is measured under dropout and augmentation, so it can
  trail a well-fitted validation accuracy): either still rising (train longer) or
  flat (the model is too small or the learning rate wrong).
* **still improving** – a good fit whose validation accuracy rose noticeably in the
  last epoch: more epochs will probably help.
* **good fit** – none of the above.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """A one-word verdict and the numbers behind it."""

    verdict: str
    evidence: str

    def __str__(self) -> str:
        return f"{self.verdict}: {self.evidence}"


def _trend_run(values: Sequence[float], rising: bool) -> int:
    """How many of the last epochs moved in one direction without a break."""
    run = 0
    for earlier, later in zip(reversed(values[:-1]), reversed(values[1:]), strict=True):
        if (later > earlier) if rising else (later < earlier):
            run += 1
        else:
            break
    return run


def diagnose(
    history: Sequence[dict],
    *,
    rising_epochs: int = 3,
    gap_points: float = 5.0,
    low_accuracy: float = 0.9,
    improving_points: float = 0.5,
) -> Diagnosis:
    """A verdict on the training curves, with the evidence in numbers.

    Args:
      history: per-epoch records with ``train_loss``, ``val_loss``,
        ``train_accuracy``, ``val_accuracy`` (accuracies as fractions); other keys
        and non-epoch records (``"event"`` lines) are ignored.
      rising_epochs: consecutive epochs of rising validation loss that mean overfitting.
      gap_points: train minus validation accuracy, in percentage points, that means
        overfitting.
      low_accuracy: training and validation accuracy both below this is underfitting.
      improving_points: last-epoch rise of validation accuracy (points) that counts as
        still improving.

    Returns:
      A :class:`Diagnosis`.

    Examples:
      >>> h = [dict(train_loss=l, val_loss=v, train_accuracy=a, val_accuracy=b)
      ...      for l, v, a, b in [(1.0, 0.9, .70, .70), (.5, .6, .85, .82), (.3, .62, .92, .85),
      ...                         (.2, .65, .95, .86), (.1, .70, .98, .86)]]
      >>> d = diagnose(h)
      >>> d.verdict
      'overfitting'
      >>> for part in d.evidence.split(" while "):
      ...     print(part)
      validation loss rising for 3 epochs (0.600 -> 0.700)
      training loss falls (0.500 -> 0.100); gap 12.0 points
    """
    epochs = [r for r in history if "event" not in r and "train_loss" in r and "val_loss" in r]
    if not epochs:
        return Diagnosis("no data", "no epoch finished with both training and validation metrics")
    last = epochs[-1]
    for key in ("train_loss", "val_loss"):
        if not math.isfinite(float(last[key])):
            return Diagnosis("diverged", f"{key} is {last[key]} at epoch {last.get('epoch')}")
    train_loss = [float(r["train_loss"]) for r in epochs]
    val_loss = [float(r["val_loss"]) for r in epochs]
    train_acc = [float(r["train_accuracy"]) for r in epochs]
    val_acc = [float(r["val_accuracy"]) for r in epochs]
    gap = 100.0 * (train_acc[-1] - val_acc[-1])
    accuracies = f"train {100 * train_acc[-1]:.1f} %, validation {100 * val_acc[-1]:.1f} %"

    val_rising = _trend_run(val_loss, rising=True)
    if val_rising >= rising_epochs:
        start = len(epochs) - 1 - val_rising
        if train_loss[-1] < train_loss[start]:
            return Diagnosis(
                "overfitting",
                f"validation loss rising for {val_rising} epochs ({val_loss[start]:.3f} -> "
                f"{val_loss[-1]:.3f}) while training loss falls ({train_loss[start]:.3f} -> "
                f"{train_loss[-1]:.3f}); gap {gap:.1f} points",
            )
    if gap > gap_points:
        best = min(range(len(val_loss)), key=val_loss.__getitem__)
        return Diagnosis(
            "overfitting",
            f"training accuracy exceeds validation by {gap:.1f} points ({accuracies}); "
            f"validation loss was lowest at epoch {epochs[best].get('epoch', best + 1)}: "
            "more data, augmentation, dropout or weight decay would help",
        )
    rise = 100.0 * (val_acc[-1] - val_acc[-2]) if len(epochs) > 1 else float("inf")
    if max(train_acc[-1], val_acc[-1]) < low_accuracy:
        if len(epochs) > 1 and rise < improving_points:
            return Diagnosis(
                "underfitting",
                f"training accuracy low and flat ({accuracies}; validation "
                f"{rise:+.1f} points in the last epoch): use a bigger model or another "
                "learning rate",
            )
        trend = "" if len(epochs) == 1 else f", validation {rise:+.1f} points in the last epoch"
        return Diagnosis(
            "underfitting",
            f"both accuracies low and still rising ({accuracies}{trend}): train longer",
        )
    if len(epochs) > 1 and rise >= improving_points:
        return Diagnosis(
            "still improving",
            f"validation accuracy rose {rise:.1f} points in the last epoch ({accuracies}, "
            f"gap {gap:.1f} points): more epochs will probably help",
        )
    return Diagnosis(
        "good fit",
        f"{accuracies}, gap {gap:.1f} points; validation loss {val_loss[-1]:.3f} "
        f"(best {min(val_loss):.3f})",
    )
