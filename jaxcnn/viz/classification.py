"""Where a classifier goes wrong: the confusion matrix and a grid of its mistakes."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from jaxcnn.viz._figures import finish, image_grid, new_figure

CONFUSION_SIZE_PX = (620, 560)
# Counts are written into the cells only while they stay readable.
MAX_ANNOTATED_CLASSES = 20


def _labels(name: str, values) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 1 and array.size == 0:
        return array.astype(np.int64)  # np.asarray([]) is float64: no examples, no classes
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D array of ints, got {array.dtype} {array.shape}")
    return array.astype(np.int64)


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]`` of a classifier's answers.

    Args:
        labels: true class per example, ints in ``[0, num_classes)``.
        predictions: predicted class per example, same shape.
        num_classes: number of classes.

    Returns:
        int64 array ``(num_classes, num_classes)``; row ``t`` counts the examples
        of class ``t`` by what they were predicted as.

    Examples:
        >>> confusion_matrix([0, 1, 1], [0, 0, 1], 2).tolist()
        [[1, 0], [1, 1]]
    """
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    labels, predictions = _labels("labels", labels), _labels("predictions", predictions)
    if labels.shape != predictions.shape:
        raise ValueError(
            f"labels {labels.shape} and predictions {predictions.shape} must have the same shape"
        )
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{name} must lie in [0, {num_classes}), got values from {values.min()} to "
                f"{values.max()}"
            )
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes**2)
    return flat.reshape(num_classes, num_classes)


def plot_confusion_matrix(
    matrix,
    class_names: Sequence[str] | None = None,
    *,
    title: str | None = None,
    size_px: tuple[int, int] = CONFUSION_SIZE_PX,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Draw a confusion matrix, cells coloured by the fraction of their true class.

    Colouring by row fraction (recall) keeps rare classes visible; the cells
    carry the raw counts.

    Args:
        matrix: square counts ``[true, predicted]`` (see ``confusion_matrix``).
        class_names: one name per class; default ``0..K-1``.
        title: heading; default states the accuracy.
        size_px: figure size ``(width, height)`` in pixels.
        path: if given, the PNG is written there.

    Returns:
        The figure.

    Examples:
        >>> figure = plot_confusion_matrix([[5, 1], [0, 4]], ["cat", "dog"])
        >>> figure.axes[0].get_title()
        'accuracy 90.00% (9 of 10)'
    """
    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ValueError(f"matrix must be square (K, K) with K >= 1, got shape {counts.shape}")
    num_classes = counts.shape[0]
    names = [str(i) for i in range(num_classes)] if class_names is None else list(class_names)
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} names for {num_classes} classes")
    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    correct, total = int(np.trace(counts)), int(counts.sum())
    if title is None:
        accuracy = correct / total if total else 0.0
        title = f"accuracy {accuracy:.2%} ({correct} of {total})"

    figure = new_figure(size_px)
    axes = figure.add_axes((0.2, 0.2, 0.66, 0.7))
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, cax=figure.add_axes((0.88, 0.2, 0.03, 0.7)), label="fraction of row")
    ticks = np.arange(num_classes)
    font = 8 if num_classes <= 12 else 6
    axes.set_xticks(ticks, names, rotation=60, ha="right", fontsize=font)
    axes.set_yticks(ticks, names, fontsize=font)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=10)
    if num_classes <= MAX_ANNOTATED_CLASSES:
        for (row, col), count in np.ndenumerate(counts):
            color = "white" if fractions[row, col] > 0.5 else "black"
            axes.text(col, row, str(count), ha="center", va="center", fontsize=font, color=color)
    return finish(figure, path)


def misclassified_indices(labels, predictions, max_examples: int = 16, confidences=None):
    """Indices of wrong predictions, the most confident mistakes first.

    Args:
        labels: true classes ``(N,)``.
        predictions: predicted classes ``(N,)``.
        max_examples: at most this many indices.
        confidences: optional ``(N,)`` probability of the predicted class; without
            it the mistakes keep dataset order.

    Returns:
        int array of at most ``max_examples`` indices.

    Examples:
        >>> misclassified_indices([0, 1, 2], [0, 2, 1], confidences=[0.9, 0.6, 0.8]).tolist()
        [2, 1]
    """
    labels, predictions = _labels("labels", labels), _labels("predictions", predictions)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ")
    wrong = np.flatnonzero(labels != predictions)
    if confidences is not None:
        scores = np.asarray(confidences, dtype=np.float64)
        if scores.shape != labels.shape:
            raise ValueError(f"confidences {scores.shape} must match labels {labels.shape}")
        wrong = wrong[np.argsort(-scores[wrong], kind="stable")]
    return wrong[:max_examples]


def plot_misclassified(
    images,
    labels,
    predictions,
    class_names: Sequence[str] | None = None,
    *,
    confidences=None,
    max_examples: int = 16,
    num_cols: int = 8,
    path: str | os.PathLike | None = None,
) -> Figure:
    """A grid of misclassified images titled ``true`` / ``pred`` (the most confident first).

    Args:
        images: ``(N, H, W, C)`` images (uint8 shown as is, floats per image).
        labels: true classes ``(N,)``.
        predictions: predicted classes ``(N,)``.
        class_names: names for the titles; default the class numbers.
        confidences: optional probability of each prediction, shown and used to order.
        max_examples: at most this many cells.
        num_cols: cells per row.
        path: if given, the PNG is written there.

    Returns:
        The figure (``image_grid`` layout; one blank cell saying so if nothing is wrong).

    Examples:
        >>> images = np.zeros((3, 8, 8, 1), np.uint8)
        >>> len(plot_misclassified(images, [0, 1, 1], [0, 0, 1]).axes)
        1
    """
    pixels = np.asarray(images)
    if pixels.ndim != 4 or pixels.shape[0] != np.asarray(labels).shape[0]:
        raise ValueError(
            f"images must be (N, H, W, C) with N = len(labels) = {np.asarray(labels).shape[0]}, "
            f"got shape {pixels.shape}"
        )
    chosen = misclassified_indices(labels, predictions, max_examples, confidences)

    def name(index):
        return str(index) if class_names is None else str(class_names[index])

    if chosen.size == 0:
        return image_grid([None], titles=["no misclassified examples"], num_cols=1, path=path)
    titles = []
    for i in chosen:
        title = f"true: {name(labels[i])}\npred: {name(predictions[i])}"
        if confidences is not None:
            title += f" ({float(np.asarray(confidences)[i]):.0%})"
        titles.append(title)
    count = len(chosen)
    return image_grid(
        [pixels[i] for i in chosen],
        titles=titles,
        num_cols=min(num_cols, count),
        title=f"{count} misclassified"
        + (" (most confident first)" if confidences is not None else ""),
        title_colors=["tab:red"] * count,
        path=path,
    )
