"""Classify image files with a restored model, using the training preprocessing."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The top-k classes of one image, most probable first."""

    path: str
    classes: tuple[str, ...]
    probabilities: tuple[float, ...]


def load_image(path: str | Path, example_shape: Sequence[int]) -> np.ndarray:
    """Read an image file as uint8 ``example_shape`` ``(H, W, C)``: gray or RGB, resized.

    Args:
      path: any format Pillow reads.
      example_shape: the model's input ``(H, W, C)``, C 1 or 3.

    Returns:
      uint8 array of ``example_shape``.
    """
    from PIL import Image

    if len(example_shape) != 3 or example_shape[-1] not in (1, 3):
        raise ValueError(
            f"image files can only feed 2-D models with 1 or 3 channels; this model takes "
            f"inputs of shape {tuple(example_shape)}"
        )
    height, width, channels = example_shape
    path = Path(path)
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise FileNotFoundError(f"image file {path} {what}")
    with Image.open(path) as image:
        image = image.convert("L" if channels == 1 else "RGB")
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(image, np.uint8)
    return array.reshape(height, width, channels)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable).

    Examples:
      >>> softmax(np.array([[0.0, 0.0]])).tolist()
      [[0.5, 0.5]]
    """
    shifted = np.asarray(logits, np.float64) - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def predict_files(restored: Any, paths: Sequence[str | Path], top_k: int = 3) -> list[Prediction]:
    """Top-``k`` classes and probabilities for each image file.

    Args:
      restored: from ``jaxcnn.train.restore``.
      paths: image files.
      top_k: how many classes to report per image (capped at the class count).

    Returns:
      One :class:`Prediction` per path, in order.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1; got {top_k!r}")
    images = np.stack([load_image(path, restored.example_shape) for path in paths])
    probabilities = softmax(restored.predict(images))
    k = min(top_k, probabilities.shape[-1])
    predictions = []
    for path, row in zip(paths, probabilities, strict=True):
        order = np.argsort(-row, kind="stable")[:k]
        predictions.append(
            Prediction(
                path=str(path),
                classes=tuple(restored.class_names[i] for i in order),
                probabilities=tuple(float(row[i]) for i in order),
            )
        )
    return predictions
