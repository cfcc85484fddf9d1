"""VGG-11 and VGG-16 (Simonyan & Zisserman 2015), as in torchvision.

VGG-16 has 138,357,544 parameters and VGG-11 132,863,336 for 224x224x3 input and
1000 classes. There is no adaptive pooling: the first dense layer is sized by the
input (7x7x512 at 224x224; the smallest input is 32x32).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxcnn.models._build import build
from jaxcnn.models.spec import CNN

# Convs per stage; each stage ends with a 2x2 max pool.
_STAGES = {
    "vgg11": ((64, 1), (128, 1), (256, 2), (512, 2), (512, 2)),
    "vgg16": ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)),
}


def _vgg(name, num_classes, in_channels, batch_norm, dropout, dtype, param_dtype) -> CNN:
    stages = [
        {
            "type": "conv",
            "features": width,
            "kernel": 3,
            "padding": 1,
            "repeat": repeat,
            "norm": "batch" if batch_norm else None,
            "pool": "max",
            "name": f"stage{i + 1}",
        }
        for i, (width, repeat) in enumerate(_STAGES[name])
    ]
    spec = {
        "kernel_init": "he_normal_fan_out",
        "stages": stages,
        "head": [
            {"type": "flatten"},
            {"type": "dense", "features": 4096, "name": "fc6"},
            {"type": "dropout", "rate": dropout},
            {"type": "dense", "features": 4096, "name": "fc7"},
            {"type": "dropout", "rate": dropout},
        ],
    }
    return build(spec, num_classes, in_channels, dtype, param_dtype)


def vgg11(
    num_classes: int = 1000,
    in_channels: int = 3,
    *,
    batch_norm: bool = False,
    dropout: float = 0.5,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> CNN:
    """VGG-11 (configuration "A"): 132,863,336 parameters at 224x224x3, 1000 classes.

    Args:
      num_classes: classifier outputs.
      in_channels: input channels.
      batch_norm: BatchNorm after each conv (torchvision's ``vgg11_bn``; conv biases
        are then dropped, unlike torchvision, since BN's shift makes them redundant).
      dropout: dropout after each hidden dense layer.
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns:
      The model.

    Examples:
      >>> vgg11(num_classes=10).num_classes
      10
    """
    return _vgg("vgg11", num_classes, in_channels, batch_norm, dropout, dtype, param_dtype)


def vgg16(
    num_classes: int = 1000,
    in_channels: int = 3,
    *,
    batch_norm: bool = False,
    dropout: float = 0.5,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> CNN:
    """VGG-16 (configuration "D"): 138,357,544 parameters at 224x224x3, 1000 classes.

    Args:
      num_classes: classifier outputs.
      in_channels: input channels.
      batch_norm: BatchNorm after each conv (conv biases dropped).
      dropout: dropout after each hidden dense layer.
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns:
      The model.

    Examples:
      >>> vgg16(num_classes=10).num_classes
      10
    """
    return _vgg("vgg16", num_classes, in_channels, batch_norm, dropout, dtype, param_dtype)
