"""The benchmark nets written as plain Flax Linen, the way a user without jaxcnn would.

These are the "no library" baseline's nets (``benchmarks/flax_minimal.py``), and the
stand-in the jaxcnn runner uses for a net that ``jaxcnn.models`` does not provide yet.
Layers match ``torch_peer.py`` and ``keras_peer.py`` one for one (VALID convolutions for the
teaching nets, so the parameter counts are the teaching material's: 34,826 and 122,570).

``pool`` chooses how 2x2 max-pooling is written: ``"nn"`` is ``flax.linen.max_pool`` (its
gradient is XLA's select-and-scatter), ``"fast"`` is ``jaxcnn.fast_ops.max_pool`` (crop,
reshape, max with an elementwise custom gradient), ``"fast_relu"`` also moves the ReLU
after the pool (``fast_ops.max_pool_relu``) in the teaching nets.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> model = build("mnist_cnn")
    >>> v = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
    >>> sum(p.size for p in jax.tree.leaves(v["params"]))
    34826
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def _conv_cls(conv: str):
    if conv == "xla":
        return nn.Conv
    if conv == "im2col":
        from benchmarks.experiments import im2col_conv

        return functools.partial(nn.Conv, conv_general_dilated=im2col_conv.conv_general_dilated)
    raise ValueError(f"conv must be 'xla' or 'im2col', got {conv!r}")


def _pool_fn(pool: str) -> Callable[[jax.Array], jax.Array]:
    if pool == "nn":
        return lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
    if pool in ("fast", "fast_relu", "fused"):
        from jaxcnn import fast_ops  # only the jaxcnn stand-in uses it

        return lambda x: fast_ops.max_pool(x, 2)
    raise ValueError(f"pool must be 'nn', 'fast' or 'fast_relu', got {pool!r}")


class ConvReluPool(nn.Module):
    """relu(max_pool(conv(x) + bias)), computed as relu(max_pool(conv(x)) + bias).

    The per-channel bias is constant over each window, so max(x + b) = max(x) + b: adding
    it after the pool never writes or re-reads the full-resolution conv output. Parameters
    are those of ``nn.Conv`` (``Conv_0/kernel`` and this module's ``bias``).
    """

    features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        from jaxcnn import fast_ops

        y = nn.Conv(self.features, (3, 3), padding="VALID", use_bias=False, dtype=self.dtype)(x)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        return fast_ops.max_pool_relu(y, 2, bias=bias.astype(self.dtype))


def _relu_pool_fn(pool: str) -> Callable[[jax.Array], jax.Array]:
    """pool(relu(x)); with ``fast_relu`` computed as relu(pool(x)) (same value and gradient)."""
    if pool == "fast_relu":
        from jaxcnn import fast_ops

        return lambda x: fast_ops.max_pool_relu(x, 2)
    pool_fn = _pool_fn(pool)
    return lambda x: pool_fn(nn.relu(x))


class MnistCNN(nn.Module):
    """Conv 32 3x3, pool, conv 64 3x3, pool, dropout 0.5, dense 10 (34,826 parameters)."""

    dtype: jnp.dtype = jnp.float32
    pool: str = "nn"
    conv: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        relu_pool = _relu_pool_fn(self.pool)
        Conv = _conv_cls(self.conv)
        x = x.astype(self.dtype)
        if self.pool == "fused":
            x = ConvReluPool(64, self.dtype)(ConvReluPool(32, self.dtype)(x))
        else:
            x = relu_pool(Conv(32, (3, 3), padding="VALID", dtype=self.dtype)(x))
            x = relu_pool(Conv(64, (3, 3), padding="VALID", dtype=self.dtype)(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.Dropout(0.5, deterministic=not train)(x)
        return nn.Dense(10, dtype=self.dtype)(x).astype(jnp.float32)


class CifarCNN(nn.Module):
    """Conv 32, pool, conv 64, pool, conv 64, dense 64, dense 10 (122,570 parameters)."""

    dtype: jnp.dtype = jnp.float32
    pool: str = "nn"
    conv: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train  # no dropout or batch norm in this net
        relu_pool = _relu_pool_fn(self.pool)
        Conv = _conv_cls(self.conv)
        x = x.astype(self.dtype)
        if self.pool == "fused":
            x = ConvReluPool(64, self.dtype)(ConvReluPool(32, self.dtype)(x))
        else:
            x = relu_pool(Conv(32, (3, 3), padding="VALID", dtype=self.dtype)(x))
            x = relu_pool(Conv(64, (3, 3), padding="VALID", dtype=self.dtype)(x))
        x = nn.relu(Conv(64, (3, 3), padding="VALID", dtype=self.dtype)(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(64, dtype=self.dtype)(x))
        return nn.Dense(10, dtype=self.dtype)(x).astype(jnp.float32)


class _ResidualBlock(nn.Module):
    features: int
    stride: int
    dtype: jnp.dtype
    conv: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool):
        Conv = _conv_cls(self.conv)
        norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)
        s = (self.stride, self.stride)
        y = Conv(self.features, (3, 3), s, padding=1, use_bias=False, dtype=self.dtype)(x)
        y = nn.relu(norm()(y))
        y = Conv(self.features, (3, 3), padding=1, use_bias=False, dtype=self.dtype)(y)
        y = norm()(y)
        if x.shape[-1] != self.features or self.stride != 1:
            x = Conv(self.features, (1, 1), s, use_bias=False, dtype=self.dtype)(x)
            x = norm()(x)
        return nn.relu(x + y)


class ResNet20(nn.Module):
    """ResNet-20 for CIFAR: 3 stages x 3 basic blocks (16/32/64), 1x1 projection shortcuts."""

    dtype: jnp.dtype = jnp.float32
    conv: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        Conv = _conv_cls(self.conv)
        x = x.astype(self.dtype)
        x = Conv(16, (3, 3), padding=1, use_bias=False, dtype=self.dtype)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x))
        for stage, features in enumerate((16, 32, 64)):
            for block in range(3):
                stride = 2 if stage > 0 and block == 0 else 1
                x = _ResidualBlock(features, stride, self.dtype, self.conv)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(10, dtype=self.dtype)(x).astype(jnp.float32)


class FastCifar(nn.Module):
    """An airbench-style net: 2x2 stem, three conv-pool-BN-GELU blocks (64/256/256), max head."""

    dtype: jnp.dtype = jnp.float32
    pool: str = "nn"
    conv: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        pool = _pool_fn(self.pool)
        Conv = _conv_cls(self.conv)
        norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)
        x = x.astype(self.dtype)
        x = nn.gelu(Conv(24, (2, 2), padding="VALID", dtype=self.dtype)(x))
        for features in (64, 256, 256):
            x = Conv(features, (3, 3), padding=1, use_bias=False, dtype=self.dtype)(x)
            x = nn.gelu(norm()(pool(x)))
            x = Conv(features, (3, 3), padding=1, use_bias=False, dtype=self.dtype)(x)
            x = nn.gelu(norm()(x))
        x = jnp.max(x, axis=(1, 2))
        return nn.Dense(10, use_bias=False, dtype=self.dtype)(x).astype(jnp.float32)


def build(net: str, dtype: str = "float32", pool: str = "nn", conv: str = "xla") -> nn.Module:
    """Builds a benchmark net by name.

    Args:
      net: ``mnist_cnn``, ``cifar_cnn``, ``resnet20`` or ``fast_cifar``.
      dtype: computation dtype, ``float32`` or ``bfloat16`` (parameters stay float32).
      pool: ``"nn"`` (flax max_pool) or ``"fast"`` (jaxcnn.fast_ops.max_pool); ResNet-20 has
        no max-pooling and ignores it.
      conv: ``"xla"`` (``lax.conv_general_dilated``) or ``"im2col"``
        (``jaxcnn.fast_ops.conv_general_dilated``: shifted slices + one matmul).

    Returns:
      The Linen module; call it as ``model.apply(variables, x, train=...)``.

    Examples:
      >>> build("cifar_cnn").pool
      'nn'
    """
    compute = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    if net == "mnist_cnn":
        return MnistCNN(dtype=compute, pool=pool, conv=conv)
    if net == "cifar_cnn":
        return CifarCNN(dtype=compute, pool=pool, conv=conv)
    if net == "resnet20":
        return ResNet20(dtype=compute, conv=conv)
    if net == "fast_cifar":
        return FastCifar(dtype=compute, pool=pool, conv=conv)
    raise ValueError(f"net must be one of mnist_cnn, cifar_cnn, resnet20, fast_cifar; got {net!r}")
