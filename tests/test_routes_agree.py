"""Random ConvBlocks and residual blocks: the routes this CPU takes agree with plain Flax,
value and gradient.

jaxcnn runs a ``ConvBlock`` through whatever pays on this machine: oneDNN or its own
Winograd for the convolution, fused conv + max-pool kernels, native batch-norm kernels,
a hand-written tiled max pool. Each has its own gradient code. Sessions 41 and 42 found
three wrong gradients (a recomputed pool input, oneDNN's kernel gradient for an unread
input edge, XLA's own input gradient for wide low padding) by comparing random blocks
with a plain route, and this file, on its first run, an XLA:CPU abort while compiling
the gradient of kernel-2 stride-2 convolutions (``conv_backend``'s
``pad_low_edge_of_halving_axes``).

The reference is the same block with every fast path off: ``fused_pool=False``,
``fused_norm=False``, ``pool_method="reduce_window"``, ``space_to_depth=False``, XLA's
convolutions (``use_conv_backend("xla")``, with jaxcnn's corrections of XLA's padding
bugs) and XLA's norms (``JAXCNN_NORM_BACKEND=xla``). Both run under ``jit`` in training
mode, in float32 or bfloat16; compared: the output, the updated batch statistics and the
gradients of ``sum(output * probe)`` with respect to every parameter and input. Where
the two disagree beyond rounding, the reference route in float64 decides whether the
fast one is the further off. The reference is compiled with XLA's excess precision off
(``ROUNDED_AS_WRITTEN``): by default XLA keeps a bfloat16 conv output in float32 when it
fuses it into the norm that reads it, while the fast routes' kernels (oneDNN, the fused
batch norm) take the bfloat16 the program asks for, so the plain route was the more
precise one for reasons of XLA's fusion, not of the routes (session 45: a bfloat16
BottleneckBlock's gradients 10 % from float64 against the plain route's 3.5 %, the same
10 % once both rounded as written).

Residual blocks (``ResidualBlock``, ``BottleneckBlock``; shortcut A or B, stride 1 or 2,
1-D to 3-D) add their own fast paths: ``fork`` sums the input's two gradients on the
batch-norm kernels, the shortcut is added inside the last norm (its gradient from the
kernels' backward pass), the output is materialised. Their reference is the textbook
block in plain Flax (``nn.Conv``, ``nn.BatchNorm`` / ``GroupNorm`` / ``LayerNorm``,
``shortcut + norm(conv(...))``, then the activation), with the same variables.

A deeper run (1,000 ConvBlocks, 300 residual blocks), compiled as users compile (the
suite turns LLVM's optimizations off, and the first of those bugs showed only with them
on), with fresh memory filled with a pattern by glibc (its first run found oneDNN 3.2
leaving part of some bfloat16 kernel gradients unwritten: right by luck on fresh zeroed
memory, wrong after other calls; ``ffi_conv.kernel_grad_dtype``)::

    MALLOC_PERTURB_=165 JAXCNN_TEST_FULL_OPTIMIZATION=1 HYPOTHESIS_PROFILE=slow \\
        python -m pytest tests/test_routes_agree.py -n 0
"""

from __future__ import annotations

import dataclasses
import math
import os
from functools import partial
from typing import Any

import flax.linen as nn
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, note, settings

from jaxcnn import conv_backend, shapes, testing
from jaxcnn.layers import ConvBlock
from jaxcnn.models import BottleneckBlock, ResidualBlock

FULL_RUN = os.environ.get("HYPOTHESIS_PROFILE", "ci") != "ci"
EXAMPLES = 1000 if FULL_RUN else 30
RESIDUAL_EXAMPLES = 300 if FULL_RUN else 12
DTYPES = (jnp.float32, jnp.float32, jnp.bfloat16)  # drawn: float32 twice as often

# Channel counts where the routes change: tiny layers stay on XLA, Winograd and oneDNN's
# AVX2 rules switch at 16 and 32, the native conv + pool kernel takes few input channels.
CHANNELS = (1, 2, 3, 4, 8, 16, 32, 64)

# Error allowed per compared array (see `_disagreements`), as a fraction of its norm:
# float32 routes differ by about 1e-6 (Winograd's transforms, other summation orders),
# bfloat16 ones by about 1e-2 (8 bits of mantissa, rounded where each route stores). The
# bugs this guards against were 0.2-0.9. bfloat16 was 6e-2 until session 46, set when the
# reference kept some bfloat16 values in float32: with both routes rounding as written,
# 91 random bfloat16 ConvBlocks used at most a quarter of that, and a 4 % error put into
# batch norm's scale gradient passed 6e-2 and fails 3e-2.
RTOL = {"float32": 1e-3, "bfloat16": 3e-2}
# How much further from the exact value than the plain route of the same dtype the fast
# one may be: for gradients that cancel to rounding noise, and bfloat16 ReLU and max-pool
# decisions that rounding flips (each route flips others).
REFERENCE_FACTOR = {"float32": 20, "bfloat16": 4}
# Error allowed per element whatever the array's norm: the inputs, probe and weights here
# are O(1), and an array that is zero in exact arithmetic (a conv bias's gradient before a
# batch norm) is each route's rounding noise: up to about 1e-2 per element in bfloat16.
FLOOR = {"float32": 1e-4, "bfloat16": 2e-2}
# The reference routes round where their dtypes say: without this XLA:CPU skips a
# bfloat16 round trip (f32 -> bf16 -> f32) inside a fusion, e.g. between a conv and the
# norm after it, where the fast routes' kernels read the rounded bfloat16.
ROUNDED_AS_WRITTEN = {"xla_allow_excess_precision": False}
# Input draws a bfloat16 block must fail on, every one, to fail (`_assert_fast_route_agrees`).
BFLOAT16_DRAWS = 4


class _DrawnDtype:
    """For a case whose ``fields`` hold the computation ``dtype``: its name."""

    @property
    def dtype_name(self) -> str:
        return jnp.dtype(self.fields["dtype"]).name


@dataclasses.dataclass(frozen=True)
class BlockCase(_DrawnDtype):
    """A ConvBlock's fields, an input shape it accepts and, for a block that ends a
    residual block, the shape of the shortcut added after its norm."""

    fields: dict
    input_shape: tuple[int, ...]
    residual_shape: tuple[int, ...] | None = None

    def block(self, reference: bool, dtype=None) -> ConvBlock:
        """The fast block, or the reference (every fast path off); ``dtype`` replaces
        the computation dtype (float64 for the exact value)."""
        plain = dict(fused_pool=False, fused_norm=False, space_to_depth=False)
        if self.fields.get("pool"):
            plain["pool_method"] = "reduce_window"
        fields = {**self.fields, **(plain if reference else {})}
        return ConvBlock(**{**fields, **({} if dtype is None else {"dtype": dtype})})

    def inputs(self, draw: int) -> dict:
        """The block's keyword arguments, random: ``x`` and, with one, ``residual``."""
        shapes_in = {"x": self.input_shape}
        if self.residual_shape:
            shapes_in["residual"] = self.residual_shape
        inputs = _normal_inputs(shapes_in, draw)
        if self.residual_shape:  # a residual block's shortcut comes in the computation dtype
            inputs["residual"] = inputs["residual"].astype(self.fields["dtype"])
        return inputs


@st.composite
def block_cases(draw) -> BlockCase:
    """A random ConvBlock whose norm has enough elements to normalise over."""
    case = draw(testing.conv_cases(max_groups=2, max_extra_size=10))
    in_mult = draw(st.sampled_from(CHANNELS))
    out_mult = draw(st.sampled_from(CHANNELS))
    batch = draw(st.integers(1, 5))
    in_channels = case.groups * in_mult
    case = dataclasses.replace(
        case,
        input_shape=(batch, *case.spatial_shape, in_channels),
        features=case.groups * out_mult,
    )
    fields = dict(
        features=case.features,
        kernel_size=case.kernel,
        stride=case.strides,
        padding=case.padding,
        dilation=case.dilation,
        feature_group_count=case.groups,
        norm=draw(st.sampled_from([None, None, "batch", "group", "layer"])),
        activation=draw(st.sampled_from(["relu", "relu", "gelu", None])),
        use_bias=draw(st.sampled_from([None, True, False])),
        dtype=draw(st.sampled_from(DTYPES)),
    )
    conv_out = case.expected_shape
    if draw(st.booleans()):
        window = draw(st.integers(1, 3))
        stride = draw(st.sampled_from([None, 1, 2, 3]))
        padding = draw(st.sampled_from(["VALID", "VALID", "SAME"]))
        try:
            pooled = shapes.pool_output_shape(conv_out[1:-1], window, stride or window, padding)
        except ValueError:
            assume(False)  # the conv output is smaller than the window
        fields.update(
            pool=draw(st.sampled_from(["max", "max", "avg", "sum"])),
            pool_window=window,
            pool_stride=stride,
            pool_padding=padding,
            pool_first=draw(st.booleans()),
        )
        normalised = pooled if fields["pool_first"] else conv_out[1:-1]
    else:
        normalised = conv_out[1:-1]
    # Statistics over one or two numbers are rounding noise (every route is right and
    # they still disagree), so each norm gets at least 8 elements per statistic.
    spatial = math.prod(normalised)
    per_statistic = {
        None: 8,
        "batch": batch * spatial,
        "group": spatial * case.features // math.gcd(32, case.features),  # default groups
        "layer": case.features,  # over channels
    }[fields["norm"]]
    assume(per_statistic >= 8)
    residual_shape = None
    if draw(st.booleans()):
        residual_shape = (batch, *normalised, case.features)
    return BlockCase(fields, case.input_shape, residual_shape)


def _train_step_outputs(block: nn.Module, variables, inputs: dict, compiler_options=None):
    """Output, updated state and the gradients of ``sum(output * probe)`` with respect to
    the parameters and every input (the block's keyword arguments ``inputs``), jitted
    with XLA's ``compiler_options``."""
    params = variables["params"]
    state = {name: value for name, value in variables.items() if name != "params"}

    def loss(params, inputs):
        out, updated = block.apply(
            {"params": params, **state}, **inputs, train=True, mutable=list(state)
        )
        # The same probe for every dtype (float32 also under x64, where the default is
        # float64), the product in float32 or wider.
        probe = jax.random.normal(jax.random.key(2), out.shape, jnp.float32)
        return jnp.sum(out.astype(jnp.promote_types(out.dtype, jnp.float32)) * probe), (
            out,
            updated,
        )

    step = jax.jit(
        jax.value_and_grad(loss, argnums=(0, 1), has_aux=True),
        compiler_options=compiler_options,
    )
    (_, (out, updated)), grads = step(params, inputs)
    return {"output": out, "state": updated, "grads": grads}


def _disagreements(fast, reference, dtype: str, exact=None) -> list[str]:
    """The arrays where the fast route is off by more than ``dtype``'s rounding explains.

    Without ``exact``: off from the reference route by more than ``RTOL`` of its
    norm and ``FLOOR`` per element. With ``exact`` (the reference route in float64): off
    from it by more than that, and by more than ``REFERENCE_FACTOR`` times the reference
    route's own error, for a gradient that cancels to nearly nothing (the kernel of a
    one-channel conv before a batch norm) is rounding noise on every route.
    """
    found = []
    exact_leaves = jax.tree.leaves(reference if exact is None else exact)
    for (path, f), r, e in zip(
        jax.tree_util.tree_leaves_with_path(fast),
        jax.tree.leaves(reference),
        exact_leaves,
        strict=True,
    ):
        f, r, e = (np.asarray(a, np.float64) for a in (f, r, e))
        fast_error, reference_error = np.linalg.norm(f - e), np.linalg.norm(r - e)
        allowed = max(
            RTOL[dtype] * np.linalg.norm(e),
            REFERENCE_FACTOR[dtype] * reference_error,
            FLOOR[dtype] * math.sqrt(e.size),
        )
        if fast_error > allowed:
            found.append(
                f"{jax.tree_util.keystr(path)}: error {fast_error:.3g} of norm "
                f"{np.linalg.norm(e):.3g} ({dtype} reference route: {reference_error:.3g})"
            )
    return found


def _fast_route_disagreements(case, inputs: dict) -> list[str]:
    """One training step of ``case.block`` on this CPU's routes against the reference
    block (run on XLA's convs and norms); float64 decides where they disagree."""
    variables = case.block(reference=True).init(jax.random.key(0), **inputs)
    fast = _train_step_outputs(case.block(reference=False), variables, inputs)
    # One MonkeyPatch per example (the fixture's would keep the setting for the next one).
    with pytest.MonkeyPatch.context() as patch, conv_backend.use_conv_backend("xla"):
        patch.setenv("JAXCNN_NORM_BACKEND", "xla")
        reference = _train_step_outputs(
            case.block(reference=True), variables, inputs, ROUNDED_AS_WRITTEN
        )
        if not _disagreements(fast, reference, case.dtype_name):
            return []
        # Only where the two routes disagree: which is nearer the exact value?
        with jax.enable_x64(True):
            as_float64 = partial(jax.tree.map, lambda a: jnp.asarray(a, jnp.float64))
            exact = _train_step_outputs(
                case.block(reference=True, dtype=jnp.float64),
                as_float64(variables),
                as_float64(inputs),
            )
    return _disagreements(fast, reference, case.dtype_name, exact)


def _assert_fast_route_agrees(case) -> None:
    """``case``'s fast route agrees with its reference (``_fast_route_disagreements``).

    In bfloat16 a ReLU or max-pool decision that rounding flips on one route and not on
    the other moves every gradient upstream of it, in a small block by up to a third
    (a one-channel residual block, 36 elements a map: a pre-activation of -0.0064 in
    float64 came out +0.006). Another draw of the inputs does not flip the same decision,
    while a wrong gradient is wrong for every draw: a bfloat16 block fails only when all
    ``BFLOAT16_DRAWS`` draws disagree. Two were not enough: in a block with few elements
    per channel one flip moves a gradient by 5-10 % of its norm, and a BottleneckBlock
    with 4 x 2 x 2 positions per statistic failed 2 of 12 draws, the first two (session
    46: its routes land a pre-activation of -0.0021 at +0.0002 and at 0, both 0.002 off);
    the others passed.
    """
    found = []
    for draw in range(BFLOAT16_DRAWS if case.dtype_name == "bfloat16" else 1):
        found.append(_fast_route_disagreements(case, case.inputs(draw)))
        if not found[-1]:
            return
    assert not found, found


def _normal_inputs(shapes_by_name: dict, draw: int) -> dict:
    """Float32 N(0, 1) arrays (also under x64), one key each, other keys for each draw."""
    return {
        name: jax.random.normal(jax.random.key(1 + i + 100 * draw), shape, jnp.float32)
        for i, (name, shape) in enumerate(shapes_by_name.items())
    }


@settings(max_examples=EXAMPLES)
@given(case=block_cases())
def test_fast_routes_match_the_plain_route(case):
    note(f"ConvBlock({case.fields}) on {case.input_shape}, residual {case.residual_shape}")
    _assert_fast_route_agrees(case)


# --------------------------------------------------------------------- residual blocks
class _TextbookConvNorm(nn.Module):
    """``activation(norm(conv(x)) + shortcut)`` in plain Flax, with ConvBlock's variable
    names (``conv``, ``norm``) so that both take the same variables; padding ``k // 2``."""

    features: int
    kernel: int
    stride: int
    norm: str | None
    activation: str | None
    dtype: Any

    @nn.compact
    def __call__(self, x, train: bool = False, shortcut=None):
        rank = x.ndim - 2
        y = nn.Conv(
            self.features,
            (self.kernel,) * rank,
            (self.stride,) * rank,
            [(self.kernel // 2,) * 2] * rank,
            use_bias=self.norm is None,
            dtype=self.dtype,
            name="conv",
        )(x)
        norm = {
            None: None,
            "batch": partial(nn.BatchNorm, not train, momentum=0.9, epsilon=1e-5),
            "group": partial(nn.GroupNorm, math.gcd(32, self.features), epsilon=1e-5),
            "layer": partial(nn.LayerNorm, epsilon=1e-6),
        }[self.norm]
        if norm is not None:
            y = norm(dtype=self.dtype, name="norm")(y)
        if shortcut is not None:
            y = y + shortcut
        return y if self.activation is None else getattr(nn, self.activation)(y)


class _TextbookResidualBlock(nn.Module):
    """He et al.'s blocks as the models' docstrings describe them, without jaxcnn's fork,
    fused norms, shortcut added inside the norm or materialised output."""

    bottleneck: bool
    features: int
    stride: int
    shortcut: str
    norm: str | None
    activation: str | None
    dtype: Any

    @nn.compact
    def __call__(self, x, train: bool = False):
        layer = partial(
            _TextbookConvNorm, norm=self.norm, activation=self.activation, dtype=self.dtype
        )
        out = self.features * (4 if self.bottleneck else 1)
        if self.bottleneck:
            y = layer(self.features, 1, 1, name="conv1")(x, train)
            y = layer(self.features, 3, self.stride, name="conv2")(y, train)
        else:
            y = layer(self.features, 3, self.stride, name="conv1")(x, train)
        if self.stride == 1 and x.shape[-1] == out:
            shortcut = x
        elif self.shortcut == "B":
            shortcut = layer(out, 1, self.stride, activation=None, name="shortcut")(x, train)
        else:  # "A": every stride-th position, the new channels zeros (half of them first)
            shortcut = x[(slice(None), *[slice(None, None, self.stride)] * (x.ndim - 2))]
            extra = out - x.shape[-1]
            shortcut = jnp.pad(
                shortcut, [(0, 0)] * (x.ndim - 1) + [(extra // 2, extra - extra // 2)]
            )
        last = layer(out, 1, 1, name="conv3") if self.bottleneck else layer(out, 3, 1, name="conv2")
        return last(y, train, shortcut)


@dataclasses.dataclass(frozen=True)
class ResidualCase(_DrawnDtype):
    """A residual block's fields and an input shape."""

    bottleneck: bool
    fields: dict
    input_shape: tuple[int, ...]

    def block(self, reference: bool, dtype=None) -> nn.Module:
        """jaxcnn's block, or the textbook one; ``dtype`` replaces the computation dtype."""
        fields = {**self.fields, **({} if dtype is None else {"dtype": dtype})}
        if reference:
            return _TextbookResidualBlock(self.bottleneck, **fields)
        return (BottleneckBlock if self.bottleneck else ResidualBlock)(**fields)

    def inputs(self, draw: int) -> dict:
        """A random input in the computation dtype, as the previous block hands it over."""
        x = _normal_inputs({"x": self.input_shape}, draw)["x"]
        return {"x": x.astype(self.fields["dtype"])}


@st.composite
def residual_cases(draw) -> ResidualCase:
    """A random basic or bottleneck block, 1-D to 3-D, whose norms have enough elements."""
    bottleneck = draw(st.booleans())
    rank = draw(st.integers(1, 3))
    stride = draw(st.sampled_from([1, 2]))
    features = draw(st.sampled_from(CHANNELS[:-1] if bottleneck else CHANNELS))
    out = features * (4 if bottleneck else 1)
    in_channels = draw(st.sampled_from([c for c in CHANNELS if c <= out] + [out]))
    shortcut = draw(st.sampled_from(["A", "B"]))
    fields = dict(
        features=features,
        stride=stride,
        shortcut=shortcut,
        norm=draw(st.sampled_from(["batch", "batch", "group", "layer", None])),
        activation=draw(st.sampled_from(["relu", "relu", "gelu"])),
        dtype=draw(st.sampled_from(DTYPES)),
    )
    batch = draw(st.integers(1, 4))
    spatial = tuple(draw(st.integers(1, (16, 9, 5)[rank - 1])) for _ in range(rank))
    strided = math.prod(-(-n // stride) for n in spatial)
    # As for ConvBlocks: at least 8 elements per statistic in every norm of the block.
    per_statistic = {
        None: 8,
        "batch": batch * strided,
        "group": strided * min(features // math.gcd(32, features), out // math.gcd(32, out)),
        "layer": features,
    }[fields["norm"]]
    assume(per_statistic >= 8)
    return ResidualCase(bottleneck, fields, (batch, *spatial, in_channels))


@settings(max_examples=RESIDUAL_EXAMPLES)
@given(case=residual_cases())
def test_residual_blocks_match_the_textbook_blocks(case):
    kind = "BottleneckBlock" if case.bottleneck else "ResidualBlock"
    note(f"{kind}({case.fields}) on {case.input_shape}")
    x = jnp.zeros(case.input_shape, case.fields["dtype"])
    tree = partial(jax.tree.map, lambda a: (a.shape, a.dtype))
    jaxcnn_variables, textbook_variables = (
        tree(jax.eval_shape(case.block(reference).init, jax.random.key(0), x))
        for reference in (False, True)
    )
    assert jaxcnn_variables == textbook_variables  # the same names, shapes and dtypes
    _assert_fast_route_agrees(case)
