"""Tell over- from underfitting by reading the train and validation curves.

The rules are the ones a teacher applies by eye, written down with thresholds a
caller can change:

* **diverged** – a loss or accuracy is NaN/Inf, in any epoch.
* **unstable** – validation accuracy fell by ``drop_points`` or more in the last
  epoch, or training loss has been rising for ``rising_epochs`` epochs: the
  optimisation, not the model's capacity, is the problem (learning rate too high).
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


def _check_arguments(rising_epochs, gap_points, low_accuracy, improving_points, drop_points):
    if isinstance(rising_epochs, bool) or not isinstance(rising_epochs, int) or rising_epochs < 1:
        raise ValueError(f"rising_epochs must be an int >= 1; got {rising_epochs!r}")
    for name, value in (
        ("gap_points", gap_points),
        ("improving_points", improving_points),
        ("drop_points", drop_points),
    ):
        if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a number of percentage points >= 0; got {value!r}")
    if not isinstance(low_accuracy, int | float) or not 0 < low_accuracy <= 1:
        raise ValueError(f"low_accuracy must be a fraction in (0, 1]; got {low_accuracy!r}")


def _curves(epochs: Sequence[dict]) -> dict[str, list[float]]:
    curves = {}
    for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
        missing = [r.get("epoch", i + 1) for i, r in enumerate(epochs) if key not in r]
        if missing:
            raise ValueError(f"history records of epochs {missing} have no {key!r}")
        curves[key] = [float(r[key]) for r in epochs]
    for key in ("train_accuracy", "val_accuracy"):
        outside = [v for v in curves[key] if math.isfinite(v) and not 0 <= v <= 1]
        if outside:
            raise ValueError(f"{key} must be fractions in [0, 1]; got {outside[0]!r}")
    return curves


def diagnose(
    history: Sequence[dict],
    *,
    rising_epochs: int = 3,
    gap_points: float = 5.0,
    low_accuracy: float = 0.9,
    improving_points: float = 0.5,
    drop_points: float = 5.0,
) -> Diagnosis:
    """A verdict on the training curves, with the evidence in numbers.

    Args:
      history: per-epoch records with ``train_loss``, ``val_loss``,
        ``train_accuracy``, ``val_accuracy`` (accuracies as fractions); other keys
        and non-epoch records (``"event"`` lines) are ignored.
      rising_epochs: consecutive epochs of rising validation loss that mean overfitting
        (and of rising training loss that mean an unstable run).
      gap_points: train minus validation accuracy, in percentage points, that means
        overfitting.
      low_accuracy: training and validation accuracy both below this is underfitting.
      improving_points: last-epoch rise of validation accuracy (points) that counts as
        still improving.
      drop_points: last-epoch fall of validation accuracy (points) that means unstable.

    Returns:
      A :class:`Diagnosis`.

    Raises:
      ValueError: a threshold out of range, a record without one of the four curves,
        or an accuracy outside [0, 1] (percentages instead of fractions).

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
    _check_arguments(rising_epochs, gap_points, low_accuracy, improving_points, drop_points)
    epochs = [r for r in history if "event" not in r and "train_loss" in r and "val_loss" in r]
    if not epochs:
        return Diagnosis("no data", "no epoch finished with both training and validation metrics")
    curves = _curves(epochs)
    for index, record in enumerate(epochs):  # a NaN epoch poisons what follows it
        for key, values in curves.items():
            if not math.isfinite(values[index]):
                epoch = record.get("epoch", index + 1)
                return Diagnosis("diverged", f"{key} is {values[index]} at epoch {epoch}")
    train_loss, val_loss = curves["train_loss"], curves["val_loss"]
    train_acc, val_acc = curves["train_accuracy"], curves["val_accuracy"]
    gap = 100.0 * (train_acc[-1] - val_acc[-1])
    accuracies = f"train {100 * train_acc[-1]:.1f} %, validation {100 * val_acc[-1]:.1f} %"
    rise = 100.0 * (val_acc[-1] - val_acc[-2]) if len(epochs) > 1 else None

    if rise is not None and -rise >= drop_points:
        return Diagnosis(
            "unstable",
            f"validation accuracy fell {-rise:.2f} points in the last epoch "
            f"({100 * val_acc[-2]:.1f} % -> {100 * val_acc[-1]:.1f} %; validation loss "
            f"{val_loss[-2]:.3f} -> {val_loss[-1]:.3f}): lower the learning rate, and keep "
            "the best checkpoint",
        )
    train_rising = _trend_run(train_loss, rising=True)
    if train_rising >= rising_epochs:
        start = len(epochs) - 1 - train_rising
        return Diagnosis(
            "unstable",
            f"training loss rising for {train_rising} epochs ({train_loss[start]:.3f} -> "
            f"{train_loss[-1]:.3f}; {accuracies}): lower the learning rate",
        )
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
    if max(train_acc[-1], val_acc[-1]) < low_accuracy:
        if rise is None:
            return Diagnosis(
                "underfitting",
                f"both accuracies low after one epoch ({accuracies}): train longer",
            )
        if rise < improving_points:
            return Diagnosis(
                "underfitting",
                f"both accuracies low and validation flat ({accuracies}; validation "
                f"{rise:+.2f} points in the last epoch, under {improving_points:g}): use a "
                "bigger model or another learning rate",
            )
        return Diagnosis(
            "underfitting",
            f"both accuracies low and still rising ({accuracies}, validation {rise:+.2f} "
            "points in the last epoch): train longer",
        )
    if rise is not None and rise >= improving_points:
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
