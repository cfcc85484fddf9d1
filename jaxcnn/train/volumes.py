"""Small 3-D volumes made from 2-D digit images, for the 3-D CNN example.

A volume of depth ``D`` stacks ``D`` copies of one image, slice ``d`` rotated by
``start + d * twist`` degrees about the image centre: a digit "twisted" through
depth, like a corkscrew. ``start`` is random per example (seeded, within
``±max_start`` degrees: unlimited start angles would make a 6 and a 9 the same
volume), so the 3-D net must recognise the digit from its shape through the stack.
Real data (the digit images are real), made 3-D in a documented, reproducible way;
no file is needed.
"""

from __future__ import annotations

import numpy as np


def rotate_nearest(images: np.ndarray, degrees: np.ndarray) -> np.ndarray:
    """Rotate each ``(H, W, C)`` image about its centre (nearest neighbour, zero fill).

    Args:
      images: ``(N, H, W, C)`` uint8.
      degrees: ``(N,)`` counter-clockwise angles.

    Returns:
      ``(N, H, W, C)`` uint8.

    Examples:
      >>> x = np.zeros((1, 3, 3, 1), np.uint8); x[0, 0, 1, 0] = 9   # top middle
      >>> rotate_nearest(x, np.array([90.0]))[0, :, :, 0]           # -> left middle
      array([[0, 0, 0],
             [9, 0, 0],
             [0, 0, 0]], dtype=uint8)
    """
    n, height, width, _ = images.shape
    radians = np.deg2rad(np.asarray(degrees, np.float64))[:, None, None]
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    y = rows - (height - 1) / 2.0
    x = cols - (width - 1) / 2.0
    # Inverse mapping: where in the source does each output pixel come from?
    cos, sin = np.cos(radians), np.sin(radians)
    source_x = cos * x - sin * y + (width - 1) / 2.0
    source_y = sin * x + cos * y + (height - 1) / 2.0
    source_col = np.rint(source_x).astype(np.int64)
    source_row = np.rint(source_y).astype(np.int64)
    inside = (source_col >= 0) & (source_col < width) & (source_row >= 0) & (source_row < height)
    batch = np.broadcast_to(np.arange(n)[:, None, None], inside.shape)
    out = images[batch, np.clip(source_row, 0, height - 1), np.clip(source_col, 0, width - 1)]
    return np.where(inside[..., None], out, 0).astype(np.uint8)


def twisted_volumes(
    images: np.ndarray, depth: int, twist_degrees: float, seed: int, max_start: float = 30.0
) -> np.ndarray:
    """``(N, H, W, C)`` images -> ``(N, depth, H, W, C)`` twisted stacks.

    Args:
      images: uint8 images.
      depth: slices per volume (>= 1).
      twist_degrees: rotation between consecutive slices.
      seed: seeds each volume's random starting angle.
      max_start: starting angles are uniform in ``[-max_start, max_start]`` degrees.

    Returns:
      uint8 volumes.

    Examples:
      >>> twisted_volumes(np.zeros((2, 8, 8, 1), np.uint8), 4, 15.0, seed=0).shape
      (2, 4, 8, 8, 1)
    """
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"volume depth must be a positive int; got {depth!r}")
    start = np.random.default_rng(seed).uniform(-max_start, max_start, size=len(images))
    slices = [rotate_nearest(images, start + d * twist_degrees) for d in range(depth)]
    return np.stack(slices, axis=1)
