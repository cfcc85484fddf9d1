"""jaxcnn.testing: the strategies draw what they promise; the assertions catch wrong shapes."""

from __future__ import annotations

import doctest

import flax.linen as nn
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcnn import shapes, testing


@settings(max_examples=60)
@given(testing.conv_cases(ranks=(2,), modes=("SAME",), explicit=False, max_groups=1))
def test_conv_cases_honour_their_options(case):
    assert len(case.kernel) == len(case.strides) == len(case.dilation) == 2
    assert len(case.input_shape) == 4
    assert case.padding in ("SAME", "same") and case.groups == 1


@settings(max_examples=200)
@given(testing.conv_cases())
def test_conv_cases_are_valid_flax_configs(case):
    assert case.input_shape[-1] % case.groups == 0 and case.features % case.groups == 0
    assert all(n >= 1 for n in case.expected_shape)  # the calculator accepts every draw
    if case.padding == "CAUSAL":
        assert len(case.kernel) == 1


@settings(max_examples=100)
@given(testing.pool_cases(explicit=True, modes=()))
def test_pool_cases_explicit_padding_is_pairs_as_flax_needs(case):
    assert isinstance(case.padding, tuple)
    assert all(isinstance(p, tuple) and len(p) == 2 for p in case.padding)


@settings(max_examples=100)
@given(testing.conv_transpose_cases())
def test_conv_transpose_cases_use_upper_case_modes(case):
    # Flax's ConvTranspose compares its mode names verbatim.
    assert not isinstance(case.padding, str) or case.padding in ("SAME", "VALID", "CIRCULAR")


@settings(max_examples=1)
@given(st.data())
def test_strategy_options_are_checked(data):
    with pytest.raises(ValueError, match=r"ranks=\(4,\): give a non-empty subset of \(1, 2, 3\)"):
        data.draw(testing.conv_cases(ranks=(4,)))
    with pytest.raises(ValueError, match=r"\['REFLECT'\] not among VALID, SAME, SAME_LOWER"):
        data.draw(testing.pool_cases(modes=("REFLECT",)))
    with pytest.raises(ValueError, match=r"max_groups=0; valid: an int >= 1"):
        data.draw(testing.conv_cases(max_groups=0))
    with pytest.raises(ValueError, match=r"max_window=-1; valid: an int >= 1"):
        data.draw(testing.pool_cases(max_window=-1))
    with pytest.raises(ValueError, match="unknown: \\['typo'\\]"):
        data.draw(testing.invalid_shape_arguments(kinds=("typo",)))


@pytest.mark.parametrize("kind", testing.POOL_KINDS)
def test_every_pool_kind_matches_the_calculator(kind):
    case = testing.PoolCase((2, 9, 7, 3), (3, 2), (2, 1), ((1, 0), (0, 2)))
    assert case.expected_shape == (2, 4, 8, 3)
    real = testing.assert_output_shape(case.function(kind), case.input_shape, case.expected_shape)
    assert real == (2, 4, 8, 3)


def test_unknown_pool_kind():
    case = testing.PoolCase((1, 4, 1), (2,), None, "VALID")
    with pytest.raises(ValueError, match="kind='median' is not one of max, avg"):
        case.function("median")


def test_assert_output_shape_catches_a_wrong_expectation():
    conv = nn.Conv(4, (3, 3), strides=2, padding="VALID")
    assert testing.assert_output_shape(conv, (1, 32, 32, 3)) == (1, 15, 15, 4)
    with pytest.raises(AssertionError, match=r"has shape \(1, 15, 15, 4\) but expected"):
        testing.assert_output_shape(conv, (1, 32, 32, 3), expected=(1, 16, 16, 4))


def test_expected_output_shape_reads_flax_modules():
    expect = testing.expected_output_shape
    assert expect(nn.Conv(2, 3, padding="SAME"), (1, 10, 1)) == (1, 10, 2)  # int kernel: 1-D
    assert expect(nn.Conv(2, (3, 3), padding=1), (2, 5, 8, 8, 1)) == (2, 5, 8, 8, 2)
    # ConvTranspose defaults: strides None, kernel_dilation None, padding SAME.
    assert expect(nn.ConvTranspose(2, (3, 3)), (1, 8, 8, 1)) == (1, 8, 8, 2)
    real = testing.eval_output_shape(nn.Conv(2, (3, 3), padding=1), (2, 5, 8, 8, 1))
    assert real == (2, 5, 8, 8, 2)  # Flax flattens extra batch axes and restores them


def test_expected_output_shape_uses_an_output_shape_method():
    class Halve(nn.Module):
        def output_shape(self, input_shape):
            n, h, w, c = input_shape
            return (n, *shapes.pool_output_shape((h, w), 2, 2), c)

        def __call__(self, x):
            return nn.avg_pool(x, (2, 2), (2, 2))

    assert testing.assert_output_shape(Halve(), (1, 9, 8, 2)) == (1, 4, 4, 2)


def test_expected_output_shape_refuses_what_it_cannot_predict():
    with pytest.raises(ValueError, match="module=Dense: no prediction for it; pass expected="):
        testing.expected_output_shape(nn.Dense(3), (1, 4))
    with pytest.raises(ValueError, match=r"input_dilation=2: jaxcnn.shapes has no rule for it"):
        testing.expected_output_shape(nn.Conv(1, (3,), input_dilation=2), (1, 8, 1))


@settings(max_examples=1)
@given(testing.invalid_shape_arguments(operations=("pool",), kinds=("wrong_rank",)))
def test_invalid_case_calls_the_named_function(case):
    assert case.function == "pool_output_shape" and case.reason == "wrong_rank"
    with pytest.raises(ValueError, match=case.match):
        case.call()


def test_doctests():
    result = doctest.testmod(testing)
    assert result.failed == 0 and result.attempted >= 3


def test_chex_is_what_reports():
    # assert_output_shape's failures are chex's, so they read like the rest of a chex suite.
    with pytest.raises(AssertionError, match=r"\[Chex\]"):
        testing.assert_output_shape(lambda x: x, (1, 2), expected=(1, 3))
