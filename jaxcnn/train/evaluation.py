"""Evaluate a model on a whole split that lives on the device.

The split's uint8 images are placed on the mesh once; ``jaxcnn.data.eval_indices``
pads the last batch (masked), so every batch has the same shape and the eval step
compiles once. Metric sums stay on the device until the split is done.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh

from jaxcnn import data as data_lib
from jaxcnn.train import sharding as sharding_lib
from jaxcnn.train.losses import zeros_like_metrics
from jaxcnn.train.steps import gathering_eval_step, make_eval_step


@dataclasses.dataclass(frozen=True)
class PlacedSplit:
    """A split on the device(s) with its fixed-shape evaluation batches."""

    images: jax.Array
    labels: jax.Array
    indices: jax.Array
    mask: jax.Array
    num_batches: int
    num_examples: int


class Evaluator:
    """Jitted evaluation of ``model`` over placed splits.

    Args:
      model: the Linen module.
      mean, std: training-split normalisation stats.
      mesh: device mesh (the batch axis is sharded over ``"data"``).
      batch_size: evaluation batch size (divisible by the device count).
      top5: also compute top-5 accuracy.
      confusion_classes: > 0 to also accumulate a confusion matrix of that size.
      tta: test-time augmentation (``jaxcnn.train.tta.TTA_MODES``).
      tta_fill: border fill of shifted views, the training crops' ``crop_mode``.

    Examples:
      >>> # evaluator = Evaluator(model, mean, std, mesh=mesh, batch_size=500)
      >>> # sums = evaluator.evaluate(state, evaluator.place(test_images, test_labels))
    """

    def __init__(
        self,
        model: nn.Module,
        mean: Any,
        std: Any,
        *,
        mesh: Mesh,
        batch_size: int,
        top5: bool = False,
        confusion_classes: int = 0,
        tta: str = "none",
        tta_fill: str = "zeros",
    ):
        sharding_lib.check_batch_size(batch_size, mesh, "eval_batch_size")
        self.mesh = mesh
        self.batch_size = batch_size
        self._replicated = sharding_lib.replicated(mesh)
        self._zeros = zeros_like_metrics(top5)
        if confusion_classes:
            self._zeros["confusion"] = np.zeros((confusion_classes,) * 2, np.float32)
        eval_step = make_eval_step(
            model,
            mean=mean,
            std=std,
            top5=top5,
            num_classes=confusion_classes,
            tta=tta,
            tta_fill=tta_fill,
        )
        step = gathering_eval_step(eval_step, sharding_lib.batch_sharded(mesh))
        self._step = jax.jit(step, out_shardings=self._replicated, donate_argnums=1)

    def place(self, images: np.ndarray, labels: np.ndarray) -> PlacedSplit:
        """Put a split and its padded, masked batch indices on the mesh."""
        indices, mask = data_lib.eval_indices(len(labels), self.batch_size)
        rows = sharding_lib.batch_sharded(self.mesh, batch_axis=1)
        images, labels = sharding_lib.put_global((images, labels), self._replicated)
        return PlacedSplit(
            images=images,
            labels=labels,
            indices=sharding_lib.put_global(np.asarray(indices, np.int32), rows),
            mask=sharding_lib.put_global(np.asarray(mask, bool), rows),
            num_batches=int(indices.shape[0]),
            num_examples=len(labels),
        )

    def evaluate_sums(self, state: Any, split: PlacedSplit) -> dict[str, np.ndarray]:
        """Metric sums over the whole split, fetched to the host once."""
        totals = sharding_lib.put_global(self._zeros, self._replicated)
        for row in range(split.num_batches):
            totals = self._step(
                state,
                totals,
                split.images,
                split.labels,
                split.indices,
                split.mask,
                np.int32(row),
            )
        return jax.device_get(totals)


@dataclasses.dataclass(frozen=True)
class EvaluationReport:
    """Metrics and confusion matrix of a restored model on one split."""

    split: str
    metrics: dict[str, float]
    confusion: np.ndarray  # (C, C) int64, rows = true class, columns = predicted
    class_names: tuple[str, ...]
    tta: str = "none"  # the test-time augmentation it was measured with

    def format_confusion(self) -> str:
        """The confusion matrix as an aligned text table (rows true, columns predicted).

        Examples:
          >>> r = EvaluationReport("test", {}, np.array([[3, 1], [0, 4]]), ("a", "b"))
          >>> print(r.format_confusion())
          true\\pred a b
                  a 3 1
                  b 0 4
        """
        names = [str(name) for name in self.class_names]
        width = max(len(str(int(self.confusion.max()))), *(len(n) for n in names))
        label_width = max(len("true\\pred"), *(len(n) for n in names))
        lines = ["true\\pred".rjust(label_width) + "".join(f" {n:>{width}}" for n in names)]
        for name, row in zip(names, self.confusion, strict=True):
            lines.append(name.rjust(label_width) + "".join(f" {int(v):>{width}}" for v in row))
        return "\n".join(lines)


def evaluate_restored(
    restored: Any, split: str = "test", batch_size: int = 0, tta: str | None = None
) -> EvaluationReport:
    """Evaluate a :class:`~jaxcnn.train.restore.Restored` model on a split of its dataset.

    Args:
      restored: from ``jaxcnn.train.restore(workdir, which)``.
      split: ``"test"``, ``"validation"`` (the held-out part, or test when none) or ``"train"``.
      batch_size: evaluation batch size; 0 uses the config's ``eval_batch_size``.
      tta: test-time augmentation (``jaxcnn.train.tta.TTA_MODES``); ``None`` uses the
        run's ``config.eval_tta``, as its validation and test figures did.

    Returns:
      An :class:`EvaluationReport` (loss, accuracy, top-5 and the confusion matrix).
    """
    from jaxcnn.train.components import load_training_data
    from jaxcnn.train.losses import finalize_metrics

    if split not in ("test", "validation", "train"):
        raise ValueError(f"split must be 'test', 'validation' or 'train'; got {split!r}")
    training_data = load_training_data(restored.config)
    arrays = getattr(training_data, split)
    tta = tta or str(restored.config.get("eval_tta", "none"))
    mesh = sharding_lib.make_mesh()
    batch_size = batch_size or int(restored.config.eval_batch_size)
    batch_size = -(-batch_size // mesh.size) * mesh.size  # a multiple of the device count
    num_classes = len(restored.class_names)
    evaluator = Evaluator(
        restored.model,
        restored.norm_mean,
        restored.norm_std,
        mesh=mesh,
        batch_size=batch_size,
        top5=num_classes > 5,
        confusion_classes=num_classes,
        tta=tta,
        tta_fill=restored.tta_fill,
    )
    variables = sharding_lib.put_global(restored.variables, sharding_lib.replicated(mesh))
    sums = evaluator.evaluate_sums(variables, evaluator.place(arrays.images, arrays.labels))
    confusion = np.rint(np.asarray(sums.pop("confusion"))).astype(np.int64)
    return EvaluationReport(
        split=split,
        metrics=finalize_metrics(sums, f"{split}_"),
        confusion=confusion,
        class_names=restored.class_names,
        tta=tta,
    )
