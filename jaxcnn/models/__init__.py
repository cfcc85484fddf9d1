"""The model zoo and the spec-built :class:`CNN`.

Every model is a Flax Linen module called as ``model.apply(variables, x, train=False)``
on channels-last input ``(N, *spatial, C)``; ``train=True`` turns on dropout (rng
stream ``"dropout"``) and batch statistics (``mutable=["batch_stats"]``). Logits are
float32 ``(N, num_classes)``.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from jaxcnn import models
    >>> model = models.get("mnist_cnn", num_classes=10)
    >>> x = jnp.zeros((2, 28, 28, 1))
    >>> variables = model.init(jax.random.key(0), x, train=False)
    >>> model.apply(variables, x, train=False).shape
    (2, 10)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import flax.linen as nn

from jaxcnn.models.classic import (
    alexnet,
    cifar_cnn,
    cnn3d,
    digits_cnn,
    fast_cifar,
    lenet5,
    mnist_cnn,
)
from jaxcnn.models.residual import BottleneckBlock, ResidualBlock
from jaxcnn.models.resnet import (
    cifar_resnet,
    imagenet_resnet,
    resnet18,
    resnet20,
    resnet34,
    resnet50,
    resnet56,
)
from jaxcnn.models.spec import CNN, KERNEL_INITS, from_spec, normalize_spec
from jaxcnn.models.vgg import vgg11, vgg16

__all__ = [
    "CNN",
    "KERNEL_INITS",
    "BottleneckBlock",
    "ResidualBlock",
    "from_spec",
    "normalize_spec",
    "get",
    "names",
    "register",
    "imagenet_resnet",
    "cifar_resnet",
    *[
        "alexnet",
        "cifar_cnn",
        "cnn3d",
        "digits_cnn",
        "fast_cifar",
        "lenet5",
        "mnist_cnn",
        "resnet18",
        "resnet20",
        "resnet34",
        "resnet50",
        "resnet56",
        "vgg11",
        "vgg16",
    ],
]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "mnist_cnn": mnist_cnn,
    "digits_cnn": digits_cnn,
    "cifar_cnn": cifar_cnn,
    "lenet5": lenet5,
    "alexnet": alexnet,
    "vgg11": vgg11,
    "vgg16": vgg16,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet20": resnet20,
    "resnet56": resnet56,
    "cnn3d": cnn3d,
    "fast_cifar": fast_cifar,
}


def names() -> list[str]:
    """Names accepted by :func:`get`, sorted.

    Examples:
      >>> "resnet18" in names()
      True
    """
    return sorted(_REGISTRY)


def register(name: str, builder: Callable[..., nn.Module]) -> None:
    """Adds a model builder (``builder(num_classes=..., **kwargs) -> Module``) to the zoo.

    Args:
      name: the name for :func:`get`; must not be taken.
      builder: a callable returning a Linen module.

    Examples:
      >>> register("tiny", lambda num_classes=10, **kw: from_spec(
      ...     {"stages": [{"type": "conv", "features": 4}]}, num_classes=num_classes))
      >>> get("tiny", num_classes=3).num_classes
      3
      >>> del _REGISTRY["tiny"]  # leave the zoo as it was (tests compare its names)
    """
    if name in _REGISTRY:
        raise ValueError(f"name={name!r} is already registered")
    if not callable(builder):
        raise ValueError(f"builder={builder!r} must be callable")
    _REGISTRY[name] = builder


def get(name: str, **kwargs: Any) -> nn.Module:
    """Builds the zoo model ``name``.

    Args:
      name: one of :func:`names`.
      **kwargs: the builder's arguments: ``num_classes``, ``in_channels``, ``dtype``,
        ``param_dtype`` and model-specific ones (see each builder's docstring).

    Returns:
      The Linen module.

    Examples:
      >>> get("resnet20", num_classes=100).num_classes
      100
    """
    if name not in _REGISTRY:
        raise ValueError(f"model name={name!r} is not in the zoo; valid: {', '.join(names())}")
    builder = _REGISTRY[name]
    params = inspect.signature(builder).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not takes_any:
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise ValueError(
                f"model {name!r} got unknown arguments {unknown}; valid: {sorted(params)}"
            )
    return builder(**kwargs)
