"""The small classic nets: teaching MNIST / CIFAR nets, LeNet-5, AlexNet, a 3-D CNN.

Each function returns a :class:`jaxcnn.models.CNN`; parameter counts in the
docstrings are for the default arguments and are checked by the tests.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from jaxcnn.models._build import build
from jaxcnn.models.spec import CNN


def mnist_cnn(
    num_classes: int = 10,
    in_channels: int = 1,
    *,
    padding: Any = "VALID",
    dropout: float = 0.5,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> CNN:
    """The Keras "simple MNIST convnet": 34,826 parameters for 28x28x1 input.

    Conv32 3x3 relu - MaxPool 2 - Conv64 3x3 relu - MaxPool 2 - Flatten - Dropout 0.5 -
    Dense ``num_classes``. Keras' glorot-uniform kernel init.

    Args:
      num_classes: classifier outputs.
      in_channels: input channels (1 for MNIST).
      padding: conv padding; ``"SAME"`` keeps 8x8 inputs (sklearn digits) usable.
      dropout: dropout rate before the classifier.
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns:
      The model.

    Examples:
      >>> mnist_cnn().num_classes
      10
    """
    spec = {
        "kernel_init": "glorot_uniform",
        "stages": [
            {
                "type": "conv",
                "features": 32,
                "kernel": 3,
                "padding": padding,
                "pool": "max",
                "name": "conv1",
            },
            {
                "type": "conv",
                "features": 64,
                "kernel": 3,
                "padding": padding,
                "pool": "max",
                "name": "conv2",
            },
        ],
        "head": [{"type": "flatten"}, {"type": "dropout", "rate": dropout}],
    }
    return build(spec, num_classes, in_channels, dtype, param_dtype)


def digits_cnn(
    num_classes: int = 10,
    in_channels: int = 1,
    *,
    dropout: float = 0.25,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> CNN:
    """A net for sklearn's 8x8 ``digits``: 85,066 parameters for 8x8x1 input.

    Conv32 3x3 SAME relu - Conv64 3x3 SAME relu - MaxPool 2 - Flatten - Dropout -
    Dense 64 relu - Dropout - Dense ``num_classes``. SAME padding because an 8x8 image
    cannot afford to lose its border twice.

    Args:
      num_classes: classifier outputs.
      in_channels: input channels.
      dropout: dropout rate (before and after the hidden dense layer).
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns:
      The model.

    Examples:
      >>> digits_cnn(num_classes=10).in_channels
      1
    """
    spec = {
        "kernel_init": "he_normal",
        "stages": [
            {"type": "conv", "features": 32, "kernel": 3, "padding": "SAME", "name": "conv1"},
            {
                "type": "conv",
                "features": 64,
                "kernel": 3,
                "padding": "SAME",
                "pool": "max",
                "name": "conv2",
            },
        ],
        "head": [
            {"type": "flatten"},
            {"type": "dropout", "rate": dropout},
            {"type": "dense", "features": 64, "name": "dense"},
            {"type": "dropout", "rate": dropout},
        ],
    }
    return build(spec, num_classes, in_channels, dtype, param_dtype)


def cifar_cnn(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> CNN:
    """TensorFlow's CNN tutorial net: 122,570 parameters for 32x32x3 input.

    Conv32 - MaxPool 2 - Conv64 - MaxPool 2 - Conv64 (all 3x3 VALID relu) - Flatten -
    Dense 64 relu - Dense ``num_classes``.

    Args:
      num_classes: classifier outputs.
      in_channels: input channels.
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns:
      The model.

    Examples:
      >>> cifar_cnn().in_channels
      3
    """
    spec = {
        "kernel_init": "glorot_uniform",
        "stages": [
            {"type": "conv", "features": 32, "pool": "max", "name": "conv1"},
            {"type": "conv", "features": 64, "pool": "max", "name": "conv2"},
            {"type": "conv", "features": 64, "name": "conv3"},
        ],
        "head": [{"type": "flatten"}, {"type": "dense", "features": 64, "name": "dense"}],
    }
    return build(spec, num_classes, in_channels, dtype, param_dtype)


def lenet5(
    num_classes: int = 10,
    in_channels: int = 1,
    *,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> CNN:
    """LeNet-5 (LeCun et al. 1998): 61,706 parameters for 28x28x1 input.

    Conv6 5x5 (padding 2, so 28x28 MNIST sees the original 32x32 geometry) tanh -
    AvgPool 2 - Conv16 5x5 tanh - AvgPool 2 - Dense 120 tanh - Dense 84 tanh -
    Dense ``num_classes``. C3 is fully connected (not the paper's sparse table).

    Args:
      num_classes: classifier outputs.
      in_channels: input channels.
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns:
      The model.

    Examples:
      >>> lenet5().num_classes
      10
    """
    spec = {
        "stages": [
            {
                "type": "conv",
                "features": 6,
                "kernel": 5,
                "padding": 2,
                "activation": "tanh",
                "pool": "avg",
                "name": "c1",
            },
            {
                "type": "conv",
                "features": 16,
                "kernel": 5,
                "activation": "tanh",
                "pool": "avg",
                "name": "c3",
            },
        ],
        "head": [
            {"type": "flatten"},
            {"type": "dense", "features": 120, "activation": "tanh", "name": "f5"},
            {"type": "dense", "features": 84, "activation": "tanh", "name": "f6"},
        ],
    }
    return build(spec, num_classes, in_channels, dtype, param_dtype)


def alexnet(
    num_classes: int = 1000,
    in_channels: int = 3,
    *,
    dropout: float = 0.5,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> CNN:
    """AlexNet as in torchvision: 61,100,840 parameters for 224x224x3 input, 1000 classes.

    Five convs (64 11x11/4, 192 5x5, 384, 256, 256 3x3) with 3x3/2 max pools, then
    Dropout - Dense 4096 - Dropout - Dense 4096 - Dense ``num_classes``. Without
    torchvision's adaptive pooling, the first dense layer's size follows the input
    (6x6x256 at 224x224; the smallest input is 63x63).

    Args:
      num_classes: classifier outputs.
      in_channels: input channels.
      dropout: dropout rate before each hidden dense layer.
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns:
      The model.

    Examples:
      >>> alexnet(num_classes=10).num_classes
      10
    """
    pool = {"pool": "max", "pool_window": 3, "pool_stride": 2}
    spec = {
        "kernel_init": "he_normal_fan_out",
        "stages": [
            {
                "type": "conv",
                "features": 64,
                "kernel": 11,
                "stride": 4,
                "padding": 2,
                "name": "conv1",
                **pool,
            },
            {"type": "conv", "features": 192, "kernel": 5, "padding": 2, "name": "conv2", **pool},
            {"type": "conv", "features": 384, "padding": 1, "name": "conv3"},
            {"type": "conv", "features": 256, "padding": 1, "name": "conv4"},
            {"type": "conv", "features": 256, "padding": 1, "name": "conv5", **pool},
        ],
        "head": [
            {"type": "flatten"},
            {"type": "dropout", "rate": dropout},
            {"type": "dense", "features": 4096, "name": "fc6"},
            {"type": "dropout", "rate": dropout},
            {"type": "dense", "features": 4096, "name": "fc7"},
        ],
    }
    return build(spec, num_classes, in_channels, dtype, param_dtype)


def cnn3d(
    num_classes: int = 10,
    in_channels: int = 1,
    *,
    widths: tuple[int, ...] = (16, 32, 64),
    dropout: float = 0.3,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> CNN:
    """A small 3-D CNN for volumes or short clips, input ``(N, D, H, W, C)``.

    Per width: Conv 3x3x3 SAME - BatchNorm - ReLU, with 2x2x2 max pooling after all but
    the last; then global average pooling - Dropout - Dense ``num_classes``.
    70,426 parameters with the defaults (plus 224 batch statistics).

    Args:
      num_classes: classifier outputs.
      in_channels: input channels.
      widths: channels of each conv stage.
      dropout: dropout rate before the classifier.
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns:
      The model.

    Examples:
      >>> cnn3d(num_classes=4).num_classes
      4
    """
    stages = [
        {
            "type": "conv",
            "features": w,
            "kernel": 3,
            "padding": "SAME",
            "norm": "batch",
            "pool": "max" if i < len(widths) - 1 else None,
            "name": f"conv{i + 1}",
        }
        for i, w in enumerate(widths)
    ]
    spec = {
        "spatial_dims": 3,
        "kernel_init": "he_normal",
        "stages": stages,
        "head": [{"type": "global_pool", "kind": "avg"}, {"type": "dropout", "rate": dropout}],
    }
    return build(spec, num_classes, in_channels, dtype, param_dtype)


def fast_cifar(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    widths: tuple[int, int, int] = (64, 256, 256),
    whiten: bool = True,
    norm_momentum: float = 0.9,
    logit_scale: float = 1.0,
    kernel_init: str = "he_normal",
    pool_first: bool = False,
    activation: str = "gelu",
    norm_epsilon: float | None = None,
    classifier_bias: bool = True,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
) -> CNN:
    """A small VGG-like CIFAR-10 net in the spirit of airbench94 (Jordan 2024).

    ``whiten``: a 2x2 VALID conv with 24 channels (2 * 3 channels * 2 * 2 pixels) named
    ``"whiten"``, GELU. airbench initialises it from the eigenvectors of the training
    images' 2x2 patch covariance and keeps it fixed; the trainer does the same with
    ``config.whitening.layer = "whiten"`` (:mod:`jaxcnn.train.whitening`), else it is
    learned from its random start. Then
    three groups, each Conv 3x3 SAME - BN - GELU - MaxPool 2 (``pool_first``: MaxPool
    right after the conv) - Conv 3x3 SAME - BN -
    GELU (no conv biases: BN shifts). Global max pooling - Dense ``num_classes``.
    1,972,802 parameters with the defaults.

    Args:
      num_classes: classifier outputs.
      in_channels: input channels.
      widths: channels of the three groups.
      whiten: start with the 2x2 patch-whitening conv (else a 3x3 SAME conv of
        ``widths[0]`` channels).
      norm_momentum: batch norm's running-average momentum, Flax's weight on the old
        value (airbench: 0.6, i.e. PyTorch's ``momentum=0.4``).
      logit_scale: multiplies the logits (airbench: 1/9).
      kernel_init: a ``jaxcnn.models.spec.KERNEL_INITS`` name (airbench: PyTorch's
        default with identity first filters, ``"torch_default_dirac"``).
      pool_first: each group's first conv pools before its norm and activation
        (airbench's order).
      activation: of every conv (airbench: the exact GELU, ``"gelu_exact"``).
      norm_epsilon: batch norm's epsilon; ``None`` is Flax's 1e-5 (airbench: 1e-12).
      classifier_bias: whether the classifier has a bias (airbench: no).
      dtype: computation dtype; param_dtype: parameter dtype.

    Returns:
      The model.

    Examples:
      >>> fast_cifar(widths=(16, 32, 32)).num_classes
      10
    """
    if whiten:
        stem = {
            "type": "conv",
            "features": 2 * in_channels * 4,
            "kernel": 2,
            "activation": activation,
            "name": "whiten",
        }
    else:
        stem = {
            "type": "conv",
            "features": widths[0],
            "kernel": 3,
            "padding": "SAME",
            "norm": "batch",
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "activation": activation,
            "name": "stem",
        }
    stages = [stem]
    for i, width in enumerate(widths):
        conv = {
            "type": "conv",
            "features": width,
            "kernel": 3,
            "padding": "SAME",
            "norm": "batch",
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "activation": activation,
        }
        stages.append(
            {**conv, "pool": "max", "pool_first": pool_first, "name": f"group{i + 1}_conv1"}
        )
        stages.append({**conv, "name": f"group{i + 1}_conv2"})
    spec = {
        "kernel_init": kernel_init,
        "stages": stages,
        "head": [{"type": "global_pool", "kind": "max"}],
        "logit_scale": logit_scale,
        "classifier_bias": classifier_bias,
    }
    return build(spec, num_classes, in_channels, dtype, param_dtype)
