"""The pure-Python calculator: worked cases, padding rules, errors, explain, receptive field.

Everything here is checked by hand; the agreement with Flax/XLA on thousands of
random configurations is in test_shapes_flax.py.
"""

from __future__ import annotations

import doctest
import subprocess
import sys

import pytest
from conftest import SHAPE_EXAMPLES
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcnn import shapes, testing
from jaxcnn.shapes import (
    ConvSpec,
    PoolSpec,
    conv_output_shape,
    conv_output_size,
    conv_transpose_output_shape,
    explain,
    pool_output_shape,
    receptive_field,
    resolve_padding,
    same_padding,
    same_vs_symmetric,
    symmetric_padding,
)


# --------------------------------------------------------------------------- teaching cases
def test_32x32_3x3_stride_2_gives_15x15():
    assert conv_output_shape((32, 32), 3, stride=2) == (15, 15)
    assert conv_output_size(32, 3, stride=2) == 15


def test_32x32_3x3_stride_1_gives_30x30():
    assert conv_output_shape((32, 32), 3) == (30, 30)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "dilation", "expected"),
    [
        (28, 5, 1, 2, 1, 28),  # LeNet-style "same" by hand
        (227, 11, 4, 0, 1, 55),  # AlexNet conv1
        (224, 7, 2, 3, 1, 112),  # ResNet stem, PyTorch padding
        (32, 3, 1, 0, 2, 28),  # dilation 2: span 5
        (10, 1, 3, 0, 1, 4),  # 1x1 conv, stride 3: pixels 0, 3, 6, 9
        (7, 3, 2, (0, 1), 1, 3),  # floor((7 + 1 - 3) / 2) + 1
        (5, 5, 1, 0, 1, 1),  # kernel exactly covers the input
    ],
)
def test_conv_output_size_by_hand(size, kernel, stride, padding, dilation, expected):
    assert conv_output_size(size, kernel, stride, padding, dilation) == expected


# --------------------------------------------------------------------------- padding modes
@pytest.mark.parametrize(
    ("size", "kernel", "stride", "dilation", "expected"),
    [
        (32, 3, 1, 1, (1, 1)),
        (32, 3, 2, 1, (0, 1)),  # total 1: the extra pixel goes at the end
        (33, 3, 2, 1, (1, 1)),
        (224, 7, 2, 1, (2, 3)),
        (32, 4, 1, 1, (1, 2)),  # even kernel at stride 1
        (10, 3, 1, 3, (3, 3)),  # span 7
        (5, 2, 4, 1, (0, 1)),  # (ceil(5/4) - 1)*4 + 2 - 5 = 1
        (3, 1, 5, 1, (0, 0)),  # (1 - 1)*5 + 1 - 3 < 0: never negative
    ],
)
def test_same_padding_split(size, kernel, stride, dilation, expected):
    assert same_padding(size, kernel, stride, dilation) == expected
    # SAME always keeps ceil(n / s) pixels.
    assert conv_output_size(size, kernel, stride, "SAME", dilation) == -(-size // stride)


def test_same_lower_puts_the_extra_pixel_first():
    assert resolve_padding("SAME_LOWER", (32,), 3, stride=2) == ((1, 0),)
    assert resolve_padding("same_lower", (224, 7), 7, stride=2) == ((3, 2), (3, 3))


@pytest.mark.parametrize("mode", ["CIRCULAR", "REFLECT"])
def test_circular_and_reflect_pad_like_flax(mode):
    # Flax pads ((span-1)//2, span//2) itself, then runs VALID.
    assert resolve_padding(mode, (10, 10), (3, 4), dilation=(1, 2)) == ((1, 1), (3, 3))
    assert resolve_padding(mode, (10,), 4) == ((1, 2),)
    assert conv_output_shape((10, 9), 4, stride=2, padding=mode) == (5, 5)


def test_causal_pads_only_before_and_only_in_1d():
    assert resolve_padding("CAUSAL", (10,), 3, dilation=2) == ((4, 0),)
    assert conv_output_size(10, 3, padding="CAUSAL", dilation=2) == 10
    with pytest.raises(ValueError, match=r"CAUSAL' is only implemented for 1-D.*2 spatial axes"):
        conv_output_shape((10, 10), 3, padding="CAUSAL")


def test_valid_and_explicit_padding_forms():
    assert resolve_padding("VALID", (8, 8), 3) == ((0, 0), (0, 0))
    assert resolve_padding(2, (8, 8), 3) == ((2, 2), (2, 2))
    assert resolve_padding([1, (0, 2)], (8, 8), 3) == ((1, 1), (0, 2))
    # Flax's rule for a sequence of ints: one int per axis, not a (lo, hi) pair.
    assert conv_output_shape((8, 8), 3, padding=(1, 2)) == (8, 10)
    assert conv_output_shape((8, 8), 3, padding=[[1, 2], [0, 0]]) == (9, 6)


def test_pool_defaults_are_flax_defaults():
    assert pool_output_shape((5, 5), (2, 2)) == (4, 4)  # stride None -> 1, VALID
    assert pool_output_shape((32, 32), 2, stride=2) == (16, 16)
    assert pool_output_shape((15,), 2, 2) == (7,)
    assert pool_output_shape((15,), 2, 2, padding="SAME") == (8,)
    assert resolve_padding("SAME", (15,), 3, 2, operation="pool") == ((1, 1),)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "dilation", "expected"),
    [
        (8, 3, 2, "SAME", 1, 16),  # n*s
        (8, 3, 2, "VALID", 1, 17),  # n*s + max(k - s, 0)
        (8, 2, 3, "VALID", 1, 24),  # k < s: no overlap to add
        (8, 3, 2, "CIRCULAR", 1, 16),  # wrapped onto n*s
        (8, 3, 2, [(1, 1)], 1, 15),  # (8-1)*2 + 1 + 2 - 2
        (8, 3, 2, 0, 2, 11),  # (8-1)*2 + 1 - 4
        (4, 5, 1, "SAME", 1, 4),
    ],
)
def test_conv_transpose_output_size_by_hand(size, kernel, stride, padding, dilation, expected):
    got = conv_transpose_output_shape((size,), kernel, stride, padding, dilation)
    assert got == (expected,)


def test_conv_transpose_resolved_pads_are_laxs():
    assert resolve_padding("SAME", (8,), 3, 2, operation="conv_transpose") == ((2, 1),)
    # VALID: total k + s - 2 + max(k - s, 0) = 4, k - 1 = 2 of it first.
    assert resolve_padding("VALID", (8,), 3, 2, operation="conv_transpose") == ((2, 2),)
    with pytest.raises(ValueError, match="CIRCULAR' of a transposed convolution is no zero"):
        resolve_padding("CIRCULAR", (8,), 3, 2, operation="conv_transpose")


@settings(max_examples=SHAPE_EXAMPLES)
@given(testing.conv_cases())
def test_resolved_padding_gives_the_same_shape(case):
    args = (case.spatial_shape, case.kernel, case.strides)
    pads = resolve_padding(case.padding, *args, case.dilation)
    assert len(pads) == len(case.spatial_shape)
    assert all(lo >= 0 and hi >= 0 for lo, hi in pads)
    direct = conv_output_shape(*args, case.padding, case.dilation)
    assert conv_output_shape(*args, pads, case.dilation) == direct


# --------------------------------------------------------------------------- SAME vs PyTorch
def test_symmetric_padding_is_what_pytorch_users_write():
    assert symmetric_padding(3) == (1, 1)
    assert symmetric_padding(7) == (3, 3)
    assert symmetric_padding(3, dilation=2) == (2, 2)
    assert symmetric_padding(4) == (1, 1)


def test_same_vs_symmetric_flax_2993_resnet_stem():
    # torch.nn.Conv2d(3, 64, 7, stride=2, padding=3) against nn.Conv(64, (7, 7), 2, "SAME").
    cmp = same_vs_symmetric(224, 7, stride=2)
    assert (cmp.same, cmp.symmetric) == ((2, 3), (3, 3))
    assert cmp.same_output == cmp.symmetric_output == 112
    assert cmp.shift == 1 and not cmp.identical
    assert "starts 1 pixel(s) later" in cmp.reason
    assert "(224-1) % 2 = 1" in cmp.reason


def test_same_vs_symmetric_keras_19291_stride_2_3x3():
    cmp = same_vs_symmetric(4, 3, stride=2)  # keras#19291: torch needs F.pad(0, 1)
    assert (cmp.same, cmp.symmetric, cmp.identical) == ((0, 1), (1, 1), False)


def test_same_vs_symmetric_agree_at_stride_1_and_when_size_minus_1_divides():
    assert same_vs_symmetric(32, 3).identical
    assert same_vs_symmetric(33, 3, stride=2).identical
    assert same_vs_symmetric(31, 5, stride=3).identical
    assert same_vs_symmetric(32, 3).reason.startswith("identical")


def test_same_vs_symmetric_total_pad_parity_does_not_decide():
    # An even total pad that still differs: SAME (2, 2) against (3, 3).
    cmp = same_vs_symmetric(31, 7, stride=4)
    assert cmp.same == (2, 2) and sum(cmp.same) % 2 == 0 and not cmp.identical


def test_same_vs_symmetric_even_kernel_changes_the_shape():
    cmp = same_vs_symmetric(32, 4)
    assert (cmp.same_output, cmp.symmetric_output) == (32, 31)
    assert cmp.reason.startswith("output sizes differ") and not cmp.identical


@given(st.integers(1, 64), st.integers(1, 4), st.integers(1, 5), st.integers(1, 3))
def test_odd_span_rule(size, half, stride, dilation):
    """Odd spans: same output always, and identical pads exactly when (n-1) % s == 0."""
    kernel = 2 * half + 1
    cmp = same_vs_symmetric(size, kernel, stride, dilation)
    assert cmp.same_output == cmp.symmetric_output == -(-size // stride)
    assert cmp.identical == ((size - 1) % stride == 0)
    assert sum(cmp.same) == max(dilation * (kernel - 1) - (size - 1) % stride, 0)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: conv_output_size(32, 0), "kernel must be an integer >= 1, got 0"),
        (lambda: conv_output_size(32, 3, stride=0), "stride must be an integer >= 1, got 0"),
        (lambda: conv_output_size(32, 3, dilation=-1), "dilation must be an integer >= 1, got -1"),
        (lambda: conv_output_size(0, 3), "size must be an integer >= 1, got 0"),
        (lambda: conv_output_size(32, 3, padding=-1), "padding must be an integer >= 0, got -1"),
        (
            lambda: conv_output_size(32, 3, padding=(0, -2)),
            r"padding\[1\] \(hi\) must be an integer >= 0, got -2",
        ),
        (lambda: conv_output_size(32, 3.0), r"kernel must be an integer >= 1, got 3.0 \(float\)"),
        (lambda: conv_output_size(32, True), r"kernel must be an integer >= 1, got True \(bool\)"),
        (lambda: conv_output_size(32, 3, stride=1.5), r"got 1.5 \(float\)"),
        (lambda: conv_output_size(32.0, 3), r"size must be an integer >= 1, got 32.0 \(float\)"),
        (lambda: conv_output_size(32, 3, padding=1.0), r"padding must be .*got 1.0 \(float\)"),
        (lambda: conv_output_size(32, 3, padding=False), r"padding must be .*got False \(bool\)"),
        (
            lambda: conv_output_size(32, 3, padding="FULL"),
            "padding='FULL' is not a padding mode of conv; valid modes: VALID, SAME, SAME_LOWER, "
            "CIRCULAR, REFLECT, CAUSAL",
        ),
        (
            lambda: pool_output_shape((8,), 2, padding="CIRCULAR"),
            "'CIRCULAR' is not a padding mode of pool; valid modes: VALID, SAME, SAME_LOWER",
        ),
        (
            lambda: conv_transpose_output_shape((8,), 2, padding="REFLECT"),
            "not a padding mode of conv_transpose; valid modes: VALID, SAME, CIRCULAR",
        ),
        (
            lambda: conv_output_size(32, 3, padding="circular"),
            r"Flax compares this mode case-sensitively for conv \(another spelling fails or "
            r"means something else\); write padding='CIRCULAR'",
        ),
        (
            lambda: conv_transpose_output_shape((8,), 3, padding="same"),
            r"case-sensitively for conv_transpose \(another spelling fails or means something "
            r"else\); write padding='SAME'",
        ),
        (
            lambda: conv_output_size(32, 3, padding=(1, 2, 3)),
            r"padding must be an int or a \(lo, hi\) pair of 2 ints, got \(1, 2, 3\) with 3",
        ),
        (
            lambda: conv_output_shape((8, 8), 3, padding=[(1,), (1, 1)]),
            r"padding\[0\] must be an int or a \(lo, hi\) pair of 2 ints, got \(1,\) with 1",
        ),
        (
            lambda: conv_output_shape((8, 8), 3, padding=[(1, 1)]),
            r"padding=\[\(1, 1\)\] has 1 entries but the input has 2 spatial axes",
        ),
        (
            lambda: conv_output_shape((32, 32), (3, 3, 3)),
            r"kernel=\(3, 3, 3\) has 3 values but the input has 2 spatial axes; give one int or 2",
        ),
        (
            lambda: conv_output_shape((32, 32), 3, stride=(1, 0)),
            r"stride\[1\] must be an integer >= 1, got 0",
        ),
        (
            lambda: pool_output_shape((32, 32), (2,)),
            r"window=\(2,\) has 1 values but the input has 2 spatial axes",
        ),
        (lambda: conv_output_shape((), 3), r"spatial_shape must be a non-empty sequence"),
        (lambda: conv_output_shape(32, 3), r"spatial_shape must be a non-empty sequence"),
        (lambda: conv_output_shape((32, 0), 3), r"spatial_shape\[1\] must be an integer >= 1"),
        (
            lambda: conv_output_size(4, 5, padding=1, dilation=2),
            r"output size below 1: kernel 5 with dilation 2 spans 9 pixels but the padded input "
            r"has 6 \(size 4 \+ padding 1 \+ 1\)",
        ),
        (
            lambda: conv_output_shape((32, 4), 5),
            r"axis 1: output size below 1: kernel 5 spans 5 pixels but the padded input has 4",
        ),
        (
            lambda: pool_output_shape((3,), 5),
            r"output size below 1: window 5 spans 5 pixels but the padded input has 3",
        ),
        (
            lambda: conv_transpose_output_shape((3,), 5, padding=0),
            r"kernel 5 spans 5 pixels but the stride-dilated, padded input has 3 "
            r"\(\(3-1\)\*1 \+ 1 \+ 0 \+ 0\)",
        ),
        (
            lambda: resolve_padding(0, (8,), 2, operation="pool", dilation=2),
            "dilation=2: Flax's pools have no dilation",
        ),
        (lambda: resolve_padding(0, (8,), 2, operation="fft"), "operation='fft' is not one of"),
        (lambda: explain(8, 2, operation="fft"), "operation='fft' is not one of conv, pool"),
        (lambda: ConvSpec(0), "kernel must be an integer >= 1, got 0"),
        (lambda: ConvSpec(3, padding="FULL"), "padding='FULL' is not a padding mode of conv"),
        (lambda: ConvSpec(3, features=0), "features must be an integer >= 1, got 0"),
        (lambda: PoolSpec((2, 0)), r"window\[1\] must be an integer >= 1, got 0"),
        (lambda: PoolSpec(2, padding="REFLECT"), "not a padding mode of pool"),
        (lambda: receptive_field([ConvSpec(3), "pool"], (8,)), r"layers\[1\]='pool' is not a"),
        (
            lambda: receptive_field([ConvSpec(3), ConvSpec(5)], (6,)),
            r"layers\[1\] \(ConvSpec.*\) on input \(4,\): output size below 1: kernel 5 spans 5",
        ),
        (lambda: receptive_field(ConvSpec(3), (8,)), "layers must be a sequence of ConvSpec"),
        (lambda: receptive_field([ConvSpec(3)], 8), "input_shape must be a non-empty sequence"),
    ],
)
def test_bad_input_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@settings(max_examples=SHAPE_EXAMPLES)
@given(testing.invalid_shape_arguments())
def test_every_invalid_argument_is_refused_with_its_message(case):
    with pytest.raises(ValueError, match=case.match):
        case.call()


def test_numpy_integers_are_integers():
    np = pytest.importorskip("numpy")
    assert conv_output_shape((np.int64(32),), np.int32(3), np.int64(2)) == (15,)


# --------------------------------------------------------------------------- explain
def test_explain_states_the_formula_with_numbers():
    assert explain(32, 3, stride=2) == "floor((32 + 2*0 - 1*(3-1) - 1) / 2) + 1 = 15"
    assert explain(32, 3) == "floor((32 + 2*0 - 1*(3-1) - 1) / 1) + 1 = 30"
    assert explain(7, 3, 2, (0, 1)) == "floor((7 + 0 + 1 - 1*(3-1) - 1) / 2) + 1 = 3"
    assert explain(32, 3, dilation=2, padding=2) == "floor((32 + 2*2 - 2*(3-1) - 1) / 1) + 1 = 32"


def test_explain_derives_mode_padding():
    assert explain(224, 7, 2, "SAME").splitlines() == [
        "SAME: total pad max((ceil(224/2) - 1)*2 + 7 - 224, 0) = 5, split (2, 3) "
        "(extra pixel at the end)",
        "floor((224 + 2 + 3 - 1*(7-1) - 1) / 2) + 1 = 112",
    ]
    assert "split (3, 2) (extra pixel at the start)" in explain(224, 7, 2, "SAME_LOWER")
    # An even total splits evenly: no pixel is left over to place.
    assert explain(7, 3, 1, "SAME").splitlines()[0].endswith("= 2, split (1, 1)")
    assert explain(10, 4, padding="CIRCULAR").splitlines()[0] == (
        "CIRCULAR: Flax wraps ((span-1)//2, span//2) = (1, 2) pixels, span 4"
    )
    assert "REFLECT: Flax mirrors" in explain(10, 3, padding="REFLECT")
    assert explain(10, 3, dilation=2, padding="CAUSAL").splitlines()[0] == (
        "CAUSAL: 2*(3-1) = 4 zeros before, none after"
    )
    assert explain(10, 3, padding="VALID") == "floor((10 + 2*0 - 1*(3-1) - 1) / 1) + 1 = 8"


def test_explain_pool_and_transpose_and_axes():
    assert explain(15, 2, 2, operation="pool") == "floor((15 + 2*0 - 2) / 2) + 1 = 7"
    assert explain(15, 2, None, operation="pool") == "floor((15 + 2*0 - 2) / 1) + 1 = 14"
    transpose = explain(8, 3, 2, "SAME", operation="conv_transpose").splitlines()
    assert transpose[-1] == "(8-1)*2 + 1 + 2 + 1 - 1*(3-1) = 16"
    circular = explain(8, 3, 2, "CIRCULAR", operation="conv_transpose").splitlines()
    assert circular[-1] == "CIRCULAR: Flax wraps the output onto size*stride = 8*2 = 16"
    lines = explain((32, 16), (3, 1), 2).splitlines()
    assert lines == [
        "axis 0: floor((32 + 2*0 - 1*(3-1) - 1) / 2) + 1 = 15",
        "axis 1: floor((16 + 2*0 - 1*(1-1) - 1) / 2) + 1 = 8",
    ]


@settings(max_examples=200)
@given(testing.conv_cases())
def test_explain_ends_in_the_calculated_size(case):
    text = explain(case.spatial_shape, case.kernel, case.strides, case.padding, case.dilation)
    finals = [line for line in text.splitlines() if line.split(": ", 1)[-1].startswith("floor")]
    got = tuple(int(line.rsplit("= ", 1)[1]) for line in finals)
    want = conv_output_shape(
        case.spatial_shape, case.kernel, case.strides, case.padding, case.dilation
    )
    assert got == want


def test_explain_refuses_bad_input_like_the_calculator():
    with pytest.raises(ValueError, match="kernel 5 with dilation 2 spans 9 pixels"):
        explain(4, 5, padding=1, dilation=2)


# --------------------------------------------------------------------------- receptive field
def test_vgg_stack_receptive_field_by_hand():
    # Three 3x3 convs (padding 1): 3, 5, 7 -- the VGG argument for stacking 3x3s.
    vgg = [ConvSpec(3, padding=1)] * 3 + [PoolSpec(2, stride=2), ConvSpec(3, padding=1)]
    fields = receptive_field(vgg, (32, 32))
    assert [rf.size for rf in fields] == [(3, 3), (5, 5), (7, 7), (8, 8), (12, 12)]
    assert [rf.jump for rf in fields] == [(1, 1), (1, 1), (1, 1), (2, 2), (2, 2)]
    # Padding 1 keeps the first field centred on pixel 0; the 2x2 pool moves it to 0.5.
    assert [rf.start for rf in fields] == [(0, 0), (0, 0), (0, 0), (0.5, 0.5), (0.5, 0.5)]
    assert [rf.output_shape for rf in fields] == [(32, 32)] * 3 + [(16, 16)] * 2
    assert fields[3].input_shape == (32, 32) and fields[3].padding == ((0, 0), (0, 0))


def test_strided_dilated_stack_receptive_field_by_hand():
    stack = [ConvSpec(3, stride=2), PoolSpec(2, 2), ConvSpec(3, dilation=2, padding="SAME")]
    fields = receptive_field(stack, (32,))
    # conv: size 3, jump 2, centre 1.  pool: 3 + 1*2 = 5, jump 4, centre 1 + 0.5*2 = 2.
    # dilated conv (span 5, SAME pads (2, 2) on 7): 5 + 4*4 = 21, jump 4, centre 2 + 0*4.
    assert [(rf.size[0], rf.jump[0], rf.start[0]) for rf in fields] == [
        (3, 2, 1.0),
        (5, 4, 2.0),
        (21, 4, 2.0),
    ]
    assert fields[2].padding == ((2, 2),)
    assert [rf.output_shape for rf in fields] == [(15,), (7,), (7,)]


def test_receptive_field_per_axis_and_same_padding_start():
    (rf,) = receptive_field([ConvSpec((3, 1), stride=(2, 1), padding="SAME")], (32, 5))
    assert rf.size == (3, 1) and rf.jump == (2, 1)
    assert rf.start == (1.0, 0.0)  # SAME pads (0, 1): the first window is centred on pixel 1


def test_specs_are_frozen_and_hashable():
    spec = ConvSpec([3, 3], padding=[[1, 1], 0])
    assert spec.kernel == (3, 3) and spec.padding == ((1, 1), 0)
    assert hash(spec) == hash(ConvSpec((3, 3), padding=((1, 1), 0)))
    assert PoolSpec(2, 2).output_shape((15, 15)) == (7, 7)


# --------------------------------------------------------------------------- module hygiene
def test_doctests():
    result = doctest.testmod(shapes, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted >= 15


def test_importing_the_calculator_and_its_cli_does_not_import_jax():
    code = (
        "import sys, jaxcnn.shapes, jaxcnn.commands.shapes, jaxcnn.testing; "
        "bad = sorted(m for m in ('jax', 'flax', 'numpy') if m in sys.modules); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_public_names():
    for name in shapes.__all__:
        assert getattr(shapes, name).__doc__ or name.isupper()
