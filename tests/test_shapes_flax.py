"""The calculator against what Flax/XLA really produce.

Shapes come from ``jax.eval_shape`` (nothing is computed), on SHAPE_EXAMPLES
hypothesis examples per operation drawn with jaxcnn.testing's strategies. A few
tests compute real numbers on tiny inputs: the hand-checked 6x6 example, and
that the pads ``resolve_padding`` and ``same_padding`` report are the pads XLA
applies (same values, not just the same shape).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SHAPE_EXAMPLES
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcnn import shapes, testing

KEY = jax.random.key(0)


# --------------------------------------------------------------------------- properties
@settings(max_examples=SHAPE_EXAMPLES)
@given(testing.conv_cases())
def test_conv_shape_equals_flax(case):
    testing.assert_output_shape(case.module(), case.input_shape, case.expected_shape)


@settings(max_examples=SHAPE_EXAMPLES)
@given(testing.conv_transpose_cases())
def test_conv_transpose_shape_equals_flax(case):
    testing.assert_output_shape(case.module(), case.input_shape, case.expected_shape)


@settings(max_examples=SHAPE_EXAMPLES)
@given(testing.pool_cases())
def test_pool_shapes_equal_flax(case):
    # min and avg(count_include_pad=False) share these code paths; three kinds keep CI fast.
    for kind in ("max", "avg", "sum"):
        testing.assert_output_shape(case.function(kind), case.input_shape, case.expected_shape)


@settings(max_examples=100)
@given(testing.invalid_shape_arguments(kinds=("empty_output",)))
def test_calculator_refuses_exactly_where_flax_returns_an_empty_map(case):
    """Where the calculator raises "output size below 1", XLA silently returns size 0."""
    kwargs = case.kwargs
    spatial, rank = kwargs["spatial_shape"], len(kwargs["spatial_shape"])
    x = (1, *spatial, 1)
    if case.function == "pool_output_shape":
        window = kwargs["window"]
        real = testing.eval_output_shape(
            lambda a: nn.max_pool(a, window, None, ((0, 0),) * rank), x
        )
    elif case.function == "conv_output_shape":
        real = testing.eval_output_shape(nn.Conv(1, kwargs["kernel"], padding=0), x)
    else:
        real = testing.eval_output_shape(nn.ConvTranspose(1, kwargs["kernel"], padding=0), x)
    assert 0 in real
    with pytest.raises(ValueError, match=case.match):
        case.call()


# --------------------------------------------------------------------------- teaching cases
def test_teaching_32x32_3x3_stride_2_and_1():
    x = (1, 32, 32, 1)
    assert testing.assert_output_shape(nn.Conv(1, (3, 3), 2, padding="VALID"), x) == (1, 15, 15, 1)
    assert testing.assert_output_shape(nn.Conv(1, (3, 3), 1, padding="VALID"), x) == (1, 30, 30, 1)


def test_teaching_32x32x3_input_one_3x3x3_filter_gives_30x30x1():
    conv = nn.Conv(features=1, kernel_size=(3, 3), padding="VALID")
    out, variables = jax.eval_shape(
        lambda x: conv.init_with_output(KEY, x), jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    )
    assert variables["params"]["kernel"].shape == (3, 3, 3, 1)  # one 3x3x3 filter
    assert out.shape == (1, 30, 30, 1)
    assert (*shapes.conv_output_shape((32, 32), 3), 1) == out.shape[1:]


# The teaching kernel: ones on the four corners and in the centre.
X_KERNEL = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]], np.float32)


def _convolve_6x6(image):
    conv = nn.Conv(1, (3, 3), padding="VALID", use_bias=False)
    variables = {"params": {"kernel": jnp.asarray(X_KERNEL).reshape(3, 3, 1, 1)}}
    out = conv.apply(variables, jnp.asarray(image, jnp.float32).reshape(1, 6, 6, 1))
    assert out.shape == (1, *shapes.conv_output_shape((6, 6), 3), 1) == (1, 4, 4, 1)
    return np.asarray(out[0, :, :, 0])


def test_teaching_6x6_binary_image_with_x_kernel_by_hand():
    image = [
        [1, 0, 0, 0, 0, 1],
        [0, 1, 0, 0, 1, 0],
        [0, 0, 1, 1, 0, 0],
        [1, 0, 0, 0, 1, 0],
        [0, 1, 0, 0, 1, 0],
        [0, 0, 1, 0, 1, 0],
    ]
    # Each value is x[i,j] + x[i,j+2] + x[i+1,j+1] + x[i+2,j] + x[i+2,j+2], counted by hand;
    # e.g. top-left: 1 (corner) + 0 + 1 (centre) + 0 + 1 = 3.
    by_hand = [
        [3, 1, 1, 3],
        [1, 2, 3, 0],
        [1, 2, 2, 2],
        [3, 0, 3, 1],
    ]
    np.testing.assert_array_equal(_convolve_6x6(image), by_hand)


def test_teaching_6x6_ramp_with_x_kernel_by_hand():
    # x[i, j] = 6i + j; the five taps add up to 30i + 5j + 35.
    image = np.arange(36).reshape(6, 6)
    by_hand = [
        [35, 40, 45, 50],
        [65, 70, 75, 80],
        [95, 100, 105, 110],
        [125, 130, 135, 140],
    ]
    np.testing.assert_array_equal(_convolve_6x6(image), by_hand)


# --------------------------------------------------------------------------- pads, by value
def _conv1d(x, kernel, stride, padding, dilation):
    dims = ("NWC", "WIO", "NWC")
    return jax.lax.conv_general_dilated(
        x, kernel, (stride,), padding, rhs_dilation=(dilation,), dimension_numbers=dims
    )


def _random_1d(seed, size, kernel):
    """An input and a kernel with positive means, so shifted windows differ in value."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(1, size, 1)) + 3.0, jnp.float32)
    w = jnp.asarray(rng.normal(size=(kernel, 1, 1)) + 1.0, jnp.float32)
    return x, w


@settings(max_examples=40)
@given(
    st.integers(1, 12),
    st.integers(1, 5),
    st.integers(1, 3),
    st.integers(1, 2),
    st.sampled_from(["SAME", "SAME_LOWER", "CAUSAL"]),
)
def test_resolved_pads_are_the_pads_xla_applies(size, kernel, stride, dilation, mode):
    """Same numbers, not just the same shape, with the explicit pads in place of the mode."""
    x, w = _random_1d(size * 100 + kernel, size, kernel)
    conv = nn.Conv(1, (kernel,), stride, mode, kernel_dilation=dilation, use_bias=False)
    explicit = conv.clone(padding=shapes.resolve_padding(mode, (size,), kernel, stride, dilation))
    variables = {"params": {"kernel": w}}
    # One compiled program per example (eager ops would compile one by one).
    by_mode, by_pads = jax.jit(lambda a: (conv.apply(variables, a), explicit.apply(variables, a)))(
        x
    )
    np.testing.assert_allclose(by_mode, by_pads, rtol=1e-6)


@settings(max_examples=40)
@given(st.integers(1, 12), st.integers(1, 6), st.integers(1, 4), st.integers(1, 2))
def test_same_vs_symmetric_predicts_whether_ported_weights_agree(size, kernel, stride, dilation):
    """``identical`` is True exactly when PyTorch-style (p, p) reproduces Flax's SAME numbers."""
    x, w = _random_1d(size * 1000 + kernel * 10 + stride, size, kernel)
    cmp = shapes.same_vs_symmetric(size, kernel, stride, dilation)
    same, sym = jax.jit(
        lambda a, b: (
            _conv1d(a, b, stride, "SAME", dilation),
            _conv1d(a, b, stride, [cmp.symmetric], dilation),
        )
    )(x, w)
    assert same.shape[1] == cmp.same_output and sym.shape[1] == cmp.symmetric_output
    if sym.shape != same.shape:
        assert not cmp.identical
    else:
        assert cmp.identical == bool(np.allclose(same, sym, rtol=1e-5)), cmp.reason


# --------------------------------------------------------------------------- receptive field
def _apply_stack(layers, x):
    """The stack with all-ones kernels and average pools, so every tap has a positive weight."""
    dims = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}[x.ndim - 2]
    for layer in layers:
        spatial = x.shape[1:-1]
        if isinstance(layer, shapes.ConvSpec):
            rank = len(spatial)
            kernel = layer.kernel if isinstance(layer.kernel, tuple) else (layer.kernel,) * rank
            stride = layer.stride if isinstance(layer.stride, tuple) else (layer.stride,) * rank
            dilation = (
                layer.dilation if isinstance(layer.dilation, tuple) else (layer.dilation,) * rank
            )
            pads = shapes.resolve_padding(layer.padding, spatial, kernel, stride, dilation)
            ones = jnp.ones((*kernel, 1, 1), x.dtype)
            x = jax.lax.conv_general_dilated(
                x, ones, stride, pads, rhs_dilation=dilation, dimension_numbers=dims
            )
        else:
            rank = len(spatial)
            window = layer.window if isinstance(layer.window, tuple) else (layer.window,) * rank
            stride = layer.stride if isinstance(layer.stride, tuple) else (layer.stride,) * rank
            pads = shapes.resolve_padding(layer.padding, spatial, window, stride, operation="pool")
            x = nn.avg_pool(x, window, stride, pads)
        assert x.shape[1:-1] == layer.output_shape(spatial)
    return x


STACKS = [
    (
        [
            shapes.ConvSpec(3, 2),
            shapes.PoolSpec(2, 2),
            shapes.ConvSpec(3, dilation=2, padding="SAME"),
        ],
        (40,),
    ),
    (
        [
            shapes.ConvSpec(5, padding=2),
            shapes.ConvSpec(3, stride=2, padding="SAME"),
            shapes.PoolSpec(3, 2, padding="SAME"),
            shapes.ConvSpec(3, dilation=3),
        ],
        (64,),
    ),
    (
        [
            shapes.ConvSpec((3, 1), padding=1),
            shapes.ConvSpec(3, stride=(2, 1), padding="SAME_LOWER"),
            shapes.PoolSpec((2, 3), (2, 2)),
            shapes.ConvSpec((1, 3), dilation=(1, 2), padding=((0, 0), (1, 3))),
        ],
        (20, 24),
    ),
]


@pytest.mark.parametrize(("layers", "input_shape"), STACKS)
def test_receptive_field_is_where_the_gradient_reaches(layers, input_shape):
    """Each output pixel depends on exactly start + i*jump -/+ (size-1)/2 (inside the image)."""
    field = shapes.receptive_field(layers, input_shape)[-1]
    x = jnp.ones((1, *input_shape, 1), jnp.float32)
    # One compiled program instead of many eager ops; drop the batch and channel axes.
    jacobian = jax.jit(jax.jacrev(lambda a: _apply_stack(layers, a)[0, ..., 0]))(x)
    jacobian = np.asarray(jacobian).reshape(*field.output_shape, *input_shape)
    checked = 0
    for index in np.ndindex(*field.output_shape):
        lows = [
            s + i * j - (z - 1) / 2
            for s, i, j, z in zip(field.start, index, field.jump, field.size, strict=True)
        ]
        highs = [lo + z - 1 for lo, z in zip(lows, field.size, strict=True)]
        inside = zip(lows, highs, input_shape, strict=True)
        if any(lo < 0 or hi > n - 1 for lo, hi, n in inside):
            continue  # the field reaches into the padding: clipped, not checked
        reached = np.nonzero(jacobian[index])
        assert [int(a.min()) for a in reached] == lows, index
        assert [int(a.max()) for a in reached] == highs, index
        checked += 1
    assert checked >= 1
