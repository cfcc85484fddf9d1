"""Random ConvBlocks: the routes this CPU takes agree with plain Flax, value and gradient.

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
fast one is the further off.

A deeper run (1,000 examples), compiled as users compile (the suite turns LLVM's
optimizations off, and the first of those bugs showed only with them on)::

    JAXCNN_TEST_FULL_OPTIMIZATION=1 HYPOTHESIS_PROFILE=slow \\
        python -m pytest tests/test_routes_agree.py -n 0
"""

from __future__ import annotations

import dataclasses
import math
import os
from functools import partial

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, note, settings

from jaxcnn import conv_backend, shapes, testing
from jaxcnn.layers import ConvBlock

EXAMPLES = 30 if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci" else 1000

# Channel counts where the routes change: tiny layers stay on XLA, Winograd and oneDNN's
# AVX2 rules switch at 16 and 32, the native conv + pool kernel takes few input channels.
CHANNELS = (1, 2, 3, 4, 8, 16, 32, 64)

# Error allowed per compared array (see `_disagreements`), as a fraction of its norm:
# float32 routes differ by about 1e-6 (Winograd's transforms, other summation orders),
# bfloat16 ones by about 1e-2 (8 bits of mantissa, rounded where each route stores). The
# bugs this guards against were 0.2-0.9.
RTOL = {"float32": 1e-3, "bfloat16": 6e-2}
# How much further from the exact value than the plain route of the same dtype the fast
# one may be: for gradients that cancel to rounding noise, and bfloat16 ReLU and max-pool
# decisions that rounding flips (each route flips others).
REFERENCE_FACTOR = {"float32": 20, "bfloat16": 4}
# Error allowed per element whatever the array's norm: the inputs, probe and weights here
# are O(1), and an array that is zero in exact arithmetic (a conv bias's gradient before a
# batch norm) is each route's rounding noise: up to about 1e-2 per element in bfloat16.
FLOOR = {"float32": 1e-4, "bfloat16": 2e-2}


@dataclasses.dataclass(frozen=True)
class BlockCase:
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

    @property
    def dtype_name(self) -> str:
        return jnp.dtype(self.fields["dtype"]).name


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
        dtype=draw(st.sampled_from([jnp.float32, jnp.float32, jnp.bfloat16])),
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


def _train_step_outputs(block: ConvBlock, variables, inputs):
    """Output, updated state and the gradients of ``sum(output * probe)`` with respect to
    the parameters and every input (the block's input, its residual), jitted."""
    params = variables["params"]
    state = {name: value for name, value in variables.items() if name != "params"}

    def loss(params, x, residual=None):
        out, updated = block.apply(
            {"params": params, **state}, x, train=True, residual=residual, mutable=list(state)
        )
        # The same probe for every dtype (float32 also under x64, where the default is
        # float64), the product in float32 or wider.
        probe = jax.random.normal(jax.random.key(2), out.shape, jnp.float32)
        return jnp.sum(out.astype(jnp.promote_types(out.dtype, jnp.float32)) * probe), (
            out,
            updated,
        )

    argnums = tuple(range(1 + len(inputs)))
    step = jax.jit(jax.value_and_grad(loss, argnums=argnums, has_aux=True))
    (_, (out, updated)), grads = step(params, *inputs)
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


@settings(max_examples=EXAMPLES)
@given(case=block_cases())
def test_fast_routes_match_the_plain_route(case):
    note(f"ConvBlock({case.fields}) on {case.input_shape}, residual {case.residual_shape}")
    shapes_in = [case.input_shape] + ([case.residual_shape] if case.residual_shape else [])
    inputs = [jax.random.normal(jax.random.key(1 + i), s) for i, s in enumerate(shapes_in)]
    if case.residual_shape:  # a residual block's shortcut comes in the computation dtype
        inputs[1] = inputs[1].astype(case.fields["dtype"])
    variables = case.block(reference=True).init(jax.random.key(0), inputs[0])
    fast = _train_step_outputs(case.block(reference=False), variables, inputs)
    # One MonkeyPatch per example (the fixture's would keep the setting for the next one).
    with pytest.MonkeyPatch.context() as patch, conv_backend.use_conv_backend("xla"):
        patch.setenv("JAXCNN_NORM_BACKEND", "xla")
        reference = _train_step_outputs(case.block(reference=True), variables, inputs)
        if not _disagreements(fast, reference, case.dtype_name):
            return
        # Only where the two routes disagree: which is nearer the exact value?
        with jax.enable_x64(True):
            as_float64 = partial(jax.tree.map, lambda a: jnp.asarray(a, jnp.float64))
            exact = _train_step_outputs(
                case.block(reference=True, dtype=jnp.float64),
                as_float64(variables),
                as_float64(inputs),
            )
    found = _disagreements(fast, reference, case.dtype_name, exact)
    assert not found, found
