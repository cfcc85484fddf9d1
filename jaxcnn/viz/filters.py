"""What a trained network looks at: first-layer filters and per-layer feature maps.

Feature maps come from Linen's ``capture_intermediates``: the model runs once,
unchanged, and Flax records the output of every module the filter selects. No
model is rebuilt or cut in pieces, so what is shown is what the network computed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import flax.linen as nn
import jax
import numpy as np
from matplotlib.figure import Figure

from jaxcnn.viz._figures import image_grid


def _items_in_order(tree: Mapping, prefix: str = ""):
    # Flax stores variables in creation (= call) order; jax.tree_util would sort
    # the keys and put "ConvBlock_10" before "ConvBlock_2".
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            yield from _items_in_order(value, path)
        else:
            yield path, value


def conv_kernels(variables: Mapping) -> dict[str, np.ndarray]:
    """Every 2-D conv kernel ``(kh, kw, in, out)`` of a model, in creation order.

    Args:
        variables: ``{"params": ...}`` as returned by ``model.init`` (or just the params).

    Returns:
        ``{module path: kernel}``, e.g. ``{"ConvBlock_0/conv": array(3, 3, 1, 16)}``.

    Examples:
        >>> conv_kernels({"params": {"c": {"kernel": np.zeros((3, 3, 1, 4))}}})["c"].shape
        (3, 3, 1, 4)
    """
    params = variables.get("params", variables)
    kernels = {}
    for path, value in _items_in_order(params):
        if path.rsplit("/", 1)[-1] == "kernel" and np.ndim(value) == 4:
            kernels[path.rsplit("/", 1)[0] if "/" in path else ""] = np.asarray(value)
    return kernels


def first_layer_filters(variables: Mapping) -> tuple[str, np.ndarray]:
    """The first conv layer's path and kernel ``(kh, kw, in, out)``.

    Examples:
        >>> first_layer_filters({"params": {"a": {"kernel": np.ones((5, 5, 3, 8))}}})[0]
        'a'
    """
    kernels = conv_kernels(variables)
    if not kernels:
        raise ValueError("variables hold no 2-D conv kernel (a 'kernel' of rank 4)")
    return next(iter(kernels.items()))


def plot_filters(
    kernel,
    *,
    layer_name: str = "first conv layer",
    in_channel: int = 0,
    max_filters: int = 64,
    num_cols: int = 8,
    path: str | os.PathLike | None = None,
) -> Figure:
    """One cell per output filter of a conv kernel, zero mapped to mid-grey.

    RGB-input kernels are shown in colour (each filter scaled on its own);
    otherwise the slice of input channel ``in_channel`` is shown in grey.

    Args:
        kernel: ``(kh, kw, in, out)`` weights, e.g. from ``first_layer_filters``.
        layer_name: used in the heading.
        in_channel: which input slice to show when the input is not RGB.
        max_filters: at most this many cells.
        num_cols: cells per row.
        path: if given, the PNG is written there.

    Returns:
        The figure (``image_grid`` layout).

    Examples:
        >>> len(plot_filters(np.ones((3, 3, 1, 6)), num_cols=3).axes)
        6
    """
    if isinstance(kernel, tuple) and len(kernel) == 2 and isinstance(kernel[0], str):
        raise ValueError(
            "kernel is a (path, kernel) pair, as first_layer_filters returns: write "
            "path, kernel = first_layer_filters(variables); plot_filters(kernel, layer_name=path)"
        )
    weights = np.asarray(kernel, dtype=np.float32)
    if weights.ndim != 4:
        raise ValueError(f"kernel must be (kh, kw, in, out), got shape {weights.shape}")
    kh, kw, num_in, num_out = weights.shape
    if not 0 <= in_channel < num_in:
        raise ValueError(f"in_channel must be in [0, {num_in}), got {in_channel}")
    count = min(num_out, max_filters)
    rgb = num_in == 3
    cells = [weights[..., i] if rgb else weights[:, :, in_channel, i] for i in range(count)]
    which = "RGB" if rgb else ("grey input" if num_in == 1 else f"input channel {in_channel}")
    return image_grid(
        cells,
        titles=[f"filter {i}" for i in range(count)],
        num_cols=min(num_cols, count),
        title=f"{layer_name}: {count} of {num_out} filters {kh}x{kw}, {which}; 0 is mid-grey",
        normalize="symmetric",
        path=path,
    )


def _is_module_call(module_type):
    def select(module: nn.Module, method_name: str) -> bool:
        return isinstance(module, module_type) and method_name == "__call__"

    return select


def feature_maps(model: nn.Module, variables: Mapping, images, *, module_type=nn.Conv):
    """Outputs of every conv layer for a batch of images, via ``capture_intermediates``.

    The model is applied once in inference mode (``train=False``), exactly as for
    predictions; Flax records each selected module's return value on the way.

    Args:
        model: a Linen model called as ``model.apply(variables, x, train=False)``.
        variables: its variables (``params`` and, if any, ``batch_stats``).
        images: ``(N, H, W, C)`` float input, preprocessed as the model expects.
        module_type: which modules to record; ``nn.Conv`` (default) gives each
            convolution's own output, before norm and activation; pass e.g.
            ``jaxcnn.layers.ConvBlock`` for the block outputs after activation.

    Returns:
        ``{module path: array (N, H', W', C')}`` in call order, e.g. key
        ``"ConvBlock_0/conv"``. A module called twice gets ``#1``, ``#2`` suffixes.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> class Net(nn.Module):
        ...     @nn.compact
        ...     def __call__(self, x, train=False):
        ...         return nn.Conv(2, (3, 3))(x).mean(axis=(1, 2))
        >>> x = jnp.ones((1, 8, 8, 1))
        >>> maps = feature_maps(Net(), Net().init(jax.random.key(0), x), x)
        >>> {k: v.shape for k, v in maps.items()}
        {'Conv_0': (1, 8, 8, 2)}
    """
    x = np.asarray(images, dtype=np.float32)
    if not 3 <= x.ndim <= 5:
        raise ValueError(
            f"images must be a batch (N, *spatial, C) with 1 to 3 spatial axes, e.g. "
            f"(N, H, W, C); got shape {x.shape}"
        )
    select = _is_module_call(module_type)

    # One compiled program instead of op-by-op dispatch (several times faster).
    @jax.jit
    def capture(variables, x):
        _, state = model.apply(
            variables, x, train=False, capture_intermediates=select, mutable=["intermediates"]
        )
        return state["intermediates"]

    return dict(_captured_outputs(capture(variables, x)))


def _captured_outputs(tree: Mapping, prefix: str = ""):
    # capture_intermediates stores each module's outputs as a tuple under
    # "__call__" (one entry per call), nested like the module tree.
    for key, value in tree.items():
        if key == "__call__":
            for number, output in enumerate(value, start=1):
                suffix = f"#{number}" if len(value) > 1 else ""
                yield prefix + suffix, np.asarray(output)
        else:
            yield from _captured_outputs(value, f"{prefix}/{key}" if prefix else str(key))


def plot_feature_maps(
    maps: Mapping[str, np.ndarray],
    image=None,
    *,
    max_channels: int = 8,
    path: str | os.PathLike | None = None,
) -> Figure:
    """One row per conv layer showing its first channels for ONE input image.

    Args:
        maps: ``{layer path: (H', W', C') or (1, H', W', C')}``, e.g. one image's
            slice of ``feature_maps``.
        image: the input image, shown in an extra first row (optional).
        max_channels: channels shown per layer.
        path: if given, the PNG is written there.

    Returns:
        The figure (``image_grid`` layout, ``max_channels`` columns).

    Examples:
        >>> figure = plot_feature_maps({"conv": np.ones((6, 6, 3))}, max_channels=4)
        >>> len(figure.axes)
        4
    """
    if not maps:
        raise ValueError("maps is empty: the model captured no conv layer")
    if not isinstance(max_channels, int) or max_channels < 1:
        raise ValueError(f"max_channels must be a positive int, got {max_channels!r}")
    cells, titles, row_labels = [], [], []
    if image is not None:
        cells += [np.asarray(image)] + [None] * (max_channels - 1)
        titles += ["input"] + [""] * (max_channels - 1)
        row_labels.append("input")
    for name, values in maps.items():
        array = np.asarray(values)
        if array.ndim == 4 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 3:
            raise ValueError(f"map {name!r} must be (H, W, C) for one image, got {array.shape}")
        shown = min(max_channels, array.shape[-1])
        cells += [array[..., c] for c in range(shown)] + [None] * (max_channels - shown)
        titles += [f"ch {c}" for c in range(shown)] + [""] * (max_channels - shown)
        height, width, channels = array.shape
        row_labels.append(f"{name}\n{height}x{width}x{channels}")
    return image_grid(
        cells,
        titles=titles,
        num_cols=max_channels,
        row_labels=row_labels,
        title="feature maps (each channel scaled to its own min..max)",
        normalize="per_image",
        path=path,
    )
