"""Classic image kernels and a plain ``convolve`` for grayscale and RGB images.

The kernels are the small hand-made filters a CNN learns to rediscover in its
first layer: edge detectors, Sobel and Prewitt gradients, the Laplacian,
sharpen, blurs, emboss, outline. ``convolve`` applies one of them (or any
custom array) exactly as a convolution layer would:

* it is **cross-correlation**, as in CNNs (``nn.Conv``, ``lax.conv``): the
  kernel is *not* flipped, so ``convolve(image, k)`` equals
  ``scipy.signal.correlate2d(image, k)`` -- not ``convolve2d``;
* padding has the meaning of ``jaxcnn.shapes`` (``"SAME"``, ``"VALID"``, an
  int, explicit ``(lo, hi)`` pairs, ...), plus ``"REFLECT"`` and
  ``"CIRCULAR"``, which fill the border with mirrored or wrapped pixels
  instead of zeros (as Flax's ``nn.Conv`` does);
* it runs on ``jax.lax.conv_general_dilated`` -- the very op behind
  ``flax.linen.Conv`` -- at ``Precision.HIGHEST`` so that the demo shows what
  a conv layer computes, bit for bit the same arithmetic, on any backend.

Examples:
    >>> import numpy as np
    >>> from jaxcnn import kernels
    >>> image = np.arange(16, dtype=np.float32).reshape(4, 4)
    >>> np.asarray(kernels.convolve(image, kernels.get("sobel_x"), padding="VALID"))
    array([[8., 8.],
           [8., 8.]], dtype=float32)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import MappingProxyType
from typing import Literal

import numpy as np

from jaxcnn import shapes

__all__ = [
    "CHANNEL_MODES",
    "KERNELS",
    "FILL_MODES",
    "convolve",
    "custom",
    "describe",
    "gaussian",
    "get",
    "names",
]

# Modes for images with several channels: "separate" filters every channel on
# its own (a depthwise conv), "sum" treats the kernel as ONE filter spanning all
# channels and adds the per-channel results, as a single 3x3x3 filter of an RGB
# conv layer does.
CHANNEL_MODES = ("separate", "sum")

# Padding names whose border is not filled with zeros, mapped to np.pad modes.
# Their amount is Flax's: ((span - 1) // 2, span // 2) per axis, whatever the stride.
FILL_MODES = MappingProxyType({"REFLECT": "reflect", "CIRCULAR": "wrap"})


def _kernel(rows: Sequence[Sequence[float]], scale: float = 1.0) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float32) * np.float32(scale)
    array.setflags(write=False)  # the registry is shared: nobody may edit a kernel in place
    return array


_BINOMIAL_5 = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1])

# name -> (kernel, what it does). Signs are for cross-correlation: "sobel_x" is
# positive where intensity rises from left to right.
_REGISTRY: dict[str, tuple[np.ndarray, str]] = {
    "identity": (_kernel([[0, 0, 0], [0, 1, 0], [0, 0, 0]]), "returns the image unchanged"),
    "edge_diagonal": (
        _kernel([[1, 0, -1], [0, 0, 0], [-1, 0, 1]]),
        "diagonal edges (the classic first 'edge detection' kernel)",
    ),
    "edge_horizontal": (
        _kernel([[-1, -1, -1], [2, 2, 2], [-1, -1, -1]]),
        "thin horizontal lines",
    ),
    "edge_vertical": (
        _kernel([[-1, 2, -1], [-1, 2, -1], [-1, 2, -1]]),
        "thin vertical lines",
    ),
    "edge_4": (
        _kernel([[0, -1, 0], [-1, 4, -1], [0, -1, 0]]),
        "edges in all directions, 4-neighbour (negated Laplacian)",
    ),
    "edge_8": (
        _kernel([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]]),
        "edges in all directions, 8-neighbour",
    ),
    "sobel_x": (
        _kernel([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]),
        "horizontal gradient (vertical edges), smoothed across rows",
    ),
    "sobel_y": (
        _kernel([[-1, -2, -1], [0, 0, 0], [1, 2, 1]]),
        "vertical gradient (horizontal edges), smoothed across columns",
    ),
    "prewitt_x": (
        _kernel([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]]),
        "horizontal gradient with a plain average across rows",
    ),
    "prewitt_y": (
        _kernel([[-1, -1, -1], [0, 0, 0], [1, 1, 1]]),
        "vertical gradient with a plain average across columns",
    ),
    "laplacian": (
        _kernel([[0, 1, 0], [1, -4, 1], [0, 1, 0]]),
        "second derivative: zero on flat areas and ramps, strong on edges",
    ),
    "sharpen": (
        _kernel([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
        "identity plus the 4-neighbour edges",
    ),
    "box_blur": (_kernel(np.ones((3, 3)), 1 / 9), "mean of the 3x3 neighbourhood"),
    "gaussian_blur_3x3": (
        _kernel([[1, 2, 1], [2, 4, 2], [1, 2, 1]], 1 / 16),
        "binomial approximation of a Gaussian, 3x3",
    ),
    "gaussian_blur_5x5": (
        _kernel(_BINOMIAL_5, 1 / 256),
        "binomial approximation of a Gaussian, 5x5",
    ),
    "emboss": (
        _kernel([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]),
        "relief lit from the bottom right",
    ),
    "outline": (
        _kernel([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]]),
        "bright outlines on black: large differences to all 8 neighbours",
    ),
}

#: Read-only view ``name -> kernel`` (float32 arrays) of every named kernel.
KERNELS = MappingProxyType({name: kernel for name, (kernel, _) in _REGISTRY.items()})


def names() -> tuple[str, ...]:
    """Names of the built-in kernels, in a stable order.

    Examples:
        >>> "sobel_x" in names()
        True
    """
    return tuple(_REGISTRY)


def get(name: str) -> np.ndarray:
    """A built-in kernel by name, as a fresh (writable) float32 array.

    Args:
        name: one of ``names()``, e.g. ``"sobel_x"`` or ``"gaussian_blur_5x5"``.

    Returns:
        The kernel, shape ``(kh, kw)``.

    Examples:
        >>> get("box_blur").sum().round(6)
        np.float32(1.0)
    """
    if name not in _REGISTRY:
        raise ValueError(f"kernel name {name!r} is unknown; valid names: {', '.join(_REGISTRY)}")
    return _REGISTRY[name][0].copy()


def describe(name: str) -> str:
    """One line saying what the built-in kernel ``name`` does.

    Examples:
        >>> describe("identity")
        'returns the image unchanged'
    """
    get(name)  # validates the name with the same message
    return _REGISTRY[name][1]


def custom(values: Sequence | np.ndarray) -> np.ndarray:
    """Validate a user-made kernel and return it as float32.

    Args:
        values: nested numbers, 2-D ``(kh, kw)`` (applied to every channel, or
            tiled over them with ``channels="sum"``) or 3-D ``(kh, kw, C)``
            (one slice per image channel).

    Returns:
        The kernel as a float32 array of the same shape.

    Examples:
        >>> custom([[0, 1], [1, 0]]).shape
        (2, 2)
    """
    try:
        array = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"kernel must be nested numbers, got {values!r}: {error}") from None
    if array.ndim not in (2, 3) or 0 in array.shape:
        raise ValueError(
            f"kernel must be 2-D (kh, kw) or 3-D (kh, kw, channels) with no empty axis, "
            f"got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"kernel must be finite, got {array.tolist()}")
    return array


def gaussian(size: int, sigma: float) -> np.ndarray:
    """A normalised ``size x size`` Gaussian kernel (sums to 1).

    Args:
        size: odd side length >= 1.
        sigma: standard deviation in pixels, > 0.

    Returns:
        float32 array ``(size, size)``.

    Examples:
        >>> k = gaussian(3, 1.0)
        >>> bool(k[1, 1] > k[0, 0]), round(float(k.sum()), 6)
        (True, 1.0)
    """
    if not isinstance(size, (int, np.integer)) or size < 1 or size % 2 == 0:
        raise ValueError(f"size must be an odd int >= 1, got {size!r}")
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    offsets = np.arange(size) - size // 2
    profile = np.exp(-(offsets**2) / (2.0 * sigma**2))
    kernel = np.outer(profile, profile)
    return (kernel / kernel.sum()).astype(np.float32)


def _as_image(image) -> np.ndarray:
    array = np.asarray(image)
    if array.ndim not in (2, 3) or 0 in array.shape:
        raise ValueError(
            f"image must be (H, W) grayscale or (H, W, C) with no empty axis, got shape "
            f"{array.shape}"
        )
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ValueError(f"image must hold numbers, got dtype {array.dtype}")
    return array.astype(np.float32)


def _fill_border(image_hwc, pads, mode: str):
    import jax.numpy as jnp

    width = (*pads, (0, 0))
    # A border wider than the image reflects again (1234 -> ..3 2 1 2 3 4 3 2 1 2..), as
    # jnp.pad, and so flax.linen.Conv, does.
    return jnp.pad(image_hwc, width, mode=mode)


def convolve(
    image,
    kernel,
    stride: int | Sequence[int] = 1,
    padding="SAME",
    *,
    dilation: int | Sequence[int] = 1,
    channels: Literal["separate", "sum"] = "separate",
):
    """Cross-correlate an image with a kernel, exactly as a conv layer does.

    This is **cross-correlation**, the operation CNNs call convolution: the
    kernel slides over the image without being flipped, so the result equals
    ``scipy.signal.correlate2d(padded_image, kernel, mode="valid")[::s, ::s]``.

    Args:
        image: ``(H, W)`` grayscale or ``(H, W, C)`` image, any numeric dtype
            (computed in float32, values are not rescaled).
        kernel: a name from ``names()``, or an array: ``(kh, kw)``, or
            ``(kh, kw, C)`` with one slice per image channel.
        stride: int or ``(sh, sw)``, >= 1.
        padding: any form ``jaxcnn.shapes.resolve_padding`` accepts (``"SAME"``,
            ``"VALID"``, an int, ``(lo, hi)`` pairs, ...), including ``"REFLECT"``
            and ``"CIRCULAR"``, whose border holds mirrored / wrapped pixels
            instead of zeros, as in ``flax.linen.Conv``.
        dilation: int or ``(dh, dw)`` kernel dilation, >= 1.
        channels: ``"separate"`` filters each channel on its own and keeps the
            image layout (``(H, W)`` -> ``(H', W')``, ``(H, W, C)`` ->
            ``(H', W', C)``); ``"sum"`` treats the kernel as ONE filter spanning
            all channels (a 2-D kernel is tiled over them) and returns the
            single map ``(H', W')``, as one 3x3x3 filter of an RGB conv does.

    Returns:
        float32 ``jax.Array`` of the shape ``jaxcnn.shapes`` predicts.

    Examples:
        >>> import numpy as np
        >>> rgb = np.ones((5, 5, 3), np.float32)
        >>> convolve(rgb, "box_blur", padding="VALID").shape
        (3, 3, 3)
        >>> round(float(convolve(rgb, "box_blur", padding="VALID", channels="sum")[0, 0]), 5)
        3.0
    """
    import jax.numpy as jnp
    from jax import lax

    if channels not in CHANNEL_MODES:
        raise ValueError(f"channels must be one of {CHANNEL_MODES}, got {channels!r}")
    pixels = _as_image(image)
    weights = get(kernel) if isinstance(kernel, str) else custom(kernel)
    image_hwc = pixels if pixels.ndim == 3 else pixels[..., None]
    num_channels = image_hwc.shape[-1]
    if weights.ndim == 3 and weights.shape[-1] != num_channels:
        raise ValueError(
            f"kernel of shape {weights.shape} has {weights.shape[-1]} channel slices but the "
            f"image of shape {pixels.shape} has {num_channels} channel(s)"
        )
    if weights.ndim == 2:
        weights = np.repeat(weights[..., None], num_channels, axis=-1)

    # The calculator validates every argument (with its own messages) and
    # rejects an output below 1 pixel before XLA sees the shapes.
    spatial, window = image_hwc.shape[:2], weights.shape[:2]
    shapes.conv_output_shape(spatial, window, stride, padding, dilation)
    pads = shapes.resolve_padding(padding, spatial, window, stride, dilation)
    fill = FILL_MODES.get(padding.upper()) if isinstance(padding, str) else None
    strides = tuple(stride) if isinstance(stride, Sequence) else (stride, stride)
    dilations = tuple(dilation) if isinstance(dilation, Sequence) else (dilation, dilation)

    lhs = jnp.asarray(image_hwc)
    if fill:
        lhs, pads = _fill_border(lhs, pads, fill), ((0, 0), (0, 0))
    if channels == "separate":
        # HWIO with I=1 and feature_group_count=C: every channel meets its own slice.
        rhs, groups = weights[:, :, None, :], num_channels
    else:
        rhs, groups = weights[..., None], 1
    out = lax.conv_general_dilated(
        lhs[None],
        jnp.asarray(rhs),
        window_strides=strides,
        padding=tuple(tuple(int(v) for v in pair) for pair in pads),
        rhs_dilation=dilations,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
        # Default precision may use bf16/TF32 passes on accelerators; a kernel
        # demo must match the float32 reference.
        precision=lax.Precision.HIGHEST,
    )[0]
    if channels == "sum" or pixels.ndim == 2:
        return out[..., 0]
    return out
