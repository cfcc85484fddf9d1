"""oneDNN convolutions through XLA's FFI equal lax's, and the backend switch routes right.

The equality tests need the library (a C++ compiler and oneDNN: PyPI's
``onednn-devel-cpu-gomp``, a dependency, or ``apt install libdnnl-dev``) and skip with the
build's reason when it is missing; the switch's validation and fallback rules are tested
everywhere.
"""

from __future__ import annotations

import ctypes
import doctest
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcnn import conv_backend, onednn
from jaxcnn.onednn import build, ffi_conv

NHWC = ("NHWC", "HWIO", "NHWC")

needs_onednn = pytest.mark.skipif(
    not onednn.available(), reason=f"oneDNN unavailable: {onednn.unavailable_reason()}"
)


# oneDNN's bfloat16 kernels need AVX-512 or AVX2-VNNI-2: not on an AVX2-only CPU (Zen 3).
needs_onednn_bfloat16 = pytest.mark.skipif(
    not onednn.available() or not build.makes_bfloat16(),
    reason="oneDNN has no bfloat16 convolution kernels on this CPU (needs AVX-512)",
)
BFLOAT16 = pytest.param(jnp.bfloat16, marks=needs_onednn_bfloat16, id="bfloat16")


def normal(seed, shape, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape).astype(dtype)


def conv_with(backend, x, kernel, strides, padding, dilation=(1, 1)):
    """Value and (input, kernel) gradients of sum(conv * probe), traced under ``backend``,
    and the lowered text of the convolution (it names ``jaxcnn_onednn`` where oneDNN runs)."""

    def conv(a, b):
        return conv_backend.conv_general_dilated(
            a, b, strides, padding, rhs_dilation=dilation, dimension_numbers=NHWC
        )

    with conv_backend.use_conv_backend(backend):
        y = jax.jit(conv)(x, kernel)
        probe = normal(7, y.shape, y.dtype)
        grads = jax.jit(jax.grad(lambda a, b: jnp.sum(conv(a, b) * probe), (0, 1)))(x, kernel)
        text = jax.jit(conv).lower(x, kernel).as_text()
    return y, grads, text


CONFIGS = [
    # x shape, kernel shape, strides, padding, dilation
    ((2, 15, 15, 32), (3, 3, 32, 64), (1, 1), "VALID", (1, 1)),  # the CIFAR net's conv2
    ((2, 8, 8, 4), (3, 3, 4, 6), (2, 1), "SAME", (1, 1)),  # stride per axis, SAME
    ((3, 10, 11, 2), (3, 3, 2, 4), (2, 3), ((1, 2), (0, 3)), (2, 1)),  # asymmetric + dilation
    ((1, 7, 9, 3), (3, 2, 3, 5), (1, 1), ((0, 0), (1, 1)), (1, 1)),  # non-square kernel
    ((2, 6, 6, 8), (1, 1, 8, 3), (1, 1), "VALID", (1, 1)),  # 1x1 kernel
    # 1x1 stride 2 with a row and a column no output reads (ResNet's option-B
    # shortcut on an even map): oneDNN's backward-weights gave wrong, run-to-run
    # different kernel gradients until the unread edge was cut off first.
    ((8, 34, 26, 4), (1, 1, 4, 8), (2, 2), "VALID", (1, 1)),
    ((2, 8, 9, 1), (1, 1, 1, 1), (2, 2), "VALID", (1, 1)),
    ((2, 11, 9, 3), (1, 3, 3, 4), (3, 2), ((0, 1), (1, 0)), (1, 1)),  # cut from the padding
    ((1, 8, 8, 2), (1, 1, 2, 3), (2, 2), ((0, 2), (0, 2)), (1, 1)),  # unread: padding only
]


def test_the_unread_edge_is_cut_from_the_high_padding_first():
    # 1x1 stride 2. Rows: 8 pixels + 2 of high padding, 5 outputs read 0, 2, ..., 8, so
    # the last padding row is unread. Columns: 34, no padding, 17 outputs read 0..32, so
    # the input's last column is. Then with 33 columns: only the padding row is unread.
    x, dy = jnp.zeros((1, 8, 34, 1)), jnp.zeros((1, 5, 17, 1))
    padding = ((0, 2), (0, 0))
    used_x, used_padding = ffi_conv._without_unread_edge(x, dy, (1, 1), (2, 2), padding, (1, 1))
    assert used_x.shape == (1, 8, 33, 1) and used_padding == ((0, 1), (0, 0))
    used_x, used_padding = ffi_conv._without_unread_edge(
        x[:, :, :33], dy, (1, 1), (2, 2), padding, (1, 1)
    )
    assert used_x.shape == (1, 8, 33, 1) and used_padding == ((0, 1), (0, 0))


@needs_onednn
@pytest.mark.parametrize("x_shape, k_shape, strides, padding, dilation", CONFIGS)
def test_float32_value_and_gradients_equal_lax(x_shape, k_shape, strides, padding, dilation):
    x, kernel = normal(0, x_shape), normal(1, k_shape)
    y, grads, text = conv_with("onednn", x, kernel, strides, padding, dilation)
    y_ref, grads_ref, text_ref = conv_with("xla", x, kernel, strides, padding, dilation)
    assert "jaxcnn_onednn" in text and "jaxcnn_onednn" not in text_ref
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-4)
    for got, want in zip(grads, grads_ref, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@needs_onednn
@pytest.mark.parametrize(
    ("config", "attribute"), [(CONFIGS[0], 1), (CONFIGS[1], 0)], ids=["winograd", "direct"]
)
def test_winograd_equals_lax_to_float32_rounding(config, attribute, monkeypatch):
    # CONFIGS[0] (3x3, stride 1, 32 -> 64 channels) asks oneDNN for Winograd F(4x4, 3x3);
    # CONFIGS[1] (stride 2, 4 channels) does not (winograd_pays), so it runs direct.
    x_shape, k_shape, strides, padding, dilation = config
    x, kernel = normal(0, x_shape), normal(1, k_shape)
    monkeypatch.setenv("JAXCNN_ONEDNN_ALGORITHM", "winograd")
    y, grads, text = conv_with("onednn", x, kernel, strides, padding, dilation)
    assert "jaxcnn_onednn" in text and f"algorithm = {attribute}" in text
    monkeypatch.delenv("JAXCNN_ONEDNN_ALGORITHM")
    y_ref, grads_ref, _ = conv_with("xla", x, kernel, strides, padding, dilation)
    # Winograd's transforms add rounding: measured near 4e-6 of the largest value.
    for got, want in zip((y, *grads), (y_ref, *grads_ref), strict=True):
        scale = float(jnp.abs(want).max())
        np.testing.assert_allclose(got, want, rtol=0, atol=3e-5 * scale)


@needs_onednn_bfloat16
def test_winograd_where_onednn_has_none_runs_direct():
    # bfloat16 has no Winograd kernel: the binding builds the direct primitive instead.
    x, kernel = normal(0, (2, 12, 12, 16), jnp.bfloat16), normal(1, (3, 3, 16, 16), jnp.bfloat16)
    geometry = ((1, 1), ((1, 1), (1, 1)), (1, 1))
    got = jax.jit(lambda a, b: ffi_conv._conv(a, b, *geometry, "winograd"))(x, kernel)
    want = jax.jit(lambda a, b: ffi_conv._conv(a, b, *geometry, "direct"))(x, kernel)
    np.testing.assert_array_equal(got.astype(jnp.float32), want.astype(jnp.float32))


@needs_onednn
def test_the_bfloat16_probe_agrees_with_the_cpu_flags():
    # oneDNN's bfloat16 convolutions need its avx512_core set (or AVX2-VNNI-2, whose
    # flags an AVX2-only CPU such as AMD's Zen 3 lacks too).
    _, flags = conv_backend.cpu_vendor_and_flags(conv_backend._cpuinfo_here())
    if flags >= conv_backend._AVX512_CORE:
        assert build.makes_bfloat16() and build.makes_bfloat16(on_main=True)
    elif not flags & {"avx_ne_convert", "avx_vnni_int8", "avx512f"}:
        assert not build.makes_bfloat16() and not build.makes_bfloat16(on_main=True)
    else:
        pytest.skip(f"no expectation written for these flags: {sorted(flags)}")


@needs_onednn
def test_bfloat16_stays_with_xla_where_onednn_has_no_kernels(monkeypatch):
    # As on an AVX2-only CPU: backend "onednn" keeps float32 on oneDNN, bfloat16 on lax.
    monkeypatch.setattr(build, "makes_bfloat16", lambda on_main=False: False)
    x, kernel = normal(0, (2, 8, 8, 4)), normal(1, (3, 3, 4, 6))
    *_, f32_text = conv_with("onednn", x, kernel, (1, 1), "SAME")
    x, kernel = x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
    y, grads, text = conv_with("onednn", x, kernel, (1, 1), "SAME")
    y_ref, grads_ref, _ = conv_with("xla", x, kernel, (1, 1), "SAME")
    assert "jaxcnn_onednn" in f32_text and "jaxcnn_onednn" not in text
    for got, want in zip((y, *grads), (y_ref, *grads_ref), strict=True):
        np.testing.assert_array_equal(got.astype(jnp.float32), want.astype(jnp.float32))


@needs_onednn
def test_a_bfloat16_call_where_onednn_has_no_kernels_says_so(monkeypatch):
    monkeypatch.setattr(build, "makes_bfloat16", lambda on_main=False: False)
    x, kernel = normal(0, (1, 6, 6, 4), jnp.bfloat16), normal(1, (3, 3, 4, 4), jnp.bfloat16)
    conv = jax.jit(lambda a, b: onednn.conv2d(a, b, (1, 1), ((1, 1), (1, 1))))
    with pytest.raises(build.OnednnUnavailable, match=r"no bfloat16 convolution kernels for"):
        conv.lower(x, kernel)


@needs_onednn
@pytest.mark.parametrize(
    "avx2_only, channels, dtype, routed",
    [
        (True, (16, 32), jnp.float32, True),
        (True, (32, 64), jnp.float32, False),  # wider than AVX2_ONEDNN_MAX_CHANNELS
        (True, (16, 32), jnp.bfloat16, True),  # in float32: no AVX2 bfloat16 kernels
        (False, (16, 32), jnp.float32, False),  # neither AVX-512 nor AVX2 (ARM)
    ],
)
def test_auto_sends_narrow_float32_convolutions_to_onednn_on_avx2_only_cpus(
    avx2_only, channels, dtype, routed, monkeypatch
):
    monkeypatch.setattr(conv_backend, "_onednn_preferred_here", lambda: False)
    monkeypatch.setattr(conv_backend, "avx2_without_avx512_here", lambda: avx2_only)
    monkeypatch.setenv("JAXCNN_WINOGRAD", "off")  # it takes 3x3 SAME ones from 16 channels
    x = normal(0, (2, 8, 8, channels[0]), dtype)
    kernel = normal(1, (3, 3, *channels), dtype)
    assert conv_backend.resolved_backend() == "xla"  # batch splits and the rest as XLA's
    y, grads, text = conv_with("auto", x, kernel, (1, 1), "SAME")
    assert ("jaxcnn_onednn" in text) is routed
    assert "jaxcnn_onednn" not in conv_with("xla", x, kernel, (1, 1), "SAME")[2]
    if routed:
        y_ref, grads_ref, _ = conv_with("xla", x, kernel, (1, 1), "SAME")
        for got, want in zip((y, *grads), (y_ref, *grads_ref), strict=True):
            assert got.dtype == want.dtype == dtype
            got, want = got.astype(jnp.float32), want.astype(jnp.float32)
            scale = 1e-5 if dtype == jnp.float32 else 2.0**-7 * float(jnp.abs(want).max())
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=max(1e-4, scale))
    if routed and dtype == jnp.bfloat16:  # computed in float32 by oneDNN, rounded once
        assert "jaxcnn_onednn_conv_forward" in text and "bf16" in text


def test_algorithm_names_are_validated_with_the_valid_ones():
    x, kernel = jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 4))
    with pytest.raises(ValueError, match=r"algorithm='fft'; valid: auto, direct, winograd"):
        onednn.conv2d(x, kernel, (1, 1), ((0, 0), (0, 0)), algorithm="fft")


SAME = ((1, 1), (1, 1))


@pytest.mark.parametrize(
    "channels, algorithm, expected",
    [
        ((64, 256), "auto", "winograd"),  # the fast CIFAR net's wide layers
        ((32, 64), "auto", "direct"),  # the teaching nets' conv2
        ((32, 64), "winograd", "winograd"),
        ((8, 64), "winograd", "direct"),  # too few channels for Winograd's tiles
        ((64, 256), "direct", "direct"),
    ],
)
def test_which_convolutions_run_winograd(channels, algorithm, expected):
    x_shape, k_shape = (32, 16, 16, channels[0]), (3, 3, *channels)
    resolve = ffi_conv.resolve_algorithm
    assert resolve(algorithm, x_shape, k_shape, (1, 1), SAME, (1, 1)) == expected
    # Stride 2 never does.
    assert resolve(algorithm, x_shape, k_shape, (2, 2), SAME, (1, 1)) == "direct"


@pytest.mark.parametrize(
    "batch, size, channels, expected",
    [
        (32, 8, 64, "direct"),  # ResNet-20's third stage at batch 32: 128 tiles, Winograd x0.7
        (64, 8, 64, "direct"),  # 256 tiles x 64 channels: x0.92-1.00
        (128, 8, 64, "winograd"),  # 512 x 64 = 32,768: x1.02-1.05, batch 128 as before
        (64, 3, 256, "direct"),  # the fast CIFAR net's 3 x 3 map: one tile an image
        (128, 3, 256, "winograd"),
        (32, 7, 256, "winograd"),  # 4 tiles an image, 256 channels: x1.18-1.23
    ],
)
def test_auto_takes_winograd_only_on_enough_tiles(batch, size, channels, expected):
    x_shape, k_shape = (batch, size, size, channels), (3, 3, channels, channels)
    assert ffi_conv.resolve_algorithm("auto", x_shape, k_shape, (1, 1), SAME, (1, 1)) == expected
    # An explicit "winograd" still takes every one.
    assert ffi_conv.resolve_algorithm("winograd", x_shape, k_shape, (1, 1), SAME, (1, 1)) == (
        "winograd"
    )


@pytest.mark.parametrize(
    "variable, read, bad, spelled, default",
    [
        ("JAXCNN_ONEDNN_ALGORITHM", conv_backend.onednn_algorithm, "fft", "winograd", "auto"),
        ("JAXCNN_ONEDNN_OVERLAP", build.overlap_policy, "parallel", "single", "wait"),
        (
            "JAXCNN_ONEDNN_KERNEL_GRAD",
            lambda: ffi_conv.kernel_grad_method(
                (1, 6, 6, 4), (3, 3, 4, 4), "bfloat16", (1, 1), ((0, 0), (0, 0)), (1, 1)
            ),
            "transposed",
            "direct",
            "swapped",
        ),
        (
            "JAXCNN_ONEDNN_FORWARD",
            lambda: ffi_conv.forward_method(
                (1, 6, 6, 4), (3, 3, 4, 4), (1, 1), ((1, 1), (1, 1)), (1, 1), "direct"
            ),
            "swapped",
            "direct",
            "transposed",
        ),
    ],
)
def test_onednn_settings_are_validated_with_the_valid_ones(
    monkeypatch, variable, read, bad, spelled, default
):
    monkeypatch.setenv(variable, bad)
    with pytest.raises(ValueError, match=rf"{variable}='{bad}'; valid: "):
        read()
    monkeypatch.setenv(variable, f" {spelled.title()} ")
    assert read() == spelled
    monkeypatch.delenv(variable)
    assert read() == default


TRANSPOSABLE = [
    # stride 1, padding within the kernel's extent less one: each CONFIGS kind, and more
    ((2, 10, 10, 16), (3, 3, 16, 16), (1, 1), ((1, 1), (1, 1)), (1, 1)),  # ResNet-20's
    ((3, 12, 7, 5), (3, 5, 5, 7), (1, 1), ((0, 2), (1, 3)), (1, 1)),  # asymmetric
    ((1, 13, 13, 4), (3, 3, 4, 8), (1, 1), ((2, 1), (0, 2)), (2, 2)),  # dilated
    CONFIGS[3],  # non-square kernel
    CONFIGS[4],  # 1x1
]


@needs_onednn
@pytest.mark.parametrize("dtype", [jnp.float32, BFLOAT16])
@pytest.mark.parametrize("x_shape, k_shape, strides, padding, dilation", TRANSPOSABLE)
def test_the_transposed_forward_equals_lax(
    x_shape, k_shape, strides, padding, dilation, dtype, monkeypatch
):
    # The binding's taps flipped and channels exchanged through its gather table: a tap
    # or channel in the wrong place would be off by the values themselves, not rounding.
    x, kernel = normal(0, x_shape, dtype), normal(1, k_shape, dtype)
    monkeypatch.setenv("JAXCNN_ONEDNN_FORWARD", "transposed")
    y, _, text = conv_with("onednn", x, kernel, strides, padding, dilation)
    assert "conv_forward" in text and "algorithm = 2" in text  # either library's target
    y_ref, _, _ = conv_with("xla", x, kernel, strides, padding, dilation)
    scale = float(jnp.abs(y_ref.astype(jnp.float32)).max())
    tolerance = 1e-5 if dtype == jnp.float32 else 0.02  # float32 / bfloat16 rounding
    np.testing.assert_allclose(
        y.astype(jnp.float32), y_ref.astype(jnp.float32), rtol=0, atol=tolerance * scale
    )


@needs_onednn
def test_the_binding_runs_a_transposed_forward_it_cannot_take_direct():
    # Asked for the transposed forward of a strided convolution (forward_method never
    # asks), the binding builds the direct primitive instead, like Winograd's fallback.
    x_shape, k_shape, strides, padding, _ = CONFIGS[1]
    x, kernel = normal(0, x_shape), normal(1, k_shape)
    pairs = ((0, 1), (0, 1))  # SAME for 8 -> 4 at stride 2 with a 3x3 kernel
    out = jax.ShapeDtypeStruct(
        ffi_conv.output_shape(x_shape, k_shape, strides, pairs, (1, 1)), x.dtype
    )
    got = ffi_conv._call(
        "jaxcnn_onednn_conv_forward", out, x, kernel, strides, pairs, (1, 1), "transposed"
    )
    want = lax.conv_general_dilated(x, kernel, strides, pairs, dimension_numbers=NHWC)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "k_shape, strides, padding, algorithm, expected",
    [
        ((3, 3, 16, 16), (1, 1), ((1, 1), (1, 1)), "direct", "transposed"),  # few out
        ((3, 3, 3, 32), (1, 1), ((0, 0), (0, 0)), "direct", "transposed"),  # narrow in
        ((3, 3, 8, 32), (1, 1), ((1, 1), (1, 1)), "direct", "direct"),
        ((3, 3, 3, 64), (1, 1), ((1, 1), (1, 1)), "direct", "direct"),
        ((3, 3, 16, 16), (2, 2), ((1, 1), (1, 1)), "direct", "direct"),  # strided
        ((3, 3, 16, 16), (1, 1), ((3, 0), (0, 0)), "direct", "direct"),  # pad > extent - 1
        ((3, 3, 16, 16), (1, 1), ((1, 1), (1, 1)), "winograd", "direct"),
    ],
)
def test_which_forward_passes_auto_transposes(k_shape, strides, padding, algorithm, expected):
    x_shape = (8, 16, 16, k_shape[2])
    method = ffi_conv.forward_method(x_shape, k_shape, strides, padding, (1, 1), algorithm)
    assert method == expected


# Kernels up to 1 MB reach oneDNN's blocked layouts through the binding's gather table,
# larger ones through oneDNN's own reorder (onednn_conv.cc, GatherTable): one of each.
# 5x5: float32 3x3 kernels this wide run as Winograd, whose rounding this test's
# tolerance is not for.
ABOVE_THE_GATHER_TABLE = ((1, 6, 6, 128), (5, 5, 128, 128), (1, 1), "SAME", (1, 1))  # 1.6 MB


@needs_onednn
def test_a_kernel_above_the_gather_table_still_equals_lax():
    x_shape, k_shape, strides, padding, dilation = ABOVE_THE_GATHER_TABLE
    x, kernel = normal(0, x_shape), normal(1, k_shape)
    y, grads, text = conv_with("onednn", x, kernel, strides, padding, dilation)
    y_ref, grads_ref, _ = conv_with("xla", x, kernel, strides, padding, dilation)
    assert "jaxcnn_onednn" in text
    # Sums of 3,200 products (~40 in size) in another order: 1e-3 absolute is float32
    # rounding; a kernel element in the wrong place would be off by the values themselves.
    for got, want in zip((y, *grads), (y_ref, *grads_ref), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


BFLOAT16_CONFIGS = [
    ((2, 12, 12, 16), (3, 3, 16, 8), (1, 1), "SAME"),
    ((2, 15, 15, 32), (3, 3, 32, 64), (1, 1), "VALID"),  # the CIFAR net's conv2
    ((2, 32, 32, 3), (3, 3, 3, 32), (1, 1), "VALID"),  # 3 channels in: a padded layout
    ((2, 16, 16, 12), (2, 2, 12, 128), (1, 1), "VALID"),  # the space-to-depth conv1
    ((1, 4, 4, 128), (3, 3, 128, 512), (1, 1), "SAME"),  # 1.2 MB: oneDNN's reorder
]


@needs_onednn_bfloat16
@pytest.mark.parametrize("x_shape, k_shape, strides, padding", BFLOAT16_CONFIGS)
def test_bfloat16_matches_lax_to_bfloat16_rounding(x_shape, k_shape, strides, padding):
    x, kernel = normal(0, x_shape, jnp.bfloat16), normal(1, k_shape, jnp.bfloat16)
    y, grads, text = conv_with("onednn", x, kernel, strides, padding)
    y_ref, grads_ref, _ = conv_with("xla", x, kernel, strides, padding)
    assert "jaxcnn_onednn" in text and y.dtype == jnp.bfloat16
    # Both accumulate in float32; they differ only in where the bfloat16 rounding falls:
    # a few rounding steps (2^-8 of the value) of the largest output.
    scale = float(jnp.abs(y_ref.astype(jnp.float32)).max())
    np.testing.assert_allclose(y.astype(jnp.float32), y_ref.astype(jnp.float32), atol=0.02 * scale)
    for got, want in zip(grads, grads_ref, strict=True):
        scale = float(jnp.abs(want.astype(jnp.float32)).max())
        np.testing.assert_allclose(
            got.astype(jnp.float32), want.astype(jnp.float32), atol=0.02 * scale
        )


# Maps no wider than the stride: oneDNN 3.2's bfloat16 backward-weights left part of
# these kernel gradients unwritten (ffi_conv.kernel_grad_dtype).
NARROW_STRIDED_CONFIGS = [
    ((2, 7, 1, 16), (3, 3, 16, 16), (2, 2), ((1, 1), (1, 1))),  # a residual block on 7 x 1
    ((2, 1, 1, 8), (5, 5, 8, 4), (2, 2), ((2, 2), (2, 2))),
    ((2, 6, 2, 3), (2, 2, 3, 1), (1, 2), ((0, 0), (1, 0))),
]


@needs_onednn_bfloat16
def test_bfloat16_kernel_gradients_over_maps_narrower_than_the_stride(fresh_python):
    # glibc's MALLOC_PERTURB_ fills fresh memory with a pattern: a kernel gradient the
    # binding leaves partly unwritten then comes out wrong every time, not only after
    # other calls (in a fresh process such memory is zeros, and right by luck).
    worst = fresh_python(
        f"""
        import jax, jax.numpy as jnp, numpy as np
        from jaxcnn import conv_backend
        worst = 0.0
        for x_shape, k_shape, strides, padding in {NARROW_STRIDED_CONFIGS!r}:
            x = jax.random.normal(jax.random.key(0), x_shape).astype(jnp.bfloat16)
            k = jax.random.normal(jax.random.key(1), k_shape).astype(jnp.bfloat16)
            def loss(k, x=x, strides=strides, padding=padding, conv=None):
                y = conv(x, k, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
                y = y.astype(jnp.float32)
                return jnp.sum(y * jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape))
            with conv_backend.use_conv_backend("onednn"):
                got = jax.jit(jax.grad(loss), static_argnames="conv")(
                    k, conv=conv_backend.conv_general_dilated)
            exact = jax.grad(loss)(k.astype(jnp.float32), x=x.astype(jnp.float32),
                                   conv=jax.lax.conv_general_dilated)
            error = np.linalg.norm(np.asarray(got, np.float64) - np.asarray(exact))
            worst = max(worst, float(error / np.linalg.norm(np.asarray(exact))))
        print(worst)
        """,
        MALLOC_PERTURB_="165",
    )
    assert float(worst) < 0.02  # bfloat16 rounding; the unwritten gradients were 0.5-1e36


needs_onednn3 = pytest.mark.skipif(
    not onednn.available() or not build.onednn3_serves(jnp.bfloat16),
    reason=f"no second (oneDNN 3) library: {build._load_onednn3()}",
)
needs_both_bfloat16 = pytest.mark.skipif(
    not build.makes_bfloat16() or not build.makes_bfloat16(on_main=True),
    reason="oneDNN has no bfloat16 convolution kernels on this CPU (needs AVX-512)",
)


@needs_onednn3
@needs_both_bfloat16
def test_bfloat16_runs_on_onednn3_beside_the_main_library(monkeypatch):
    x, kernel = normal(0, (2, 12, 12, 16), jnp.bfloat16), normal(1, (3, 3, 16, 8), jnp.bfloat16)
    # As on AMX, where every bfloat16 gradient runs on 3.2 (without it narrow input
    # gradients stay on the main library: the test below).
    monkeypatch.setattr(conv_backend, "amx_here", lambda: True)
    runs = {}
    for choice in ("auto", "main"):
        monkeypatch.setenv("JAXCNN_ONEDNN_BFLOAT16", choice)
        runs[choice] = conv_with("onednn", x, kernel, (1, 1), "SAME")
        with conv_backend.use_conv_backend("onednn"):
            step = jax.grad(
                lambda a, b: (
                    conv_backend.conv_general_dilated(a, b, (1, 1), "SAME", dimension_numbers=NHWC)
                    .astype(jnp.float32)
                    .sum()
                ),
                (0, 1),
            )
            runs[choice] = (*runs[choice], jax.jit(step).lower(x, kernel).as_text())
    # auto: the bfloat16 gradients on oneDNN 3; main: none. float32 stays on the main one.
    assert runs["auto"][3].count("jaxcnn_onednn3_conv_input_grad") == 1
    assert runs["auto"][3].count("jaxcnn_onednn3_conv_kernel_grad") == 1
    assert "jaxcnn_onednn3_conv_forward" in runs["auto"][2]
    assert "jaxcnn_onednn3" not in runs["main"][2] + runs["main"][3]
    assert "jaxcnn_onednn_conv_kernel_grad" in runs["main"][3]
    monkeypatch.setenv("JAXCNN_ONEDNN_BFLOAT16", "auto")
    f32 = conv_with("onednn", x.astype(jnp.float32), kernel.astype(jnp.float32), (1, 1), "SAME")
    assert "jaxcnn_onednn3" not in f32[2]
    assert build.onednn_versions()["onednn3"].startswith("3.")
    assert not build.onednn_versions()["main"].startswith("3.")
    # The two oneDNNs sum in other orders: one bfloat16 rounding step of the largest value.
    auto, main = runs["auto"], runs["main"]
    for got, want in zip((auto[0], *auto[1]), (main[0], *main[1]), strict=True):
        got, want = got.astype(jnp.float32), want.astype(jnp.float32)
        np.testing.assert_allclose(got, want, atol=2.0**-7 * float(jnp.abs(want).max()))


@needs_onednn3
@needs_both_bfloat16
@pytest.mark.parametrize(
    "channels, amx, library",
    [
        ((16, 32), False, "jaxcnn_onednn"),  # ResNet-20's stride-2 layer, smaller
        ((16, 32), True, "jaxcnn_onednn3"),
        ((16, 128), False, "jaxcnn_onednn3"),
    ],
)
def test_narrow_bfloat16_input_gradients_run_on_the_main_library_without_amx(
    monkeypatch, channels, amx, library
):
    # oneDNN 3.2's backward data is the slow one below 128 channels without AMX
    # (main_library_pays); the forward stays on 3.2.
    x = normal(0, (2, 12, 12, channels[0]), jnp.bfloat16)
    kernel = normal(1, (3, 3, *channels), jnp.bfloat16)
    geometry = ((2, 2), ((1, 1), (1, 1)))
    monkeypatch.setattr(conv_backend, "amx_here", lambda: amx)
    monkeypatch.setenv("JAXCNN_ONEDNN_BFLOAT16", "auto")
    y, grads, conv_text = conv_with("onednn", x, kernel, *geometry)
    with conv_backend.use_conv_backend("onednn"):
        loss = lambda a, b: (  # noqa: E731
            conv_backend.conv_general_dilated(a, b, *geometry, dimension_numbers=NHWC)
            .astype(jnp.float32)
            .sum()
        )
        text = jax.jit(jax.grad(loss, (0, 1))).lower(x, kernel).as_text()
    assert text.count(f"{library}_conv_input_grad") == 1
    assert "jaxcnn_onednn3_conv_forward" in conv_text
    y_ref, grads_ref, _ = conv_with("xla", x, kernel, *geometry)
    for got, want in zip((y, *grads), (y_ref, *grads_ref), strict=True):
        got, want = got.astype(jnp.float32), want.astype(jnp.float32)
        np.testing.assert_allclose(got, want, atol=0.02 * float(jnp.abs(want).max()))


def test_bfloat16_switch_is_validated(monkeypatch):
    monkeypatch.setenv("JAXCNN_ONEDNN_BFLOAT16", "v3")
    with pytest.raises(ValueError, match=r"JAXCNN_ONEDNN_BFLOAT16='v3'; valid: auto, main"):
        build.onednn3_serves(jnp.bfloat16)


def test_the_main_library_prefers_the_given_root_then_the_systems(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXCNN_ONEDNN_ROOT", str(tmp_path))
    assert build.main_root() == str(tmp_path)
    assert f"-I{tmp_path}/include" in build.compile_command(tmp_path / "x.so")
    monkeypatch.delenv("JAXCNN_ONEDNN_ROOT")
    monkeypatch.setattr(build, "SYSTEM_HEADERS", (tmp_path / "none.hpp",))
    pip = build.pip_onednn_root()
    assert build.main_root() == (None if pip is None else str(pip))
    monkeypatch.setattr(build, "SYSTEM_HEADERS", (tmp_path,))  # exists: the system's
    assert build.main_root() is None


@needs_onednn
@pytest.mark.parametrize("method", ["swapped", "mosaic"])
@pytest.mark.parametrize("dtype", [jnp.float32, BFLOAT16])
@pytest.mark.parametrize(
    "x_shape, k_shape, padding",
    [
        ((4, 6, 6, 16), (3, 3, 16, 8), "VALID"),
        ((3, 4, 5, 6), (3, 2, 6, 5), ((1, 1), (2, 0))),  # mosaic: no grid divides 3
        ((8, 5, 7, 16), (3, 2, 16, 8), ((1, 1), (2, 0))),  # mosaic: 2 x 4 of 7 x 9
        ((4, 7, 7, 16), (3, 3, 16, 8), "SAME"),  # mosaic: 2 x 2 of 9 x 9
    ],
)
def test_swapped_and_mosaic_kernel_gradients_equal_backward_weights(
    monkeypatch, method, dtype, x_shape, k_shape, padding
):
    x, kernel = normal(0, x_shape, dtype), normal(1, k_shape, dtype)
    grads = {}
    for name in ("direct", method):
        monkeypatch.setenv("JAXCNN_ONEDNN_KERNEL_GRAD", name)
        _, grads[name], _ = conv_with("onednn", x, kernel, (1, 1), padding)
    want_dx, want_dk = (g.astype(jnp.float32) for g in grads["direct"])
    got_dx, got_dk = (g.astype(jnp.float32) for g in grads[method])
    np.testing.assert_array_equal(got_dx, want_dx)  # the input gradient is unchanged
    # The same sums, accumulated in another order: float32 rounding, or one bfloat16 step.
    tolerance = 1e-5 if dtype == jnp.float32 else 2.0**-7
    np.testing.assert_allclose(got_dk, want_dk, atol=tolerance * float(jnp.abs(want_dk).max()))


@pytest.mark.parametrize(
    "x_shape, dtype, strides, expected",
    [
        ((128, 6, 6, 64), "bfloat16", (1, 1), "swapped"),  # 4x4 outputs: the CIFAR net's conv3
        ((128, 6, 6, 64), "float32", (1, 1), "direct"),  # slower in float32
        ((128, 10, 10, 64), "bfloat16", (1, 1), "direct"),  # 8x8: ResNet-20's step lost
        ((128, 9, 9, 64), "bfloat16", (2, 2), "direct"),  # strided: not swapped
    ],
)
def test_which_kernel_gradients_auto_swaps(monkeypatch, x_shape, dtype, strides, expected):
    monkeypatch.delenv("JAXCNN_ONEDNN_KERNEL_GRAD", raising=False)
    valid = ((0, 0), (0, 0))
    # On AMX: no "pairs" (which tests/test_kernel_grad_pairs.py covers).
    method = ffi_conv.kernel_grad_method(
        x_shape, (3, 3, 64, 64), dtype, strides, valid, (1, 1), amx=True
    )
    assert method == expected


@pytest.mark.parametrize(
    "x_shape, channels, expected",
    [
        ((128, 7, 7, 256), (256, 256), "mosaic"),  # the fast CIFAR net's 7 x 7 layers
        ((128, 11, 11, 128), (128, 128), "mosaic"),  # 121 pixels, 128 channels
        ((128, 12, 12, 256), (256, 256), "direct"),  # 144 pixels: lost alone
        ((128, 7, 7, 64), (64, 64), "direct"),  # 64 channels: even alone
        ((128, 7, 7, 256), (256, 64), "direct"),
        ((127, 7, 7, 256), (256, 256), "direct"),  # no grid divides the batch
        ((128, 4, 4, 256), (256, 256), "swapped"),  # 16 pixels: swapped as before
    ],
)
def test_which_kernel_gradients_auto_tiles(monkeypatch, x_shape, channels, expected):
    monkeypatch.delenv("JAXCNN_ONEDNN_KERNEL_GRAD", raising=False)
    same, k_shape = ((1, 1), (1, 1)), (3, 3, *channels)
    # Mosaics only with AMX: without it they lost alone (Zen 5, docs/perf_notes.md item 63).
    # Without AMX and without AVX-512 BF16 (no "pairs", item 66).
    without_amx = "direct" if expected == "mosaic" else expected
    for dtype, amx, want in (
        ("bfloat16", True, expected),
        ("bfloat16", False, without_amx),
        ("float32", True, "direct"),
    ):
        method = ffi_conv.kernel_grad_method(
            x_shape, k_shape, dtype, (1, 1), same, (1, 1), amx, avx512_bf16=False
        )
        assert method == want, (dtype, amx)


@pytest.mark.parametrize("amx", [True, False])
@pytest.mark.parametrize("avx512_bf16", [True, False])
def test_auto_asks_the_cpu_for_amx_and_the_build_for_pairs_unless_told(
    monkeypatch, amx, avx512_bf16
):
    monkeypatch.delenv("JAXCNN_ONEDNN_KERNEL_GRAD", raising=False)
    monkeypatch.setattr(conv_backend, "amx_here", lambda: amx)
    monkeypatch.setattr(build, "kernel_grad_pairs_built", lambda: avx512_bf16)
    same = ((1, 1), (1, 1))
    method = ffi_conv.kernel_grad_method(
        (128, 7, 7, 256), (3, 3, 256, 256), "bfloat16", (1, 1), same, (1, 1)
    )
    assert method == ("mosaic" if amx else "pairs" if avx512_bf16 else "direct")


@needs_onednn
def test_vmap_runs_per_example_gradients():
    x, kernel = normal(0, (3, 1, 6, 6, 2)), normal(1, (3, 3, 2, 4))

    def loss(backend):
        def one(example, k):
            y = conv_backend.conv_general_dilated(example, k, (1, 1), "VALID",
                                                  dimension_numbers=NHWC)  # fmt: skip
            return jnp.sum(y**2)

        with conv_backend.use_conv_backend(backend):
            return jax.jit(jax.vmap(jax.grad(one, 1), in_axes=(0, None)))(x, kernel)

    np.testing.assert_allclose(loss("onednn"), loss("xla"), rtol=1e-5, atol=1e-4)


@needs_onednn
def test_train_step_of_the_mnist_net_equals_xla():
    from jaxcnn import models

    model = models.get("mnist_cnn")
    x, labels = normal(0, (4, 28, 28, 1)), jnp.arange(4) % 10
    params = model.init(jax.random.key(0), x)["params"]

    def loss(p):
        logits = model.apply({"params": p}, x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

    results = {}
    for backend in ("onednn", "xla"):
        with conv_backend.use_conv_backend(backend):
            step = jax.jit(jax.value_and_grad(loss))
            results[backend] = step(params)
            results[backend + " hlo"] = step.lower(params).as_text().count("jaxcnn_onednn")
    assert results["onednn hlo"] >= 2 and results["xla hlo"] == 0
    (value, grads), (value_ref, grads_ref) = results["onednn"], results["xla"]
    np.testing.assert_allclose(value, value_ref, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 grads, grads_ref)  # fmt: skip


@pytest.fixture(params=build.OVERLAP_POLICIES)
def overlap(request):
    """Each overlap policy in turn, set in the loaded library (as build.py does at load)."""
    library = ctypes.CDLL(str(build.library_path()))  # the already loaded library
    library.JaxcnnOnednnSetOverlap(ctypes.c_int64(request.param == "single"))
    yield request.param
    library.JaxcnnOnednnSetOverlap(ctypes.c_int64(build.overlap_policy() == "single"))


@needs_onednn
def test_concurrent_calls_on_xla_threads_are_repeatable_and_equal_xla(overlap):
    """Six independent forward passes (test-time augmentation) run on XLA's threads at once.

    Under oneDNN's default scratchpad, cached primitives shared one buffer per thread:
    repeated calls differed by about 1 and now and then gave logits of 1e35. Under each
    overlap policy: ``wait`` serialises the calls, ``single`` runs them side by side.
    """
    from jaxcnn import models
    from jaxcnn.train.tta import tta_logits

    model = models.get("fast_cifar", widths=(16, 32, 32))
    images = jax.random.uniform(jax.random.key(0), (128, 32, 32, 3))
    variables = model.init(jax.random.key(1), images[:1])

    def logits(v, x):
        return tta_logits(lambda view: model.apply(v, view), x, "flip_translate")

    results = {}
    for backend, repeats in (("onednn", 8), ("xla", 1)):  # XLA's is only the reference
        with conv_backend.use_conv_backend(backend):
            step = jax.jit(logits)
            results[backend] = [np.asarray(step(variables, images)) for _ in range(repeats)]
    for repeat in results["onednn"][1:]:
        np.testing.assert_array_equal(repeat, results["onednn"][0])
    np.testing.assert_allclose(results["onednn"][0], results["xla"][0], rtol=1e-4, atol=1e-4)


@needs_onednn
@pytest.mark.parametrize(
    "case",
    ["grouped", "nchw", "lhs_dilation", "negative_padding", "float32_result_from_bfloat16", "1d"],
)
def test_calls_oneDNN_cannot_take_fall_back_to_lax(case):
    x, kernel = normal(0, (2, 8, 8, 4)), normal(1, (3, 3, 4, 6))
    kwargs = {"dimension_numbers": NHWC}
    padding = "VALID"
    if case == "grouped":
        kernel, kwargs["feature_group_count"] = normal(1, (3, 3, 2, 6)), 2
    elif case == "nchw":
        x, kwargs["dimension_numbers"] = normal(0, (2, 4, 8, 8)), ("NCHW", "HWIO", "NCHW")
    elif case == "lhs_dilation":  # lax takes no padding string with it
        kwargs["lhs_dilation"], padding = (2, 2), ((0, 0), (0, 0))
    elif case == "negative_padding":  # at the high edge: a low one is cropped first (it runs)
        padding = ((0, -1), (0, 0))
    elif case == "float32_result_from_bfloat16":
        x, kernel = x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
        kwargs["preferred_element_type"] = jnp.float32
    elif case == "1d":
        x, kernel, kwargs["dimension_numbers"] = normal(0, (2, 4, 8)), normal(1, (6, 4, 3)), None

    def conv(impl):
        return lambda a, b: impl(a, b, (1,) * (x.ndim - 2), padding, **kwargs)

    with conv_backend.use_conv_backend("onednn"):
        routed = jax.jit(conv(conv_backend.conv_general_dilated))
        assert "jaxcnn_onednn" not in routed.lower(x, kernel).as_text()
        got, want = routed(x, kernel), conv(lax.conv_general_dilated)(x, kernel)
        assert got.dtype == want.dtype
        np.testing.assert_allclose(got.astype(jnp.float32), want.astype(jnp.float32),
                                   rtol=1e-5, atol=1e-5)  # fmt: skip


def test_backend_names_are_validated_with_the_valid_ones(monkeypatch):
    with pytest.raises(ValueError, match=r"conv_backend='mkl'; valid: auto, xla, onednn"):
        conv_backend.set_conv_backend("mkl")
    monkeypatch.setenv("JAXCNN_CONV_BACKEND", "fast")
    with pytest.raises(ValueError, match=r"JAXCNN_CONV_BACKEND='fast'; valid: auto"):
        conv_backend.conv_backend()
    monkeypatch.setenv("JAXCNN_CONV_BACKEND", "XLA")
    assert conv_backend.conv_backend() == "xla"
    assert conv_backend.resolved_backend() == "xla"


ZEN4 = (
    "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nflags\t\t: fpu avx2 fma "
    "avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl avx512_bf16\n"
)
ZEN3 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nflags\t\t: fpu avx2 fma\n"
XEON_AVX2 = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 fma\n"


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        (ZEN4, True),  # measured: item 33 of docs/perf_notes.md
        (XEON_AVX2, True),  # Intel, as before
        (ZEN3, False),  # AVX2-only AMD: not measured, XLA stays
        (ZEN3.replace("avx2 fma", "avx2 fma avx512f"), False),  # avx512f alone is not enough
        ("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd sve\n", False),  # ARM
        ("", False),
    ],
)
def test_auto_prefers_onednn_on_intel_and_avx512_cpus(cpuinfo, expected):
    assert conv_backend.onednn_preferred(cpuinfo) is expected


def test_auto_reads_only_the_first_processors_lines():
    second = ZEN3.replace("processor\t: 0", "processor\t: 1")
    assert conv_backend.onednn_preferred(ZEN4 + "\n" + second)
    assert not conv_backend.onednn_preferred(ZEN3 + "\n" + ZEN4.replace(": 0", ": 1", 1))


def test_set_and_context_restore_the_previous_choice(monkeypatch):
    monkeypatch.delenv("JAXCNN_CONV_BACKEND", raising=False)
    conv_backend.set_conv_backend("xla")
    try:
        with conv_backend.use_conv_backend("auto"):
            assert conv_backend.conv_backend() == "auto"
        assert conv_backend.conv_backend() == "xla"
    finally:
        conv_backend.set_conv_backend(None)
    assert conv_backend.conv_backend() == "auto"


def test_onednn_conv2d_rejects_bad_arguments_by_name():
    x, kernel = jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 4))
    with pytest.raises(ValueError, match=r"kernel input channels 3 != x channels 2"):
        onednn.conv2d(x, jnp.ones((3, 3, 3, 4)), (1, 1), ((0, 0), (0, 0)))
    with pytest.raises(ValueError, match=r"strides must be two positive ints, got \(0, 1\)"):
        onednn.conv2d(x, kernel, (0, 1), ((0, 0), (0, 0)))
    with pytest.raises(ValueError, match=r"padding must be two non-negative"):
        onednn.conv2d(x, kernel, (1, 1), ((0, -1), (0, 0)))
    with pytest.raises(ValueError, match=r"does not fit the padded input"):
        onednn.conv2d(x, jnp.ones((7, 7, 2, 4)), (1, 1), ((0, 0), (0, 0)))
    with pytest.raises(ValueError, match=r"share a dtype, float32 or bfloat16"):
        onednn.conv2d(x.astype(jnp.float16), kernel.astype(jnp.float16), (1, 1), ((0, 0),) * 2)


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")
def test_a_failed_build_says_why_and_leaves_no_library(tmp_path, monkeypatch):
    broken = tmp_path / "onednn_conv.cc"
    broken.write_text("#include <oneapi/dnnl/dnnl.hpp>\nint broken( {\n")
    cache = tmp_path / "cache"
    monkeypatch.setattr(build, "SOURCES", (broken,))
    monkeypatch.setenv("JAXCNN_CACHE_DIR", str(cache))
    with pytest.raises(build.OnednnUnavailable, match=r"building onednn_conv.cc failed"):
        build.library_path()
    left = [f.name for f in cache.iterdir() if not f.name.endswith(".lock")]
    assert left == []  # neither the library nor its partial file (the build's lock stays)


@needs_onednn
@pytest.mark.parametrize("module", [ffi_conv, build, conv_backend], ids=lambda m: m.__name__)
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0


@needs_onednn
def test_forward_mode_raises_under_onednn_and_works_under_xla():
    x, kernel = normal(0, (1, 5, 5, 2)), normal(1, (3, 3, 2, 3))

    def conv(k):
        return conv_backend.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=NHWC)

    with conv_backend.use_conv_backend("onednn"), pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(conv, (kernel,), (kernel,))
    with conv_backend.use_conv_backend("xla"):
        _, tangent = jax.jvp(conv, (kernel,), (kernel,))
    np.testing.assert_allclose(tangent, conv(kernel), rtol=1e-5, atol=1e-5)  # linear in k
