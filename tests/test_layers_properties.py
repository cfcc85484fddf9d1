"""Property tests: random ConvBlock / Pool configurations give the calculator's shapes.

The configurations come from ``jaxcnn.testing``'s strategies (every padding mode,
1-D/2-D/3-D, strides, dilations, groups); each example is traced with
``jax.eval_shape`` (nothing is computed). Each example traces a whole module, so the
counts are modest; ``HYPOTHESIS_PROFILE=slow`` runs ten times more.
"""

from __future__ import annotations

import os

import hypothesis.strategies as st
from hypothesis import assume, given, settings

from jaxcnn import shapes, testing
from jaxcnn.layers import ConvBlock, Pool

EXAMPLES = 200 if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci" else 2000


@settings(max_examples=EXAMPLES)
@given(case=testing.conv_cases(), norm=st.sampled_from([None, "batch", "layer"]))
def test_conv_block_output_shape_is_predicted(case, norm):
    block = ConvBlock(
        case.features,
        case.kernel,
        case.strides,
        case.padding,
        case.dilation,
        feature_group_count=case.groups,
        norm=norm,
    )
    assert block.output_shape(case.input_shape) == case.expected_shape
    testing.assert_output_shape(block, case.input_shape, case.expected_shape, train=False)


@settings(max_examples=EXAMPLES // 2)
@given(
    case=testing.conv_cases(max_extra_size=6),
    kind=st.sampled_from(["max", "avg", "sum"]),
    window=st.integers(1, 3),
    stride=st.integers(1, 3),
    padding=st.sampled_from(["VALID", "SAME"]),
)
def test_conv_block_with_pooling_output_shape_is_predicted(case, kind, window, stride, padding):
    conv_out = case.expected_shape
    try:
        pooled = shapes.pool_output_shape(conv_out[1:-1], window, stride, padding)
    except ValueError:
        assume(False)  # the conv output is smaller than the window
    block = ConvBlock(
        case.features,
        case.kernel,
        case.strides,
        case.padding,
        case.dilation,
        feature_group_count=case.groups,
        pool=kind,
        pool_window=window,
        pool_stride=stride,
        pool_padding=padding,
    )
    expected = (conv_out[0], *pooled, conv_out[-1])
    testing.assert_output_shape(block, case.input_shape, expected)


@settings(max_examples=EXAMPLES)
@given(
    case=testing.pool_cases(),
    kind=st.sampled_from(["max", "avg", "sum"]),
    method=st.sampled_from(["auto", "reduce_window"]),
)
def test_pool_output_shape_is_predicted(case, kind, method):
    # testing.PoolCase follows Flax (strides=None means 1); Pool's None means the window.
    pool = Pool(kind, case.window, case.strides or 1, case.padding, method=method)
    assert pool.output_shape(case.input_shape) == case.expected_shape
    testing.assert_output_shape(pool, case.input_shape, case.expected_shape)
