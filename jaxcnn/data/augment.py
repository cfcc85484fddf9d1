"""On-device augmentation: pure JAX, one example at a time, random only by explicit keys.

Every op takes ``(key, image, strength)`` with a float image ``(H, W, C)`` in
[0, 1] (before normalisation) and returns an image of the same shape and dtype;
at zero strength it returns its input unchanged. :func:`build` composes them
from a config mapping into ``fn(rng, images (B, H, W, C))`` that vmaps over the
batch, with an independent key per example, and runs inside ``jit``.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> fn = build({"crop_padding": 2, "flip": True})
    >>> fn(jax.random.key(0), jnp.zeros((4, 8, 8, 1))).shape
    (4, 8, 8, 1)
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.ndimage import map_coordinates

DEFAULTS: Mapping[str, object] = {
    "crop_padding": 0,  # pixels of padding before a random crop back to size
    "crop_mode": "zeros",  # how the crop pads: "zeros" or "reflect" (CROP_MODES)
    "flip": False,  # random horizontal flip; True = probability 0.5, or a probability
    "flip_mode": "random",  # "random": a new coin each step; "alternate" (FLIP_MODES)
    "rotation": 0.0,  # maximum angle, degrees; the angle is uniform in [-r, r]
    "translate": 0.0,  # maximum shift as a fraction of height / width
    "cutout": 0,  # side of the zeroed square, pixels
    "brightness": 0.0,  # maximum added offset, in [0, 1] units
    "contrast": 0.0,  # maximum relative change of contrast
}


CROP_MODES = ("zeros", "reflect")
# "random": each image gets a fresh coin every time it is drawn. "alternate": one coin
# per image for the whole run, and every other epoch mirrors all images (airbench):
# each image is seen both ways in any two consecutive epochs.
FLIP_MODES = ("random", "alternate")


def random_crop(key, image, padding: int, mode: str = "zeros"):
    """Pad ``padding`` pixels on each side, then crop a random window of the original size.

    ``mode`` ``"zeros"`` pads black (torchvision's ``RandomCrop(padding=...)``);
    ``"reflect"`` mirrors the border without repeating the edge pixel (airbench's), so
    a shifted image has no black frame the net must learn to ignore.

    Examples:
        >>> random_crop(jax.random.key(0), jnp.ones((4, 4, 1)), 0).shape
        (4, 4, 1)
        >>> row = jnp.arange(3.0).reshape(1, 3, 1)
        >>> jnp.pad(row, ((0, 0), (1, 1), (0, 0)), mode="reflect").ravel().tolist()
        [1.0, 0.0, 1.0, 2.0, 1.0]
    """
    if mode not in CROP_MODES:
        raise ValueError(f"augment crop_mode={mode!r}: must be one of {CROP_MODES}")
    if padding == 0:
        return image
    height, width, channels = image.shape
    pad_mode = "reflect" if mode == "reflect" else "constant"
    padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)), mode=pad_mode)
    top, left = jax.random.randint(key, (2,), 0, 2 * padding + 1)
    return lax.dynamic_slice(padded, (top, left, 0), (height, width, channels))


def horizontal_flip(key, image, probability: float = 0.5):
    """Mirror left-right with the given probability.

    Examples:
        >>> horizontal_flip(jax.random.key(0), jnp.arange(3.0).reshape(1, 3, 1), 1.0).ravel()
        Array([2., 1., 0.], dtype=float32)
    """
    if probability == 0:
        return image
    return jnp.where(jax.random.bernoulli(key, probability), image[:, ::-1, :], image)


def alternating_flip(key, images, example_ids, epoch, probability: float = 0.5):
    """Mirror a batch so that each image alternates between its two sides across epochs.

    Image ``i`` is mirrored in epoch ``e`` when its own coin (``probability`` of heads,
    drawn once for the run from ``key`` and ``i``) differs from ``e``'s parity. Over
    any two consecutive epochs each image is seen once each way, where independent
    coins would show half of them the same way twice (airbench's scheme).

    Args:
        key: the run's flip key (the same every step).
        images: ``(B, H, W, C)``.
        example_ids: ``(B,)`` int, each image's index in the training split.
        epoch: int scalar, 0-based.
        probability: chance that an image's coin is heads (mirrored in even epochs).

    Examples:
        >>> x, ids, key = jnp.arange(2.0).reshape(1, 1, 2, 1), jnp.array([0]), jax.random.key(0)
        >>> [alternating_flip(key, x, ids, e, 1.0).ravel().tolist() for e in range(3)]
        [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]
    """
    example_ids = jnp.asarray(example_ids)
    if example_ids.shape != images.shape[:1]:
        raise ValueError(
            f"alternating_flip: example_ids has shape {example_ids.shape}; "
            f"needs one id per image, ({images.shape[0]},)"
        )
    coins = jax.vmap(lambda i: jax.random.bernoulli(jax.random.fold_in(key, i), probability))(
        example_ids
    )
    mirrored = jnp.logical_xor(coins, jnp.asarray(epoch) % 2 == 1)
    return jnp.where(mirrored[:, None, None, None], images[:, :, ::-1, :], images)


def _sample(image, rows, cols):
    """Bilinear samples of every channel at (rows, cols); zeros outside the image."""
    sample_channel = lambda channel: map_coordinates(channel, [rows, cols], order=1, cval=0.0)
    return jax.vmap(sample_channel, in_axes=2, out_axes=2)(image).astype(image.dtype)


def rotate_by(image, degrees):
    """Rotate counter-clockwise by ``degrees`` about the centre, bilinear, zeros outside.

    ``rotate_by(x, 90)`` equals ``jnp.rot90(x)`` on a square image.

    Examples:
        >>> x = jnp.arange(4.0).reshape(2, 2, 1)
        >>> bool(jnp.allclose(rotate_by(x, 90.0), jnp.rot90(x), atol=1e-5))
        True
    """
    height, width = image.shape[:2]
    theta = jnp.deg2rad(jnp.asarray(degrees, jnp.float32))
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    y = jnp.arange(height, dtype=jnp.float32)[:, None] - (height - 1) / 2
    x = jnp.arange(width, dtype=jnp.float32)[None, :] - (width - 1) / 2
    # Inverse map: the output pixel (y, x) comes from the input rotated back by theta.
    rows = cos * y + sin * x + (height - 1) / 2
    cols = -sin * y + cos * x + (width - 1) / 2
    return _sample(image, rows, cols)


def rotate(key, image, max_degrees: float):
    """Rotate by an angle uniform in ``[-max_degrees, max_degrees]``."""
    if max_degrees == 0:
        return image
    return rotate_by(image, jax.random.uniform(key, (), minval=-max_degrees, maxval=max_degrees))


def shift_by(image, rows, cols):
    """Move the content down ``rows`` and right ``cols`` whole pixels, filling with zeros.

    Examples:
        >>> shift_by(jnp.arange(1.0, 4.0).reshape(1, 3, 1), 0, 1).ravel()
        Array([0., 1., 2.], dtype=float32)
    """
    height, width = image.shape[:2]
    rolled = jnp.roll(image, (rows, cols), axis=(0, 1))
    row_ok = (jnp.arange(height) - rows >= 0) & (jnp.arange(height) - rows < height)
    col_ok = (jnp.arange(width) - cols >= 0) & (jnp.arange(width) - cols < width)
    inside = row_ok[:, None, None] & col_ok[None, :, None]
    return jnp.where(inside, rolled, jnp.zeros((), image.dtype))


def translate(key, image, max_fraction: float):
    """Shift by whole pixels, up to ``max_fraction`` of the height/width each way."""
    if max_fraction == 0:
        return image
    height, width = image.shape[:2]
    limits = jnp.array([height, width], jnp.float32) * max_fraction
    shift = jnp.round(jax.random.uniform(key, (2,), minval=-1.0, maxval=1.0) * limits)
    return shift_by(image, shift[0].astype(jnp.int32), shift[1].astype(jnp.int32))


def cutout(key, image, size: int):
    """Zero a ``size`` x ``size`` square at a random centre (it may hang over the edge).

    Examples:
        >>> float(cutout(jax.random.key(1), jnp.ones((8, 8, 1)), 2).sum()) < 64
        True
    """
    if size == 0:
        return image
    height, width = image.shape[:2]
    centre = jax.random.randint(key, (2,), 0, jnp.array([height, width]))
    top, left = centre[0] - size // 2, centre[1] - size // 2
    rows, cols = jnp.arange(height), jnp.arange(width)
    in_rows = (rows >= top) & (rows < top + size)
    in_cols = (cols >= left) & (cols < left + size)
    hole = in_rows[:, None, None] & in_cols[None, :, None]
    return jnp.where(hole, jnp.zeros((), image.dtype), image)


def brightness_contrast(key, image, brightness: float, contrast: float):
    """Add an offset uniform in ±``brightness``; scale contrast about the image mean by a
    factor uniform in ``1 ± contrast``; clip to [0, 1].

    Written as ``x * f + mean * (1 - f) + b`` so that f = 1, b = 0 gives ``x`` exactly.
    """
    if brightness == 0 and contrast == 0:
        return image
    key_b, key_c = jax.random.split(key)
    offset = brightness * jax.random.uniform(key_b, (), minval=-1.0, maxval=1.0)
    factor = 1.0 + contrast * jax.random.uniform(key_c, (), minval=-1.0, maxval=1.0)
    mean = jnp.mean(image)
    adjusted = image * factor + mean * (1.0 - factor) + offset
    return jnp.clip(adjusted, 0.0, 1.0).astype(image.dtype)


def _number(spec, key, low, high, integer=False):
    value = spec[key]
    kind = numbers.Integral if integer else numbers.Real  # numpy scalars too
    if (
        isinstance(value, bool | np.bool_)
        or not isinstance(value, kind)
        or not low <= value <= high
    ):
        what = "an int" if integer else "a number"
        raise ValueError(f"augment {key}={value!r}: must be {what} in [{low}, {high}]")
    return int(value) if integer else float(value)


def validate(spec) -> dict:
    """``spec`` with every key filled in and checked; ``ValueError`` names a bad key or value.

    Examples:
        >>> validate({"flip": True})["flip"], validate({})["crop_mode"]
        (0.5, 'zeros')
    """
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping) and hasattr(spec, "items"):  # ml_collections.ConfigDict
        spec = dict(spec.items())
    if not isinstance(spec, Mapping):
        raise ValueError(f"augment spec must be a mapping like augment.DEFAULTS; got {spec!r}")
    unknown = sorted(set(spec) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown augment key(s) {unknown}; valid keys: {sorted(DEFAULTS)}")
    merged = {**DEFAULTS, **spec}
    flip = merged["flip"]
    if isinstance(flip, bool | np.bool_):
        flip = 0.5 if flip else 0.0
    elif not isinstance(flip, numbers.Real) or not 0 <= flip <= 1:
        raise ValueError(f"augment flip={flip!r}: must be True/False or a probability in [0, 1]")
    if merged["crop_mode"] not in CROP_MODES:
        raise ValueError(f"augment crop_mode={merged['crop_mode']!r}: must be one of {CROP_MODES}")
    if merged["flip_mode"] not in FLIP_MODES:
        raise ValueError(f"augment flip_mode={merged['flip_mode']!r}: must be one of {FLIP_MODES}")
    return {
        "crop_padding": _number(merged, "crop_padding", 0, 1024, integer=True),
        "crop_mode": merged["crop_mode"],
        "flip": float(flip),
        "flip_mode": merged["flip_mode"],
        "rotation": _number(merged, "rotation", 0, 180),
        "translate": _number(merged, "translate", 0, 1),
        "cutout": _number(merged, "cutout", 0, 4096, integer=True),
        "brightness": _number(merged, "brightness", 0, 1),
        "contrast": _number(merged, "contrast", 0, 1),
    }


# The keys that switch an op on; the others only say how (crop_mode, flip_mode).
STRENGTHS = ("crop_padding", "flip", "rotation", "translate", "cutout", "brightness", "contrast")


def is_identity(spec) -> bool:
    """Whether ``build(spec)`` would return its images unchanged (every strength zero).

    Examples:
        >>> is_identity({"crop_mode": "reflect"}), is_identity({"flip": True})
        (True, False)
    """
    settings = validate(spec)
    return not any(settings[key] for key in STRENGTHS)


def _check_sizes_fit(settings: dict, spatial: tuple[int, int]) -> None:
    """Pixel sizes against the images they meet (known only when the batch is): a crop
    padding or cutout as large as the image leaves nothing of it in some views."""
    smallest = min(spatial)
    for key in ("crop_padding", "cutout"):
        if settings[key] >= smallest:
            raise ValueError(
                f"augment {key}={settings[key]} is not smaller than these {spatial[0]}x"
                f"{spatial[1]} images; valid: 0 to {smallest - 1} pixels"
            )


def build(spec: Mapping | None = None, *, seed: int = 0) -> Callable:
    """Compose the ops switched on in ``spec`` into ``fn(rng, images) -> images``.

    Order: crop, flip, rotation, translation, brightness/contrast, cutout. Ops at
    zero strength are left out entirely, so an all-zero (or empty) spec returns
    the images unchanged and costs nothing inside ``jit``. With ``flip_mode
    "alternate"`` the flip comes first (:func:`alternating_flip`, as airbench) and
    the function needs each image's id and the epoch:
    ``fn(rng, images, example_ids=..., epoch=...)``; its ``needs_example_ids``
    attribute says so (the fit loop's step passes them).

    Args:
        spec: a mapping (or ConfigDict) with keys of :data:`DEFAULTS`; missing keys
            take the default (off).
        seed: seeds the once-per-run coins of ``flip_mode "alternate"``.

    Returns:
        ``fn(rng, images)`` for float images ``(B, H, W, C)`` in [0, 1]; pure and jit-able.

    Raises:
        ValueError: an unknown key or a value out of range, naming both.

    Examples:
        >>> identity = build(DEFAULTS)
        >>> x = jnp.ones((2, 4, 4, 3))
        >>> identity(jax.random.key(0), x) is x
        True
        >>> fn = build({"flip": True, "flip_mode": "alternate"})
        >>> fn.needs_example_ids, fn(jax.random.key(0), x, example_ids=jnp.arange(2), epoch=1).shape
        (True, (2, 4, 4, 3))
    """
    settings = validate(spec)
    alternate = bool(settings["flip"]) and settings["flip_mode"] == "alternate"
    steps = []
    if settings["crop_padding"]:
        steps.append(
            lambda k, x: random_crop(k, x, settings["crop_padding"], settings["crop_mode"])
        )
    if settings["flip"] and not alternate:
        steps.append(lambda k, x: horizontal_flip(k, x, settings["flip"]))
    if settings["rotation"]:
        steps.append(lambda k, x: rotate(k, x, settings["rotation"]))
    if settings["translate"]:
        steps.append(lambda k, x: translate(k, x, settings["translate"]))
    if settings["brightness"] or settings["contrast"]:
        steps.append(
            lambda k, x: brightness_contrast(k, x, settings["brightness"], settings["contrast"])
        )
    if settings["cutout"]:
        steps.append(lambda k, x: cutout(k, x, settings["cutout"]))

    def augment_one(key, image):
        for step, step_key in zip(steps, jax.random.split(key, len(steps)), strict=True):
            image = step(step_key, image)
        return image

    def augment_batch(rng, images, *, example_ids=None, epoch=None):
        if not steps and not alternate:
            return images  # nothing switched on: any array passes, volumes included
        if images.ndim != 4 or not jnp.issubdtype(images.dtype, jnp.floating):
            raise ValueError(
                f"augment expects float images (B, H, W, C) in [0, 1]; got {images.dtype} "
                f"{images.shape} (convert uint8 with images / 255 first)"
            )
        _check_sizes_fit(settings, images.shape[1:3])
        if alternate:
            if example_ids is None or epoch is None:
                raise ValueError(
                    "augment flip_mode='alternate' needs example_ids= (each image's index "
                    "in the training split) and epoch=; use flip_mode='random' without them"
                )
            # The run's flip key, the same every step (the step key drives the rest);
            # the folded constant keeps it apart from other streams of the same seed.
            flip_key = jax.random.fold_in(jax.random.key(seed), 0x5F1F)
            images = alternating_flip(flip_key, images, example_ids, epoch, settings["flip"])
        if not steps:
            return images  # the alternating flip only
        return jax.vmap(augment_one)(jax.random.split(rng, images.shape[0]), images)

    augment_batch.spec = settings
    augment_batch.needs_example_ids = alternate
    return augment_batch


__all__ = [
    "CROP_MODES",
    "DEFAULTS",
    "FLIP_MODES",
    "alternating_flip",
    "brightness_contrast",
    "build",
    "cutout",
    "horizontal_flip",
    "random_crop",
    "rotate",
    "rotate_by",
    "shift_by",
    "translate",
    "validate",
]
