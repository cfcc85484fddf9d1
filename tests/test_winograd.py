"""``jaxcnn.winograd``: 3x3 stride-1 float32 convolutions as Winograd F(4x4, 3x3), by
the fused kernels and by the unfused transforms with XLA's dots, and the rule by which
``conv_backend`` sends calls to it (``JAXCNN_WINOGRAD``).

Values and both gradients are held against the definition (pad, then a VALID
``lax.conv_general_dilated``: ``conftest.conv_by_definition``) relative to the largest
entry (F(4x4, 3x3) rounds differently: about 1e-5 in float32). The kernels' tests need
the binding and skip with its reason where it does not build; the routing rule and the
argument checks are tested everywhere.
"""

from __future__ import annotations

import doctest
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import conv_by_definition
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jaxcnn import conv_backend, winograd
from jaxcnn.onednn import build

needs_native = pytest.mark.skipif(
    not build.available(), reason=f"binding unavailable: {build.unavailable_reason()}"
)
DIMS = ("NHWC", "HWIO", "NHWC")
TOLERANCE = 5e-5  # of the largest entry; measured 1e-6 .. 1.4e-5


def direct(x, w, padding="SAME"):
    """The definition (``conv_by_definition``) under any padding ``conv3x3`` takes."""
    return conv_by_definition(x, w, winograd.explicit_padding(x.shape[1:3], padding))


def value_and_grads(conv, x, w, g):
    y, vjp = jax.vjp(conv, x, w)
    return (y, *vjp(g))


def relative_error(a, b) -> float:
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))


def operands(n, h, w, c, k, seed=0, out=None):
    kx, kw, kg = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(kx, (n, h, w, c))
    kernel = jax.random.normal(kw, (3, 3, c, k)) * (2 / (9 * c)) ** 0.5
    return x, kernel, jax.random.normal(kg, (n, *(out or (h, w)), k))


# Edges of the tiling: sides below, at and above multiples of 4, a single pixel, a channel
# count past the kernels' 64-channel blocks on either side (70 in, 130 out). For the
# fused kernels also: channels that are multiples of 8 (their eight-lane transforms) or
# not, 8, 16 and 24 outputs (one, two, three lanes of the products), and 40 tiles of 16
# -> 16 channels: one block of tiles whose rows are not a multiple of 6.
SHAPES = [
    (2, 5, 5, 3, 4),
    (1, 1, 1, 2, 3),
    (3, 8, 6, 5, 7),
    (2, 7, 9, 70, 130),
    (1, 4, 13, 8, 2),
    (2, 9, 7, 16, 24),
    (2, 17, 13, 16, 16),
    (1, 6, 10, 24, 8),
]


# The unfused path's transforms have no 8-lane or micro-kernel cases: the first five.
CASES = [(shape, "fused") for shape in SHAPES] + [(shape, "unfused") for shape in SHAPES[:5]]


@needs_native
@pytest.mark.parametrize(
    "shape, method", CASES, ids=lambda c: "x".join(map(str, c)) if isinstance(c, tuple) else c
)
def test_value_and_both_gradients_match_direct_convolution(shape, method):
    x, w, g = operands(*shape)
    expected = jax.jit(lambda *a: value_and_grads(direct, *a))(x, w, g)
    conv = functools.partial(winograd.conv3x3, method=method)
    got = jax.jit(lambda *a: value_and_grads(conv, *a))(x, w, g)
    names = ("value", "input gradient", "kernel gradient")
    for name, e, o in zip(names, expected, got, strict=True):
        assert o.shape == e.shape, name
        assert relative_error(e, o) < TOLERANCE, name


# Paddings other than SAME: VALID, uneven, more than the kernel needs, cropping.
PADDINGS = [
    ("VALID", (5, 3)),
    (((0, 1), (2, 0)), (6, 5)),
    (((2, 2), (0, 0)), (9, 3)),
    (((1, -1), (-1, 1)), (5, 3)),
]


@needs_native
@pytest.mark.parametrize("method", ["fused", "unfused"])
@pytest.mark.parametrize("padding, out", PADDINGS, ids=lambda p: str(p).replace(" ", ""))
def test_other_paddings_match_direct_convolution(padding, out, method):
    assert_matches_direct(operands(2, 7, 5, 8, 5, out=out), padding, method)


def assert_matches_direct(operands, padding, method):
    """Value, input and kernel gradient of one call against ``direct``'s."""
    expected = jax.jit(lambda *a: value_and_grads(lambda x, w: direct(x, w, padding), *a))
    conv = functools.partial(winograd.conv3x3, padding=padding, method=method)
    got = jax.jit(lambda *a: value_and_grads(conv, *a))
    names = ("value", "input gradient", "kernel gradient")
    for name, e, o in zip(names, expected(*operands), got(*operands), strict=True):
        assert o.shape == e.shape, name
        assert relative_error(e, o) < TOLERANCE, name


@st.composite
def random_calls(draw):
    """A batch, a map of 1-13 pixels a side, channel counts on and off the kernels' lanes,
    pads from -1 (a crop) to 2 on each edge, and a method: what a randomized check of both
    methods found XLA:CPU's negative-padding bug with (session 37)."""
    n, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 13)), draw(st.integers(1, 13))
    channels = st.sampled_from([1, 3, 8, 13, 16, 24, 40])
    c, k = draw(channels), draw(channels)
    pads = tuple((draw(st.integers(-1, 2)), draw(st.integers(-1, 2))) for _ in range(2))
    assume(h + sum(pads[0]) >= 3 and w + sum(pads[1]) >= 3)  # at least one output pixel
    return (n, h, w, c, k), pads, draw(st.sampled_from(["fused", "unfused"]))


@needs_native
@settings(max_examples=12)
@given(random_calls())
def test_random_calls_match_direct_convolution(call):
    (n, h, w, c, k), pads, method = call
    out = (h + sum(pads[0]) - 2, w + sum(pads[1]) - 2)
    assert_matches_direct(operands(n, h, w, c, k, out=out), pads, method)


@needs_native
def test_eager_and_vmapped_calls_match():
    x, w, _ = operands(2, 6, 6, 3, 4)
    expected = direct(x, w)
    assert relative_error(expected, winograd.conv3x3(x, w)) < TOLERANCE
    stacked = jax.vmap(winograd.conv3x3, in_axes=(0, None))(x[:, None], w)
    assert relative_error(expected, stacked[:, 0]) < TOLERANCE


@needs_native
def test_doctests():
    assert doctest.testmod(winograd).failed == 0


def test_kernel_transform_is_g_g_gt():
    w = jax.random.normal(jax.random.key(1), (3, 3, 2, 5))
    g = winograd._G.astype(np.float64)
    expected = np.einsum("pi,ijck,qj->pqck", g, np.asarray(w, np.float64), g).reshape(36, 2, 5)
    np.testing.assert_allclose(winograd.kernel_transform(w), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "x, w, message",
    [
        (jnp.ones((5, 5, 3)), jnp.ones((3, 3, 3, 4)), "x must be"),
        (jnp.ones((1, 5, 5, 3)), jnp.ones((5, 5, 3, 4)), "w \\(3, 3, C, K\\)"),
        (jnp.ones((1, 5, 5, 3)), jnp.ones((3, 3, 2, 4)), "got x \\(1, 5, 5, 3\\)"),
        (jnp.ones((1, 5, 5, 3), jnp.bfloat16), jnp.ones((3, 3, 3, 4)), "float32; got bfloat16"),
    ],
)
def test_bad_arguments_raise_naming_them(x, w, message):
    with pytest.raises(ValueError, match=message):
        winograd.conv3x3(x, w)


@pytest.mark.parametrize(
    "padding, message",
    [
        ("CIRCULAR", "padding 'CIRCULAR'; valid: 'SAME', 'VALID'"),
        (((1, 1),), "valid: 'SAME', 'VALID' or \\(\\(top"),
        ((1, 1), "padding \\(1, 1\\); valid"),
        (((0, -1), (0, 0)), "leaves no output for x \\(1, 3, 3, 2\\)"),
    ],
)
def test_bad_padding_raises_naming_it(padding, message):
    with pytest.raises(ValueError, match=message):
        winograd.conv3x3(jnp.ones((1, 3, 3, 2)), jnp.ones((3, 3, 2, 1)), padding)


def lowered_text(fn, *shapes) -> str:
    return jax.jit(fn).lower(*(jax.ShapeDtypeStruct(s, d) for s, d in shapes)).as_text()


def routed(lhs_shape, rhs_shape, dtype=jnp.float32, strides=(1, 1), padding="SAME") -> bool:
    def conv(x, w):
        return conv_backend.conv_general_dilated(x, w, strides, padding, dimension_numbers=DIMS)

    text = lowered_text(conv, (lhs_shape, dtype), (rhs_shape, dtype))
    return "jaxcnn_winograd_" in text


@pytest.fixture
def avx2_only(monkeypatch):
    """This CPU as an AVX2-only one, the binding as available, the backend ``auto``."""
    from jaxcnn import onednn

    monkeypatch.setattr(conv_backend, "avx2_without_avx512_here", lambda: True)
    monkeypatch.setattr(onednn, "available", lambda: True)
    monkeypatch.delenv("JAXCNN_WINOGRAD", raising=False)
    monkeypatch.delenv("JAXCNN_CONV_BACKEND", raising=False)


@pytest.mark.parametrize(
    "channels, taken",
    [
        ((24, 64), True),
        ((256, 256), True),
        ((64, 64), True),
        ((32, 32), True),
        ((16, 16), True),
        ((16, 64), True),
        ((8, 16), False),
        ((3, 64), False),
    ],  # fmt: skip
)
def test_auto_takes_calls_from_16_channels_on_avx2_only_cpus(avx2_only, channels, taken):
    assert routed((2, 8, 8, channels[0]), (3, 3, *channels)) is taken


def kernels_of(lhs_shape, rhs_shape, padding="SAME") -> str:
    """ "fused", "unfused" or "none": how ``conv_backend`` runs this float32 call."""

    def conv(x, w):
        return conv_backend.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=DIMS)

    text = lowered_text(conv, (lhs_shape, jnp.float32), (rhs_shape, jnp.float32))
    if "jaxcnn_winograd_conv" in text:
        return "fused"
    return "unfused" if "jaxcnn_winograd_input" in text else "none"


@pytest.mark.parametrize(
    "channels, side, padding, kernels",
    [
        ((16, 16), 8, "SAME", "fused"),
        ((64, 64), 8, "SAME", "fused"),
        ((64, 128), 8, "SAME", "unfused"),
        ((32, 64), 12, "VALID", "fused"),  # the MNIST net's conv2: 9 tiles in and out
        ((64, 64), 10, "VALID", "unfused"),  # 9 input tiles for 4 output tiles
        ((64, 64), 6, "VALID", "unfused"),  # the CIFAR net's conv3: 4 for 1
        ((32, 32), 10, "VALID", "none"),  # narrow, not fused: oneDNN's, as before item 87
    ],  # fmt: skip
)
def test_auto_fuses_narrow_layers_whose_input_takes_few_more_tiles(
    avx2_only, channels, side, padding, kernels
):
    assert kernels_of((2, side, side, channels[0]), (3, 3, *channels), padding) == kernels


def test_fused_pays_on_narrow_layers_whose_input_takes_few_more_tiles():
    same, valid = ((1, 1), (1, 1)), ((0, 0), (0, 0))
    assert winograd.fused_pays((16, 16), same)
    assert winograd.fused_pays((64, 64), ((2, 0), (0, 2)))  # output map = input map
    assert not winograd.fused_pays((64, 65), same)
    assert not winograd.fused_pays((16, 16), valid)  # no input map given: SAME only
    assert winograd.fused_pays((32, 64), valid, (12, 12))  # 9 tiles in, 9 out
    assert winograd.fused_pays((32, 64), valid, (14, 14))  # 16 in, 9 out: the CIFAR conv2
    assert winograd.fused_pays((32, 64), ((0, -1), (0, -1)), (13, 13))  # cropped: 16 / 9
    assert not winograd.fused_pays((64, 64), valid, (6, 6))  # 4 in, 1 out
    assert not winograd.fused_pays((64, 64), valid, (10, 10))  # 9 in, 4 out


def test_bad_method_raises_naming_it():
    with pytest.raises(ValueError, match="method 'fast'; valid: auto, fused, unfused"):
        winograd.conv3x3(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2)), method="fast")


@pytest.mark.parametrize(
    "kwargs",
    [{"dtype": jnp.float16}, {"strides": (2, 2)}, {"padding": ((1, -1), (1, 1))}],
    ids=["float16", "stride 2", "cropping"],
)
def test_auto_leaves_other_calls(avx2_only, kwargs):
    assert not routed((2, 8, 8, 64), (3, 3, 64, 64), **kwargs)


@pytest.mark.parametrize("padding", ["VALID", ((1, 1), (0, 0)), ((0, 0), (0, 0))])
def test_auto_takes_other_paddings(avx2_only, padding):
    assert routed((2, 10, 10, 64), (3, 3, 64, 64), padding=padding)  # 8 x 8, 10 x 8 maps


@pytest.mark.parametrize(
    "spatial, padding, taken",
    [
        ((12, 12), "VALID", True),  # 1.44, fused (as the MNIST net's conv2): up to 1.5
        ((14, 14), "VALID", True),
        ((3, 3), "SAME", True),
        ((7, 7), "SAME", True),
        ((5, 5), "SAME", False),  # 2.56
        ((13, 13), "SAME", False),  # 1.51
    ],  # fmt: skip
    ids=["10x10 map", "12x12 map", "3x3 map: one tile", "7x7 map", "5x5 map", "13x13 map"],
)
def test_auto_leaves_maps_that_tiles_cover_wastefully(avx2_only, spatial, padding, taken):
    assert routed((2, *spatial, 64), (3, 3, 64, 64), padding=padding) is taken


@needs_native
def test_auto_runs_bfloat16_calls_in_float32_rounded_once(avx2_only):
    assert routed((2, 8, 8, 64), (3, 3, 64, 64), dtype=jnp.bfloat16)
    x, w, _ = operands(2, 6, 6, 32, 40)
    x, w = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    y = jax.jit(lambda x, w: conv_backend.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=DIMS))(x, w)  # fmt: skip
    assert y.dtype == jnp.bfloat16
    exact = direct(x.astype(jnp.float32), w.astype(jnp.float32))
    assert relative_error(exact, y.astype(jnp.float32)) < 2**-8  # bfloat16's rounding


def test_explicit_same_padding_is_taken(avx2_only):
    assert routed((2, 8, 8, 64), (3, 3, 64, 64), padding=((1, 1), (1, 1)))


def test_auto_leaves_avx512_cpus_and_other_backends(avx2_only, monkeypatch):
    monkeypatch.setattr(conv_backend, "avx2_without_avx512_here", lambda: False)
    assert not routed((2, 8, 8, 64), (3, 3, 64, 64))
    monkeypatch.setattr(conv_backend, "avx2_without_avx512_here", lambda: True)
    with conv_backend.use_conv_backend("xla"):
        assert not routed((2, 8, 8, 64), (3, 3, 64, 64))


def test_switch_on_and_off(avx2_only, monkeypatch):
    monkeypatch.setattr(conv_backend, "avx2_without_avx512_here", lambda: False)
    monkeypatch.setenv("JAXCNN_WINOGRAD", "on")
    assert routed((2, 8, 8, 3), (3, 3, 3, 4))
    monkeypatch.setattr(conv_backend, "avx2_without_avx512_here", lambda: True)
    monkeypatch.setenv("JAXCNN_WINOGRAD", "off")
    assert not routed((2, 8, 8, 64), (3, 3, 64, 64))


def test_bad_switch_value_raises_naming_it(monkeypatch):
    monkeypatch.setenv("JAXCNN_WINOGRAD", "yes")
    with pytest.raises(ValueError, match="JAXCNN_WINOGRAD.*yes"):
        conv_backend.winograd_choice()


@needs_native
def test_a_model_trains_alike_with_and_without(monkeypatch):
    """A small fast CIFAR net: loss and gradients with every 3x3 SAME conv as Winograd
    against all direct."""
    from jaxcnn import models

    model = models.fast_cifar(widths=(8, 16, 16))
    x = jax.random.normal(jax.random.key(2), (4, 16, 16, 3))
    labels = jnp.arange(4) % 10
    variables = model.init(jax.random.key(3), x, train=False)

    def loss(params):
        logits, _ = model.apply(
            {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
        )
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])

    results = {}
    for choice in ("off", "on"):
        monkeypatch.setenv("JAXCNN_WINOGRAD", choice)
        lowered = jax.jit(jax.value_and_grad(loss)).lower(variables["params"])
        assert ("jaxcnn_winograd_" in lowered.as_text()) is (choice == "on")
        results[choice] = lowered.compile()(variables["params"])
    (loss_off, grads_off), (loss_on, grads_on) = results["off"], results["on"]
    assert abs(float(loss_on) - float(loss_off)) < 1e-4 * abs(float(loss_off))
    for off, on in zip(jax.tree.leaves(grads_off), jax.tree.leaves(grads_on), strict=True):
        assert relative_error(off, on) < 1e-3
