"""The binding's bfloat16 kernel gradient over image pairs (``kernel_grad_pairs.cc``)
equals XLA's float32 one to bfloat16 rounding, and ``auto`` takes it where it should.

The kernel runs only on CPUs with AVX-512 BF16 (the library is built with
``-march=native``); those tests skip elsewhere. The rule is tested everywhere.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcnn import conv_backend, onednn, shapes
from jaxcnn.onednn import build, ffi_conv

needs_kernel = pytest.mark.skipif(
    not build.kernel_grad_pairs_built(),
    reason=f"needs oneDNN's library ({onednn.unavailable_reason() or 'built'}) on a CPU "
    "with AVX-512 BF16",
)
NHWC = ("NHWC", "HWIO", "NHWC")


def reference(x, dy, kernel_shape, padding, strides=(1, 1)):
    """XLA's float32 kernel gradient of the same bfloat16 inputs, at full precision."""

    def loss(kernel):
        y = lax.conv_general_dilated(
            x.astype(jnp.float32), kernel, strides, padding, dimension_numbers=NHWC,
            precision=lax.Precision.HIGHEST,
        )  # fmt: skip
        return jnp.vdot(y, dy.astype(jnp.float32))

    return jax.grad(loss)(jnp.zeros(kernel_shape, jnp.float32))


CASES = [
    # x shape, kernel shape, padding: what each one reaches in the kernel
    ((5, 4, 6, 7), (2, 3, 7, 64), ((1, 0), (2, 1))),  # odd batch, asymmetric padding, C < 16
    ((1, 3, 3, 1), (3, 3, 1, 64), ((1, 1), (1, 1))),  # one image paired with zeros
    ((4, 9, 9, 13), (1, 1, 13, 128), ((0, 0), (0, 0))),  # 1x1, two output blocks
    ((3, 8, 5, 24), (5, 5, 24, 64), ((2, 2), (2, 2))),  # 24 channels: whole blocks of six
    ((20, 3, 3, 70), (3, 3, 70, 64), ((1, 1), (1, 1))),  # groups of 8 pairs, C = 16 k + 6
    ((2, 1, 1, 16), (1, 1, 16, 64), ((0, 0), (0, 0))),  # one output pixel
    # 32 output channels: tiles of 12 input x 32 output channels
    ((5, 6, 5, 32), (3, 3, 32, 32), ((1, 1), (1, 1))),  # whole blocks of twelve but the last
    ((3, 4, 4, 7), (3, 2, 7, 96), ((0, 1), (1, 0))),  # 96: three 32-blocks, C < 12
    ((18, 3, 3, 12), (3, 3, 12, 32), ((1, 1), (1, 1))),  # groups of 8 pairs, one whole block
]
STRIDED = [
    # x shape, kernel shape, padding, strides
    ((5, 8, 8, 16), (3, 3, 16, 32), ((1, 1), (1, 1)), (2, 2)),  # ResNet-20's downsampling
    ((3, 7, 9, 12), (3, 2, 12, 64), ((1, 0), (0, 1)), (3, 2)),  # rows left over at the end
    ((4, 6, 6, 8), (1, 1, 8, 32), ((0, 0), (0, 0)), (2, 2)),  # pixels the kernel skips
]


@needs_kernel
@pytest.mark.parametrize(
    "x_shape, k_shape, padding, strides", [(*case, (1, 1)) for case in CASES] + STRIDED
)
def test_equals_xla_to_bfloat16_rounding(x_shape, k_shape, padding, strides):
    x = jax.random.normal(jax.random.key(0), x_shape, jnp.bfloat16)
    oh, ow = shapes.conv_output_shape(x_shape[1:3], k_shape[:2], strides, padding)
    dy = jax.random.normal(jax.random.key(1), (x_shape[0], oh, ow, k_shape[3]), jnp.bfloat16)
    pairs = jax.jit(ffi_conv._kernel_grad_pairs, static_argnums=(2, 3, 4))
    got = pairs(x, dy, k_shape, padding, strides)
    want = reference(x, dy, k_shape, padding, strides)
    assert got.dtype == jnp.bfloat16 and got.shape == k_shape
    # float32 sums in another order, then one rounding to bfloat16 (8 significant bits).
    scale = float(jnp.abs(want).max())
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=2.0**-8, atol=1e-5 * scale)


@needs_kernel
def test_a_second_call_with_other_shapes_reuses_nothing_stale():
    """Each thread keeps its buffers between calls: a smaller call after a larger one, and
    the larger one again, must give the same results as alone."""
    big, small = CASES[4], CASES[0]
    results = []
    for x_shape, k_shape, padding in (big, small, big):
        x = jax.random.normal(jax.random.key(2), x_shape, jnp.bfloat16)
        out = (
            x_shape[1] + sum(padding[0]) - k_shape[0] + 1,
            x_shape[2] + sum(padding[1]) - k_shape[1] + 1,
        )
        dy = jax.random.normal(jax.random.key(3), (x_shape[0], *out, k_shape[3]), jnp.bfloat16)
        results.append(np.asarray(ffi_conv._kernel_grad_pairs(x, dy, k_shape, padding), np.float32))
    np.testing.assert_array_equal(results[0], results[2])


@needs_kernel
@pytest.mark.parametrize("strides", [(1, 1), (2, 2)])
def test_gradients_through_conv2d_match_onednns_backward_weights(monkeypatch, strides):
    x = jax.random.normal(jax.random.key(0), (6, 7, 7, 32), jnp.bfloat16)
    kernel = (jax.random.normal(jax.random.key(1), (3, 3, 32, 64)) * 0.1).astype(jnp.bfloat16)
    same = ((1, 1), (1, 1))
    conv = lambda a, b: ffi_conv.conv2d(a, b, strides, same)  # noqa: E731

    def grads():
        loss = lambda a, b: jnp.sum(conv(a, b).astype(jnp.float32) ** 2)  # noqa: E731
        return jax.jit(jax.grad(loss, (0, 1)))(x, kernel)

    monkeypatch.setenv("JAXCNN_ONEDNN_KERNEL_GRAD", "direct")
    dx_direct, dk_direct = grads()
    monkeypatch.setenv("JAXCNN_ONEDNN_KERNEL_GRAD", "pairs")
    text = jax.jit(jax.grad(lambda b: jnp.sum(conv(x, b)))).lower(kernel)
    assert "jaxcnn_kernel_grad_pairs" in text.as_text()
    dx_pairs, dk_pairs = grads()
    np.testing.assert_array_equal(dx_pairs, dx_direct)  # the input gradient is unchanged
    scale = float(jnp.abs(dk_direct.astype(jnp.float32)).max())
    np.testing.assert_allclose(
        np.asarray(dk_pairs, np.float32), np.asarray(dk_direct, np.float32), atol=2.0**-7 * scale
    )


@needs_kernel
def test_shapes_it_cannot_take_are_refused_by_name():
    x = jnp.zeros((2, 5, 5, 8), jnp.bfloat16)
    dy = jnp.zeros((2, 3, 3, 48), jnp.bfloat16)  # 48 output channels: not a multiple of 32
    with pytest.raises(Exception, match="kernel_grad_pairs.*multiple of 32"):
        ffi_conv._kernel_grad_pairs(x, dy, (3, 3, 8, 48), ((0, 0), (0, 0))).block_until_ready()


SEVEN = ((128, 7, 7, 256), (3, 3, 256, 256), "bfloat16", (1, 1), ((1, 1), (1, 1)), (1, 1))


@pytest.mark.parametrize(
    "change, cpu, expected",
    [
        ({}, {"amx": False, "avx512_bf16": True}, "pairs"),  # Zen 4 and 5
        ({}, {"amx": True, "avx512_bf16": True}, "mosaic"),  # the Intel Xeon: oneDNN's AMX
        ({}, {"amx": False, "avx512_bf16": False}, "direct"),  # AVX2 or AVX-512 without BF16
        ({2: "float32"}, {"amx": False, "avx512_bf16": True}, "direct"),  # bfloat16 only
        ({1: (3, 3, 256, 96)}, {"amx": False, "avx512_bf16": True}, "pairs"),  # 96: 32-blocks
        ({1: (3, 3, 256, 80)}, {"amx": False, "avx512_bf16": True}, "direct"),  # 80 % 32
        ({1: (3, 3, 8, 32)}, {"amx": False, "avx512_bf16": True}, "pairs"),  # 8 in, 32 out
        ({1: (3, 3, 7, 32)}, {"amx": False, "avx512_bf16": True}, "direct"),  # 7 in: lost
        ({1: (3, 3, 3, 64)}, {"amx": False, "avx512_bf16": True}, "pairs"),  # 3 in, 64 out
        ({3: (2, 2)}, {"amx": False, "avx512_bf16": True}, "pairs"),  # strides too
        ({3: (2, 2)}, {"amx": True, "avx512_bf16": True}, "direct"),  # no swap or mosaic
        ({1: (1, 1, 256, 256), 3: (2, 2)}, {"amx": False, "avx512_bf16": True}, "direct"),  # 2 > 1
        ({5: (2, 2)}, {"amx": False, "avx512_bf16": True}, "direct"),  # no dilation
        ({0: (128, 4, 4, 256)}, {"amx": False, "avx512_bf16": True}, "pairs"),  # before swap
        ({0: (4, 64, 64, 256)}, {"amx": False, "avx512_bf16": True}, "pairs"),  # 4,096 pixels
        ({0: (4, 65, 64, 256)}, {"amx": False, "avx512_bf16": True}, "direct"),  # one row more
    ],
)
def test_which_kernel_gradients_auto_takes_pairs(monkeypatch, change, cpu, expected):
    monkeypatch.delenv("JAXCNN_ONEDNN_KERNEL_GRAD", raising=False)
    args = [change.get(i, value) for i, value in enumerate(SEVEN)]
    assert ffi_conv.kernel_grad_method(*args, **cpu) == expected


@pytest.mark.parametrize("avx512_bf16, expected", [(True, "pairs"), (False, "direct")])
def test_asking_for_pairs_falls_back_where_it_cannot_run(monkeypatch, avx512_bf16, expected):
    monkeypatch.setenv("JAXCNN_ONEDNN_KERNEL_GRAD", "pairs")
    method = ffi_conv.kernel_grad_method(*SEVEN, amx=True, avx512_bf16=avx512_bf16)
    assert method == expected  # even with AMX, when asked for by name


def test_auto_asks_the_build_for_the_kernel(monkeypatch):
    """A compiler without AVX-512 BF16 (or a CPU without it: -march=native) builds the
    library without the kernel; then no call may be routed to it."""
    monkeypatch.delenv("JAXCNN_ONEDNN_KERNEL_GRAD", raising=False)
    monkeypatch.setattr(conv_backend, "amx_here", lambda: False)
    for built, expected in ((False, "direct"), (True, "pairs")):
        monkeypatch.setattr(build, "kernel_grad_pairs_built", lambda built=built: built)
        assert ffi_conv.kernel_grad_method(*SEVEN) == expected
