"""Residual blocks (He et al. 2016) built from :class:`jaxcnn.layers.ConvBlock`.

``ResidualBlock`` is the two-3x3-conv "basic" block of ResNet-18/34 and the CIFAR
ResNets; ``BottleneckBlock`` is the 1x1-3x3-1x1 block of ResNet-50 with the
stride on the 3x3 conv (torchvision's "v1.5"). Padding is written explicitly
(1 for 3x3) as PyTorch does, so weights port without the SAME-padding shift
(flax#2993). Both work for 1-D, 2-D and 3-D inputs.

Shortcut when the shape changes (stride > 1 or new channel count):
  * ``"B"``: 1x1 conv with stride + norm (a sub-module named ``"shortcut"``).
  * ``"A"``: no parameters: subsample with the stride, zero-pad the new channels
    (the option He et al. used for their CIFAR ResNet-20..110).

The shortcut is added inside the last conv's norm, before the activation
(``ConvBlock(...)(y, train, residual=shortcut)``): with the fused batch norm
(:mod:`jaxcnn.batch_norm`) the add, the ReLU and their gradient take no pass over the
map of their own (ResNet-20's step 1.07x in float32, 1.10x in bfloat16 on the 2-core
Intel Xeon; ``docs/perf_notes.md``, item 40). The variables are the same as before;
``capture_intermediates`` records that conv's output after the add and the activation.

In training each block's input goes through :func:`jaxcnn.fast_ops.fork`, one copy for
the first conv and one for the shortcut: where the batch-norm kernels run, the sum of
their gradients runs on every core instead of XLA's one thread (ResNet-20's float32
step 1.03x on the Zen 5 CPU, ``docs/perf_notes.md``, item 67); values are unchanged.

Each block's output goes through :func:`jaxcnn.fast_ops.materialize` unless
``materialize_output=False``: on CPU it stops XLA from recomputing a chain of blocks'
batch-norms inside the weight-gradient transposes (ResNet-20 trained about 1.3x faster
when XLA ran those). It computes the same function (XLA may round the last bit
differently, as any change of fusion does); on other platforms it is the identity. Where
the fused batch norm's kernels write the output (training on CPU) it is in memory
already, and the last ``ConvBlock`` skips the copy (``ConvBlock.materialize_output``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.fast_ops import fork
from jaxcnn.layers import ConvBlock


def _shortcut(module: nn.Module, x: jax.Array, features: int, stride: int, train: bool):
    rank = x.ndim - 2
    if stride == 1 and x.shape[-1] == features:
        return x
    if module.shortcut == "B":
        return ConvBlock(
            features,
            (1,) * rank,
            stride=stride,
            padding=0,
            norm=module.norm,
            activation=None,
            kernel_init=module.kernel_init,
            dtype=module.dtype,
            param_dtype=module.param_dtype,
            name="shortcut",
        )(x, train)
    if module.shortcut != "A":
        raise ValueError(f"{type(module).__name__}: shortcut={module.shortcut!r}; valid: 'A', 'B'")
    if features < x.shape[-1]:
        raise ValueError(
            f"{type(module).__name__}: option-A shortcut cannot shrink channels "
            f"({x.shape[-1]} -> {features}); use shortcut='B'"
        )
    # Strided subsampling gives ceil(n / stride) per axis: the 3x3/pad-1 conv's output size.
    x = x[(slice(None), *([slice(None, None, stride)] * rank))]
    extra = features - x.shape[-1]
    pads = [(0, 0)] * (rank + 1) + [(extra // 2, extra - extra // 2)]
    return jnp.pad(x, pads)


class ResidualBlock(nn.Module):
    """Basic block: ``act(norm(conv3x3(act(norm(conv3x3(x))))) + shortcut(x))``.

    Attributes:
      features: output channels.
      stride: stride of the first conv (and of the shortcut).
      shortcut: ``"A"`` or ``"B"`` (see the module docstring).
      norm, activation, kernel_init, dtype, param_dtype: as in ``ConvBlock``.
      materialize_output: write the output to memory once on CPU (see the module
        docstring); ``False`` leaves fusion to XLA.

    Examples:
      >>> block = ResidualBlock(16, stride=2)
      >>> x = jnp.ones((1, 8, 8, 8))
      >>> block.apply(block.init(jax.random.key(0), x), x).shape
      (1, 4, 4, 16)
    """

    features: int
    stride: int = 1
    shortcut: str = "B"
    norm: str | None = "batch"
    activation: Any = "relu"
    kernel_init: Any = None
    dtype: Any = None
    param_dtype: Any = jnp.float32
    materialize_output: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        rank = x.ndim - 2
        common = {
            "norm": self.norm,
            "kernel_init": self.kernel_init,
            "dtype": self.dtype,
            "param_dtype": self.param_dtype,
        }
        # The input feeds conv1 and the shortcut: fork sums their gradients on every core.
        # Only in training: evaluation takes no gradient, and a custom gradient rule would
        # stop forward-mode autodiff (jax.jvp) through an evaluating model.
        x, x_shortcut = fork(x) if train else (x, x)
        y = ConvBlock(
            self.features,
            (3,) * rank,
            self.stride,
            padding=1,
            activation=self.activation,
            name="conv1",
            **common,
        )(x, train)
        shortcut = _shortcut(self, x_shortcut, self.features, self.stride, train)
        # The shortcut is added inside conv2's norm, before the activation: with the
        # fused batch norm the add and the ReLU (and their gradient) take no pass of
        # their own.
        y = ConvBlock(
            self.features,
            (3,) * rank,
            1,
            padding=1,
            activation=self.activation,
            name="conv2",
            materialize_output=self.materialize_output,
            **common,
        )(y, train, residual=shortcut)
        return y


class BottleneckBlock(nn.Module):
    """Bottleneck block: 1x1 (width) -> 3x3 (width, stride) -> 1x1 (4 * width), + shortcut.

    Attributes:
      features: the width of the 3x3 conv; the block outputs ``4 * features`` channels.
      stride, shortcut, norm, activation, kernel_init, dtype, param_dtype,
        materialize_output: as in :class:`ResidualBlock`.

    Examples:
      >>> block = BottleneckBlock(4)
      >>> x = jnp.ones((1, 8, 8, 16))
      >>> block.apply(block.init(jax.random.key(0), x), x).shape
      (1, 8, 8, 16)
    """

    features: int
    stride: int = 1
    shortcut: str = "B"
    norm: str | None = "batch"
    activation: Any = "relu"
    kernel_init: Any = None
    dtype: Any = None
    param_dtype: Any = jnp.float32
    materialize_output: bool = True
    expansion: int = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        rank = x.ndim - 2
        out = self.features * self.expansion
        common = {
            "norm": self.norm,
            "kernel_init": self.kernel_init,
            "dtype": self.dtype,
            "param_dtype": self.param_dtype,
        }
        x, x_shortcut = fork(x) if train else (x, x)  # as in ResidualBlock
        y = ConvBlock(
            self.features,
            (1,) * rank,
            1,
            padding=0,
            activation=self.activation,
            name="conv1",
            **common,
        )(x, train)
        y = ConvBlock(
            self.features,
            (3,) * rank,
            self.stride,
            padding=1,
            activation=self.activation,
            name="conv2",
            **common,
        )(y, train)
        shortcut = _shortcut(self, x_shortcut, out, self.stride, train)
        return ConvBlock(
            out,
            (1,) * rank,
            1,
            padding=0,
            activation=self.activation,
            name="conv3",
            materialize_output=self.materialize_output,
            **common,
        )(y, train, residual=shortcut)
