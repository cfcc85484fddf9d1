"""Figure plumbing shared by every view: exact pixel sizes, PNG output, image grids.

Figures are built with ``matplotlib.figure.Figure`` directly, never ``pyplot``:
no global figure registry (nothing leaks in long runs) and no display backend
(PNG output goes through Agg), so it works on a headless server.

Sizes are given in pixels and figures are saved without ``bbox_inches="tight"``,
so a figure of ``size_px=(w, h)`` is exactly a ``w x h`` PNG.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxcnn.files import write_atomic

DPI = 100
CELL_PX = 128  # side of one image cell in a grid
TITLE_PX = 30  # band above a cell for its title (two short lines)
HEADER_PX = 36  # band above the whole grid for its title
ROW_LABEL_PX = 110  # band left of a row for its label
NORMALIZE_MODES = ("auto", "per_image", "symmetric", "none")


def new_figure(size_px: tuple[int, int], dpi: int = DPI) -> Figure:
    """A blank Agg-backed figure of exactly ``size_px = (width, height)`` pixels.

    Examples:
        >>> new_figure((300, 200)).get_size_inches().tolist()
        [3.0, 2.0]
    """
    width, height = size_px
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise ValueError(f"size_px must be two positive ints (width, height), got {size_px!r}")
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure: Figure) -> bytes:
    """The figure rendered as PNG bytes (for embedding in HTML).

    Examples:
        >>> png_bytes(new_figure((10, 10)))[:4]
        b'\\x89PNG'
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi)
    return buffer.getvalue()


def save_png(figure: Figure, path: str | os.PathLike) -> Path:
    """Write ``figure`` to ``path`` as PNG, atomically (temp file + rename).

    A crash mid-write never leaves a truncated PNG under the final name.

    Args:
        figure: the figure to write.
        path: destination; parent folders are created.

    Returns:
        The destination as a ``Path``.

    Examples:
        >>> import tempfile
        >>> out = save_png(new_figure((20, 10)), Path(tempfile.mkdtemp()) / "a.png")
        >>> out.stat().st_size > 0
        True
    """
    return save_png_bytes(png_bytes(figure), path)


def save_png_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write already-encoded PNG ``data`` to ``path`` atomically; returns the path.

    Examples:
        >>> import tempfile
        >>> out = save_png_bytes(png_bytes(new_figure((8, 8))), Path(tempfile.mkdtemp()) / "b.png")
        >>> out.read_bytes()[:4]
        b'\\x89PNG'
    """
    if Path(path).suffix.lower() != ".png":
        # PNG bytes under another name (a.jpg) would mislead every viewer and tool.
        raise ValueError(f"path={str(path)!r}: figures are written as PNG; give a .png name")
    return write_atomic(path, data)


def finish(figure: Figure, path: str | os.PathLike | None) -> Figure:
    """Save ``figure`` when ``path`` is given; return the figure either way."""
    if path is not None:
        save_png(figure, path)
    return figure


def to_display(image, normalize: str = "auto") -> tuple[np.ndarray, dict]:
    """Turn one image into something ``imshow`` shows faithfully.

    Args:
        image: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``; uint8 or float.
        normalize: ``"auto"`` (uint8 as is, floats per image), ``"per_image"``
            (min..max to 0..1), ``"symmetric"`` (-m..m to 0..1, zero is mid-grey:
            for signed maps such as kernel outputs and filters) or ``"none"``.

    Returns:
        ``(array, imshow_kwargs)``: 2-D arrays get a grey colormap and fixed limits.

    Examples:
        >>> array, kwargs = to_display(np.array([[0.0, 2.0]]), "per_image")
        >>> array.tolist(), kwargs["cmap"]
        ([[0.0, 1.0]], 'gray')
    """
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ValueError(f"image must be (H, W), (H, W, 1) or (H, W, 3), got shape {array.shape}")
    if normalize == "auto":
        normalize = "none" if array.dtype == np.uint8 else "per_image"
    if normalize != "none":
        array = array.astype(np.float32)
        if normalize == "per_image":
            low, high = float(array.min()), float(array.max())
            array = (array - low) / (high - low) if high > low else np.zeros_like(array)
        else:
            bound = float(np.abs(array).max())
            array = 0.5 + 0.5 * array / bound if bound > 0 else np.full_like(array, 0.5)
    if array.ndim == 3:
        return array, {}
    vmax = 255 if array.dtype == np.uint8 else 1.0
    return array, {"cmap": "gray", "vmin": 0, "vmax": vmax}


def grid_size_px(
    num_rows: int,
    num_cols: int,
    *,
    cell_px: int = CELL_PX,
    titles: bool = True,
    header: bool = False,
    row_labels: bool = False,
) -> tuple[int, int]:
    """Pixel size of an ``image_grid`` figure (what its PNG will measure).

    Examples:
        >>> grid_size_px(2, 3, cell_px=100, titles=False)
        (300, 200)
    """
    width = num_cols * cell_px + (ROW_LABEL_PX if row_labels else 0)
    height = num_rows * (cell_px + (TITLE_PX if titles else 0)) + (HEADER_PX if header else 0)
    return width, height


def image_grid(
    images: Sequence,
    *,
    titles: Sequence[str] | None = None,
    num_cols: int | None = None,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    normalize: str = "auto",
    cell_px: int = CELL_PX,
    title_colors: Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Lay images out in a grid: the one helper behind every picture-of-pictures.

    The figure measures ``grid_size_px(rows, cols, ...)`` pixels exactly. Empty
    cells (``None`` entries, or the tail of the last row) stay blank.

    Args:
        images: sequence of images (see ``to_display``) or ``None`` for a gap.
        titles: one title per image (``\\n`` allowed), or ``None``.
        num_cols: cells per row; default ``ceil(sqrt(n))``.
        row_labels: one label per row, drawn left of it, or ``None``.
        title: heading above the grid, or ``None``.
        normalize: how each image is scaled, see ``to_display``.
        cell_px: side of a cell in pixels.
        title_colors: one matplotlib colour per title (e.g. red for mistakes).
        path: if given, the PNG is written there.

    Returns:
        The figure; its axes are ``figure.axes`` in image order (gaps included).

    Examples:
        >>> figure = image_grid([np.zeros((4, 4))] * 3, num_cols=2, titles=["a", "b", "c"])
        >>> tuple(int(v) for v in figure.get_size_inches() * figure.dpi)
        (256, 316)
    """
    images = list(images)
    if not images:
        raise ValueError("images must hold at least one image, got an empty sequence")
    num_cols = num_cols or math.ceil(math.sqrt(len(images)))
    if not isinstance(num_cols, int) or num_cols < 1:
        raise ValueError(f"num_cols must be a positive int, got {num_cols!r}")
    num_rows = math.ceil(len(images) / num_cols)
    for name, values, expected in (
        ("titles", titles, len(images)),
        ("title_colors", title_colors, len(images)),
        ("row_labels", row_labels, num_rows),
    ):
        if values is not None and len(values) != expected:
            raise ValueError(f"{name} must have {expected} entries, got {len(values)}")
    width, height = grid_size_px(
        num_rows,
        num_cols,
        cell_px=cell_px,
        titles=titles is not None,
        header=title is not None,
        row_labels=row_labels is not None,
    )
    figure = new_figure((width, height))
    left_px = ROW_LABEL_PX if row_labels is not None else 0
    top_px = HEADER_PX if title is not None else 0
    row_px = cell_px + (TITLE_PX if titles is not None else 0)
    pad = 2  # keep neighbouring images visually apart
    for index, image in enumerate(images):
        row, col = divmod(index, num_cols)
        x0 = left_px + col * cell_px + pad
        y1 = top_px + row * row_px + (row_px - cell_px) + pad  # image top, from figure top
        side = cell_px - 2 * pad
        # add_axes wants (left, bottom, width, height) as fractions, bottom-up.
        axes = figure.add_axes((x0 / width, 1 - (y1 + side) / height, side / width, side / height))
        axes.set_axis_off()
        if image is not None:
            array, kwargs = to_display(image, normalize)
            axes.imshow(array, interpolation="nearest", **kwargs)
        if titles is not None:
            color = title_colors[index] if title_colors is not None else "black"
            axes.set_title(titles[index], fontsize=8, color=color, pad=2)
    if row_labels is not None:
        for row, label in enumerate(row_labels):
            y_centre = top_px + row * row_px + (row_px - cell_px) + cell_px / 2
            figure.text(4 / width, 1 - y_centre / height, label, fontsize=8, va="center")
    if title is not None:
        heading_y = 1 - (HEADER_PX / 2) / height
        # ~0.83 px per point per character at 100 dpi: shrink a long heading to fit.
        size = max(6.0, min(11.0, 0.95 * width / (0.83 * max(len(title), 1))))
        figure.text(0.5, heading_y, title, fontsize=size, ha="center", va="center")
    return finish(figure, path)
