"""Patch whitening: set a first convolution from the training images' patch statistics.

A ``k x k`` convolution over ``C`` channels sees ``d = k * k * C`` numbers per patch.
Those numbers are strongly correlated in natural images (neighbouring pixels and the
three colours move together), which makes the first layer slow to learn. Let the
patches have mean ``mu`` and covariance ``Sigma = E Lambda E^T`` (eigenvectors ``E``,
eigenvalues ``Lambda``). The filters ``W = (Lambda + eps)^(-1/2) E^T`` with bias
``-W mu`` give outputs with zero mean and covariance ``Lambda / (Lambda + eps)``:
about the identity, so every output channel is one decorrelated, unit-variance
direction of patch space. With ``2 d`` output channels the second half is the negation
of the first, so that a following GELU or ReLU passes both signs of each direction.

airbench (Jordan 2024) starts its CIFAR-10 nets this way and keeps the filters fixed;
:func:`whitened_params` does the same for any Linen conv (``fast_cifar``'s ``"whiten"``
layer is 2x2 with 24 = 2 * 12 channels).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxcnn.train.config import ConfigError


def image_patches(images: np.ndarray, kernel_size: int) -> np.ndarray:
    """All ``kernel_size`` x ``kernel_size`` VALID patches, flattened in HWC (HWIO) order.

    Args:
      images: ``(N, H, W, C)`` floats.
      kernel_size: patch side ``k``.

    Returns:
      ``(N * (H - k + 1) * (W - k + 1), k * k * C)``; row ``r`` column ``(i * k + j) * C + c``
      is pixel ``(i, j)``, channel ``c`` of patch ``r`` (the order of an HWIO kernel's first
      three axes).

    Examples:
      >>> x = np.arange(2 * 3 * 3 * 1, dtype=np.float32).reshape(2, 3, 3, 1)
      >>> image_patches(x, 2).shape
      (8, 4)
      >>> image_patches(x, 2)[0].tolist()  # top-left patch of image 0
      [0.0, 1.0, 3.0, 4.0]
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C); got shape {images.shape}")
    _, height, width, _ = images.shape
    if not 1 <= kernel_size <= min(height, width):
        raise ValueError(
            f"kernel_size = {kernel_size} does not fit images of {height}x{width}; valid: "
            f"1 to {min(height, width)}"
        )
    windows = np.lib.stride_tricks.sliding_window_view(images, (kernel_size, kernel_size), (1, 2))
    # (N, H', W', C, k, k) -> (N, H', W', k, k, C): the kernel's (kh, kw, in) order.
    windows = np.moveaxis(windows, 3, 5)
    return windows.reshape(-1, kernel_size * kernel_size * images.shape[-1])


def patch_whitening(
    images: np.ndarray, kernel_size: int, out_channels: int, eps: float = 5e-4
) -> tuple[np.ndarray, np.ndarray]:
    """Whitening filters and bias for a ``kernel_size`` conv, from ``images``.

    Args:
      images: ``(N, H, W, C)`` inputs as the network sees them (normalised floats).
      kernel_size: the convolution's kernel side ``k``.
      out_channels: ``d = k * k * C`` (whitening directions) or ``2 d`` (each direction
        and its negation).
      eps: added to each eigenvalue; keeps near-zero-variance directions from being
        amplified without bound.

    Returns:
      ``(kernel, bias)``: an HWIO kernel ``(k, k, C, out_channels)`` and ``(out_channels,)``,
      directions ordered by decreasing variance.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> x = rng.normal(size=(64, 8, 8, 3)).astype(np.float32)
      >>> kernel, bias = patch_whitening(x, 2, 24)
      >>> kernel.shape, bias.shape
      ((2, 2, 3, 24), (24,))
    """
    channels = images.shape[-1]
    dims = kernel_size * kernel_size * channels
    if out_channels not in (dims, 2 * dims):
        raise ValueError(
            f"out_channels = {out_channels} cannot whiten {kernel_size}x{kernel_size} patches "
            f"of {channels} channels; valid: {dims} (k*k*C) or {2 * dims} (2*k*k*C)"
        )
    if not eps > 0:
        raise ValueError(f"eps = {eps!r}; valid: a positive number")
    # Sums over chunks of images: all 2x2 patches of 5,000 CIFAR images are 0.5 GB.
    total, outer, count = np.zeros(dims), np.zeros((dims, dims)), 0
    for start in range(0, len(images), 256):
        patches = image_patches(np.asarray(images[start : start + 256], np.float64), kernel_size)
        total += patches.sum(axis=0)
        outer += patches.T @ patches
        count += len(patches)
    if count == 0:
        raise ValueError("images is empty; whitening needs at least one image")
    mean = total / count
    covariance = outer / count - np.outer(mean, mean)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    order = np.argsort(eigenvalues)[::-1]
    filters = eigenvectors[:, order].T / np.sqrt(eigenvalues[order] + eps)[:, None]  # (d, d)
    if out_channels == 2 * dims:
        filters = np.concatenate([filters, -filters])
    bias = -(filters @ mean)
    kernel = filters.T.reshape(kernel_size, kernel_size, channels, out_channels)
    return kernel.astype(np.float32), bias.astype(np.float32)


def find_conv_kernel(params: Any, layer: str) -> tuple[tuple[str, ...], np.ndarray]:
    """The path and value of the one 2-D conv kernel under the top-level ``layer``.

    Raises:
      ConfigError: no such layer, or it holds no (or more than one) 4-D kernel.
    """
    if layer not in params:
        raise ConfigError(
            f"config.whitening.layer = {layer!r} is not a layer of this model; its layers: "
            f"{sorted(params)}"
        )
    found = [
        (tuple(key.key for key in path), leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(params[layer])[0]
        if path[-1].key == "kernel" and np.ndim(leaf) == 4
    ]
    if len(found) != 1:
        raise ConfigError(
            f"config.whitening.layer = {layer!r} must hold exactly one 2-D convolution kernel "
            f"(kh, kw, in, out); it holds {len(found)}"
        )
    path, kernel = found[0]
    return (layer, *path), kernel


def whitened_params(params: Any, layer: str, images: np.ndarray, eps: float = 5e-4) -> Any:
    """``params`` with ``layer``'s conv kernel (and bias, if it has one) set by patch whitening.

    Args:
      params: a Linen ``params`` tree (nested dicts).
      layer: top-level name of the layer, e.g. ``"whiten"`` in ``fast_cifar``.
      images: normalised training images ``(N, H, W, C)``.
      eps: see :func:`patch_whitening`.

    Returns:
      A new tree (the input is not modified).

    Raises:
      ConfigError: the layer is missing, is not a single 2-D square conv, or has an
        output width other than ``k*k*C`` or ``2*k*k*C``.
    """
    path, kernel = find_conv_kernel(params, layer)
    height, width, in_channels, out_channels = np.shape(kernel)
    if height != width or in_channels != images.shape[-1]:
        raise ConfigError(
            f"config.whitening.layer = {layer!r} has a {height}x{width} kernel over "
            f"{in_channels} channels; whitening needs a square kernel over the image's "
            f"{images.shape[-1]} channels"
        )
    try:
        new_kernel, new_bias = patch_whitening(images, height, out_channels, eps)
    except ValueError as error:
        raise ConfigError(f"config.whitening.layer = {layer!r}: {error}") from None
    params = dict(params)  # copies of the dicts on the path; the input stays as it was
    node = params
    for key in path[:-1]:
        node[key] = dict(node[key])
        node = node[key]
    node["kernel"] = new_kernel.astype(np.asarray(kernel).dtype)
    if "bias" in node:
        node["bias"] = new_bias.astype(np.asarray(node["bias"]).dtype)
    return params
