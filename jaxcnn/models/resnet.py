"""ResNets (He et al. 2016): ImageNet ResNet-18/34/50 and CIFAR ResNet-20/56.

ImageNet models follow torchvision (explicit PyTorch-style padding, bottleneck
stride on the 3x3 conv, projection shortcuts "B"): 11,689,512 / 21,797,672 /
25,557,032 parameters for 1000 classes, counting BatchNorm scale and bias and not
its running statistics (those live in the ``batch_stats`` collection).

CIFAR models follow the paper's section 4.2: 16/32/64 channels, ``n`` basic blocks
per stage, depth ``6n + 2``, option-A (parameter-free) shortcuts: ResNet-20 has
269,722 parameters ("0.27M" in the paper), ResNet-56 853,018 ("0.85M").
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxcnn.models._build import build
from jaxcnn.models.spec import CNN

_IMAGENET = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}


def imagenet_resnet(
    depth: int,
    num_classes: int = 1000,
    in_channels: int = 3,
    *,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> CNN:
    """ResNet-18, -34 or -50 for ImageNet-size input (any size >= 32x32 works).

    Stem: Conv 64 7x7/2 (padding 3) - BN - ReLU - MaxPool 3x3/2 (padding 1); stages
    ``layer1`` .. ``layer4`` of 64, 128, 256, 512 (x4 for bottlenecks) channels; global
    average pooling; Dense ``num_classes``.

    Args:
      depth: 18, 34 or 50.
      num_classes: classifier outputs.
      in_channels: input channels.
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns:
      The model.

    Examples:
      >>> imagenet_resnet(18, num_classes=10).num_classes
      10
    """
    key = f"resnet{depth}"
    if key not in _IMAGENET:
        raise ValueError(f"depth={depth!r}; valid: 18, 34, 50")
    block, counts = _IMAGENET[key]
    stages = [
        {
            "type": "conv",
            "features": 64,
            "kernel": 7,
            "stride": 2,
            "padding": 3,
            "norm": "batch",
            "pool": "max",
            "pool_window": 3,
            "pool_stride": 2,
            "pool_padding": 1,
            "name": "stem",
        }
    ]
    for i, (width, count) in enumerate(zip((64, 128, 256, 512), counts, strict=True)):
        stages.append(
            {
                "type": "residual",
                "features": width,
                "blocks": count,
                "stride": 1 if i == 0 else 2,
                "block": block,
                "shortcut": "B",
                "name": f"layer{i + 1}",
            }
        )
    spec = {
        "kernel_init": "he_normal_fan_out",
        "stages": stages,
        "head": [{"type": "global_pool", "kind": "avg"}],
    }
    return build(spec, num_classes, in_channels, dtype, param_dtype)


def cifar_resnet(
    depth: int,
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    shortcut: str = "A",
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> CNN:
    """The CIFAR ResNet of depth ``6n + 2`` (20, 32, 44, 56, 110, ...).

    Conv 16 3x3 - BN - ReLU, three stages of ``n`` basic blocks (16, 32, 64 channels,
    stride 1, 2, 2), global average pooling, Dense ``num_classes``.

    Args:
      depth: ``6n + 2`` for an int ``n >= 1``.
      num_classes: classifier outputs.
      in_channels: input channels.
      shortcut: ``"A"`` (the paper's CIFAR choice, no parameters) or ``"B"``
        (1x1 projection + BN; ResNet-20 then has 272,474 parameters).
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns:
      The model.

    Examples:
      >>> cifar_resnet(20).num_classes
      10
    """
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth={depth!r}; valid: 6n + 2 for n >= 1 (20, 32, 44, 56, 110)")
    n = (depth - 2) // 6
    stages = [
        {"type": "conv", "features": 16, "kernel": 3, "padding": 1, "norm": "batch", "name": "stem"}
    ]
    for i, width in enumerate((16, 32, 64)):
        stages.append(
            {
                "type": "residual",
                "features": width,
                "blocks": n,
                "stride": 1 if i == 0 else 2,
                "shortcut": shortcut,
                "name": f"stage{i + 1}",
            }
        )
    spec = {
        "kernel_init": "he_normal",
        "stages": stages,
        "head": [{"type": "global_pool", "kind": "avg"}],
    }
    return build(spec, num_classes, in_channels, dtype, param_dtype)


def resnet18(
    num_classes: int = 1000,
    in_channels: int = 3,
    *,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> CNN:
    """ResNet-18: 11,689,512 parameters (1000 classes). See :func:`imagenet_resnet`."""
    return imagenet_resnet(18, num_classes, in_channels, dtype=dtype, param_dtype=param_dtype)


def resnet34(
    num_classes: int = 1000,
    in_channels: int = 3,
    *,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> CNN:
    """ResNet-34: 21,797,672 parameters (1000 classes). See :func:`imagenet_resnet`."""
    return imagenet_resnet(34, num_classes, in_channels, dtype=dtype, param_dtype=param_dtype)


def resnet50(
    num_classes: int = 1000,
    in_channels: int = 3,
    *,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> CNN:
    """ResNet-50: 25,557,032 parameters (1000 classes). See :func:`imagenet_resnet`."""
    return imagenet_resnet(50, num_classes, in_channels, dtype=dtype, param_dtype=param_dtype)


def resnet20(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    shortcut: str = "A",
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> CNN:
    """CIFAR ResNet-20: 269,722 parameters with option-A shortcuts. See :func:`cifar_resnet`."""
    return cifar_resnet(
        20,
        num_classes,
        in_channels,
        shortcut=shortcut,
        dtype=dtype,
        param_dtype=param_dtype,
    )


def resnet56(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    shortcut: str = "A",
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> CNN:
    """CIFAR ResNet-56: 853,018 parameters with option-A shortcuts. See :func:`cifar_resnet`."""
    return cifar_resnet(
        56,
        num_classes,
        in_channels,
        shortcut=shortcut,
        dtype=dtype,
        param_dtype=param_dtype,
    )
