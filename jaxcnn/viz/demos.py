"""Teaching pictures on the shared grid helper: a kernel before/after, augmentation previews."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from matplotlib.figure import Figure

from jaxcnn import kernels
from jaxcnn.viz._figures import CELL_PX, finish, image_grid

DEMO_CELL_PX = 320
# Kernel values are written into the kernel's cell only while they stay readable.
MAX_ANNOTATED_KERNEL = 7


def plot_kernel_demo(
    image,
    kernel,
    *,
    stride: int = 1,
    padding="SAME",
    channels: str = "separate",
    kernel_name: str | None = None,
    cell_px: int = DEMO_CELL_PX,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Before | kernel | after: what one kernel does to one image.

    The output is ``jaxcnn.kernels.convolve(image, kernel, ...)`` (cross-correlation,
    as in a conv layer), shown scaled to its own min..max.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` image (uint8 or float).
        kernel: a name from ``jaxcnn.kernels.names()`` or a 2-D array.
        stride: passed to ``convolve``.
        padding: passed to ``convolve``.
        channels: passed to ``convolve`` (``"separate"`` or ``"sum"``).
        kernel_name: label for the kernel; default its name or "custom".
        cell_px: side of each of the three cells.
        path: if given, the PNG is written there.

    Returns:
        The figure: three cells, the middle one with the kernel's numbers.

    Examples:
        >>> figure = plot_kernel_demo(np.eye(8, dtype=np.float32), "sharpen", cell_px=100)
        >>> [axes.get_title() for axes in figure.axes][1]
        'kernel sharpen 3x3'
    """
    label = kernel_name or (kernel if isinstance(kernel, str) else "custom")
    weights = kernels.get(kernel) if isinstance(kernel, str) else kernels.custom(kernel)
    if weights.ndim != 2:
        raise ValueError(f"plot_kernel_demo shows 2-D kernels, got shape {weights.shape}")
    result = np.asarray(
        kernels.convolve(image, weights, stride=stride, padding=padding, channels=channels)
    )
    before = np.asarray(image)
    figure = image_grid(
        [before, weights, result],
        titles=[
            "before " + "x".join(map(str, before.shape)),
            f"kernel {label} {weights.shape[0]}x{weights.shape[1]}",
            "after " + "x".join(map(str, result.shape)) + f" (stride {stride}, {padding})",
        ],
        num_cols=3,
        cell_px=cell_px,
        title=f"{label}: cross-correlation, as in a conv layer",
    )
    kernel_axes = figure.axes[1]
    if max(weights.shape) <= MAX_ANNOTATED_KERNEL:
        # The cell is grey-scaled min..max: light text on the dark half.
        middle = 0.5 * (float(weights.min()) + float(weights.max()))
        for (row, col), value in np.ndenumerate(weights):
            color = "white" if value < middle else "black"
            size = max(6, 14 - weights.shape[0])
            kernel_axes.text(
                col, row, f"{value:.3g}", ha="center", va="center", fontsize=size, color=color
            )
    finish(figure, path)
    return figure


def plot_augmentation_preview(
    images,
    spec: Mapping,
    *,
    num_variants: int = 7,
    seed: int = 0,
    cell_px: int = CELL_PX,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Each image next to ``num_variants`` random augmentations of it.

    Uses ``jaxcnn.data.augment.build(spec)``, i.e. exactly the on-device ops
    training applies, each variant drawn with its own key from ``seed``.

    Args:
        images: ``(N, H, W, C)`` uint8 images (a handful: one row each).
        spec: augmentation mapping, e.g. ``{"crop_padding": 4, "flip": True}``.
        num_variants: augmented copies per image.
        seed: seed of the keys.
        cell_px: side of a cell.
        path: if given, the PNG is written there.

    Returns:
        The figure (``image_grid``: one row per image, original first).
    """
    import jax
    import jax.numpy as jnp

    from jaxcnn.data import augment

    pixels = np.asarray(images)
    if pixels.ndim != 4 or pixels.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W, C), got {pixels.dtype} {pixels.shape}")
    if not isinstance(num_variants, int) or num_variants < 1:
        raise ValueError(f"num_variants must be a positive int, got {num_variants!r}")
    augmenter = augment.build(spec, seed=seed)
    transform = jax.jit(augmenter)  # compiled once, run once per variant
    floats = jnp.asarray(pixels, jnp.float32) / 255.0
    keys = jax.random.split(jax.random.key(seed), num_variants)
    # Alternating flips depend on the image and the epoch: variant k shows epoch k - 1.
    extra = (
        (lambda k: {"example_ids": jnp.arange(pixels.shape[0]), "epoch": k})
        if augmenter.needs_example_ids
        else (lambda k: {})
    )
    variants = [np.asarray(transform(key, floats, **extra(k))) for k, key in enumerate(keys)]
    cells, titles = [], []
    for index in range(pixels.shape[0]):
        cells.append(pixels[index])
        titles.append("original")
        for number, batch in enumerate(variants, start=1):
            cells.append(np.clip(batch[index], 0.0, 1.0))
            titles.append(f"variant {number}")
    active = {key: value for key, value in dict(spec).items() if value}
    return image_grid(
        cells,
        titles=titles,
        num_cols=num_variants + 1,
        title=f"augmentation {active or 'none'} (seed {seed})",
        normalize="none",
        cell_px=cell_px,
        path=path,
    )
