"""jaxcnn.layers: values against NumPy/SciPy references, errors, dtypes and transforms."""

from __future__ import annotations

import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from jaxcnn import shapes
from jaxcnn.layers import (
    ConvBlock,
    DenseStack,
    Flatten,
    GlobalPool,
    Pool,
    activate,
    get_activation,
)

# "rbg" keys: XLA:CPU compiles them faster than threefry (test time, not semantics).
NP_RNG = np.random.default_rng(0)
KEY = jax.random.key(0, impl="rbg")


# ----------------------------------------------------------------------------- references
def reference_conv(x, kernel, bias, stride, padding, dilation, groups=1):
    """N-D grouped convolution (cross-correlation) of one NHWC batch with SciPy."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    rank = x.ndim - 2
    spatial, kernel_size = x.shape[1:-1], kernel.shape[:rank]
    if padding in ("CIRCULAR", "REFLECT"):
        span = [d * (k - 1) + 1 for k, d in zip(kernel_size, dilation, strict=True)]
        pads = [((s - 1) // 2, s // 2) for s in span]
        mode = "wrap" if padding == "CIRCULAR" else "reflect"
        x = np.pad(x, [(0, 0), *pads, (0, 0)], mode=mode)
    else:
        pads = shapes.resolve_padding(padding, spatial, kernel_size, stride, dilation)
        x = np.pad(x, [(0, 0), *pads, (0, 0)])
    dilated = np.zeros(
        [d * (k - 1) + 1 for k, d in zip(kernel_size, dilation, strict=True)]
        + list(kernel.shape[-2:])
    )
    dilated[tuple(slice(None, None, d) for d in dilation)] = kernel
    cin_per_group = kernel.shape[-2]
    features = kernel.shape[-1]
    per_group_out = features // groups
    outputs = []
    for n in range(x.shape[0]):
        maps = []
        for f in range(features):
            g = f // per_group_out
            acc = sum(
                signal.correlate(x[n, ..., g * cin_per_group + c], dilated[..., c, f], "valid")
                for c in range(cin_per_group)
            )
            acc = acc[tuple(slice(None, None, s) for s in stride)]
            maps.append(acc + bias[f])
        outputs.append(np.stack(maps, axis=-1))
    return np.stack(outputs)


def reference_pool(x, kind, window, stride, pads):
    """Pooling by explicit loops over windows (NumPy)."""
    fill = -np.inf if kind == "max" else 0.0
    padded = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=fill)
    out_shape = [
        (n - w) // s + 1 for n, w, s in zip(padded.shape[1:-1], window, stride, strict=True)
    ]
    out = np.zeros((x.shape[0], *out_shape, x.shape[-1]))
    for index in np.ndindex(*out_shape):
        region = padded[
            (slice(None),)
            + tuple(slice(i * s, i * s + w) for i, s, w in zip(index, stride, window, strict=True))
        ]
        axes = tuple(range(1, x.ndim - 1))
        value = {"max": np.max, "sum": np.sum, "avg": np.mean}[kind](region, axis=axes)
        out[(slice(None), *index)] = value
    return out


def conv_variables(block, x, seed=0):
    """Variables with random (fixed by seed) kernel and bias."""
    # eval_shape: only the variables' shapes are needed, so nothing is compiled for init.
    variables = jax.eval_shape(block.init, KEY, x)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), variables)


CONV_CASES = [
    # (input shape, kernel, stride, padding, dilation, groups, features)
    ((2, 9, 9, 1), (3, 3), (1, 1), "VALID", (1, 1), 1, 2),
    ((1, 10, 9, 3), (3, 3), (2, 2), 1, (1, 1), 1, 4),
    ((1, 11, 11, 3), (3, 3), (1, 1), "SAME", (2, 2), 1, 2),
    ((1, 12, 10, 1), (3, 2), (2, 1), ((1, 2), (0, 1)), (1, 2), 1, 3),
    ((1, 9, 9, 3), (2, 2), (2, 2), "SAME", (1, 1), 1, 2),  # XLA's (0, 1) SAME split
    ((1, 8, 8, 3), (3, 3), (1, 1), "CIRCULAR", (1, 1), 1, 2),
    ((1, 8, 7, 3), (3, 3), (1, 1), "REFLECT", (1, 1), 1, 2),
    ((1, 8, 8, 3), (3, 3), (1, 1), 1, (1, 1), "depthwise", 6),
    ((1, 8, 8, 4), (3, 3), (1, 1), 0, (1, 1), 2, 4),
    ((2, 13, 1), (4,), (3,), "VALID", (1,), 1, 2),
    ((1, 12, 3), (3,), (1,), "CAUSAL", (2,), 1, 2),
    ((1, 6, 7, 5, 3), (3, 3, 2), (1, 2, 1), 1, (1, 1, 2), 1, 2),
]


@pytest.mark.parametrize("shape,kernel,stride,padding,dilation,groups,features", CONV_CASES)
def test_conv_block_equals_scipy_correlate(
    shape, kernel, stride, padding, dilation, groups, features
):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape).astype(np.float32)
    block = ConvBlock(
        features, kernel, stride, padding, dilation, feature_group_count=groups, activation=None
    )
    variables = conv_variables(block, x)
    got = np.asarray(jax.jit(block.apply)(variables, x))
    params = variables["params"]["conv"]
    group_count = shape[-1] if groups == "depthwise" else groups
    want = reference_conv(
        x,
        np.asarray(params["kernel"]),
        np.asarray(params["bias"]),
        stride,
        padding,
        dilation,
        group_count,
    )
    assert got.shape == want.shape == block.output_shape(shape)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_conv_block_norm_activation_pool_order():
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 3)).astype(np.float32)
    block = ConvBlock(4, (3, 3), padding=1, norm="batch", activation="relu", pool="max")
    variables = conv_variables(block, x)
    variables["batch_stats"] = jax.tree.map(jnp.abs, variables["batch_stats"])  # var > 0
    got = jax.jit(block.apply)(variables, x)
    conv = reference_conv(
        x, np.asarray(variables["params"]["conv"]["kernel"]), np.zeros(4), (1, 1), 1, (1, 1)
    )
    bn, stats = variables["params"]["norm"], variables["batch_stats"]["norm"]
    bn, stats = jax.tree.map(np.asarray, (bn, stats))
    normed = (conv - stats["mean"]) / np.sqrt(stats["var"] + 1e-5) * bn["scale"] + bn["bias"]
    want = reference_pool(np.maximum(normed, 0), "max", (2, 2), (2, 2), [(0, 0), (0, 0)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert "bias" not in variables["params"]["conv"]  # a norm makes the conv bias redundant


def test_batch_norm_uses_batch_statistics_when_training():
    x = NP_RNG.normal(size=(4, 6, 6, 2)).astype(np.float32) * 3 + 5
    block = ConvBlock(3, (1, 1), norm="batch", activation=None)
    variables = jax.jit(block.init)(KEY, x)
    y, updates = jax.jit(lambda v, a: block.apply(v, a, train=True, mutable=["batch_stats"]))(
        variables, x
    )
    np.testing.assert_allclose(jnp.mean(y, axis=(0, 1, 2)), 0.0, atol=1e-4)
    old, new = variables["batch_stats"]["norm"]["mean"], updates["batch_stats"]["norm"]["mean"]
    assert not np.allclose(old, new)


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_group_and_layer_norm(norm):
    x = NP_RNG.normal(size=(2, 5, 5, 3)).astype(np.float32) * 2 + 1
    block = ConvBlock(8, (3, 3), norm=norm, activation=None)
    y = jax.jit(block.apply)(jax.jit(block.init)(KEY, x), x)
    # gcd(32, 8) = 8 groups of one channel: each channel is normalised over space;
    # layer norm normalises each pixel over its channels.
    axes = (1, 2) if norm == "group" else (3,)
    np.testing.assert_allclose(jnp.mean(y, axis=axes), 0.0, atol=1e-4)
    np.testing.assert_allclose(jnp.var(y, axis=axes), 1.0, atol=1e-2)


# ----------------------------------------------------------------------------- pooling
POOL_CASES = [
    ((2, 8, 8, 3), (2, 2), None, "VALID"),
    ((1, 9, 7, 2), (2, 2), None, "VALID"),  # crop: the last row / column are dropped
    ((1, 9, 9, 1), (3, 3), (2, 2), "VALID"),
    ((1, 7, 8, 2), (3, 2), (2, 1), ((1, 1), (0, 1))),
    ((1, 7, 7, 2), (3, 3), (2, 2), "SAME"),
    ((2, 11, 3), (3,), (3,), "VALID"),
    ((1, 6, 5, 4, 2), (2, 2, 2), None, "VALID"),
]


@pytest.mark.parametrize("kind", ["max", "avg", "sum"])
@pytest.mark.parametrize("shape,window,stride,padding", POOL_CASES)
def test_pool_equals_numpy(kind, shape, window, stride, padding):
    x = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    pool = Pool(kind, window, stride, padding)
    got = np.asarray(jax.jit(pool.apply)({}, x))
    strides = window if stride is None else stride
    pads = shapes.resolve_padding(padding, shape[1:-1], window, strides, operation="pool")
    want = reference_pool(x, kind, window, strides, pads)
    assert got.shape == want.shape == pool.output_shape(shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["max", "avg", "sum"])
@pytest.mark.parametrize(
    "shape,window", [((2, 9, 8, 3), (2, 2)), ((1, 7, 3), (3,)), ((1, 4, 6, 5, 2), (2, 3, 2))]
)
def test_reshape_pool_matches_reduce_window_values_and_gradients(kind, shape, window):
    # Continuous random input: no ties, so both gradients are the same vector.
    x = NP_RNG.normal(size=shape).astype(np.float32)
    fast = Pool(kind, window, method="reshape")
    slow = Pool(kind, window, method="reduce_window")
    cotangent = NP_RNG.normal(size=fast.output_shape(shape)).astype(np.float32)

    @jax.jit
    def value_and_grad(x):
        def both(a):
            return fast.apply({}, a), slow.apply({}, a)

        (y_fast, y_slow), vjp = jax.vjp(both, x)
        g_fast = vjp((cotangent, jnp.zeros_like(cotangent)))[0]
        g_slow = vjp((jnp.zeros_like(cotangent), cotangent))[0]
        return y_fast, y_slow, g_fast, g_slow

    y_fast, y_slow, g_fast, g_slow = value_and_grad(x)
    # Sums in another order: equal on the CPU to 1e-6, within 3e-6 on an H200.
    np.testing.assert_allclose(y_fast, y_slow, rtol=1e-5)
    np.testing.assert_allclose(g_fast, g_slow, rtol=1e-5)


def test_reshape_jaxpr_has_no_reduce_window_under_auto():
    x = jnp.ones((1, 8, 8, 1))
    auto = str(jax.make_jaxpr(jax.grad(lambda a: Pool("max", 2).apply({}, a).sum()))(x))
    forced = jax.make_jaxpr(
        jax.grad(lambda a: Pool("max", 2, method="reduce_window").apply({}, a).sum())
    )(x)
    assert "reduce_window" not in auto and "select_and_scatter" not in auto
    assert "reduce_window" in str(forced) or "select_and_scatter" in str(forced)


def test_pool_reshape_method_refuses_overlapping_windows():
    with pytest.raises(ValueError, match="method='reshape' needs window == stride"):
        Pool("max", 3, stride=2, method="reshape").apply({}, jnp.ones((1, 9, 9, 1)))


def test_global_pool_flatten_dense_stack():
    x = np.random.default_rng(4).normal(size=(2, 4, 5, 3)).astype(np.float32)
    pooled = jax.jit(lambda a: (GlobalPool("avg").apply({}, a), GlobalPool("max").apply({}, a)))
    avg, top = pooled(x)
    np.testing.assert_allclose(avg, x.mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(top, x.max(axis=(1, 2)))
    assert jax.eval_shape(GlobalPool("avg", keepdims=True).apply, {}, x).shape == (2, 1, 1, 3)
    flat = np.asarray(jax.jit(Flatten().apply)({}, x))
    np.testing.assert_array_equal(flat, x.reshape(2, -1))
    mlp = DenseStack((7, 5), out_features=3, dropout_rate=0.5)
    variables = jax.jit(mlp.init)(KEY, flat)
    p = jax.tree.map(np.asarray, variables["params"])
    want = np.maximum(flat @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0)
    want = np.maximum(want @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"], 0)
    want = want @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]
    apply = jax.jit(mlp.apply, static_argnames="train")
    # Full float32 matmuls: on a GPU JAX's default precision is TF32 (4e-4 off on an H200).
    with jax.default_matmul_precision("float32"):
        np.testing.assert_allclose(apply(variables, flat), want, rtol=1e-5, atol=1e-5)
    dropped = apply(variables, flat, train=True, rngs={"dropout": KEY})
    assert not np.allclose(dropped, want)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "module,shape,match",
    [
        (ConvBlock(4, (3, 3), name="conv1"), (2, 8, 8), r"ConvBlock.*rank 2.*\(2, 8, 8\)"),
        (
            ConvBlock(4, (3, 3), in_channels=3),
            (2, 8, 8, 1),
            r"ConvBlock.*expected input with 3 channels, shape \(2, 8, 8, 3\); got shape "
            r"\(2, 8, 8, 1\)",
        ),
        (ConvBlock(4, 3), (8, 8), r"ConvBlock.*rank 3 to 5.*\(8, 8\)"),
        (ConvBlock(4, (5, 5)), (1, 3, 3, 1), r"ConvBlock.*output size below 1"),
        (
            ConvBlock(4, (3, 3), feature_group_count=2),
            (1, 8, 8, 3),
            r"feature_group_count=2 must be 'depthwise' or a positive int dividing the 3",
        ),
        (
            ConvBlock(5, (3, 3), feature_group_count="depthwise"),
            (1, 8, 8, 2),
            r"features=5 must be a multiple of feature_group_count=2",
        ),
        (ConvBlock(4, (3, 3), norm="batchnorm"), (1, 8, 8, 1), r"norm='batchnorm'"),
        (ConvBlock(4, (3, 3), activation="relux"), (1, 8, 8, 1), r"activation='relux'"),
        (ConvBlock(4, (3, 3), padding="circular"), (1, 8, 8, 1), r"write padding='CIRCULAR'"),
        (ConvBlock(0, (3, 3)), (1, 8, 8, 1), r"ConvBlock: features=0; valid: an int >= 1"),
        (ConvBlock(-2, (3, 3)), (1, 8, 8, 1), r"features=-2; valid: an int >= 1"),
        (ConvBlock(4, (3, 3), stride=0), (1, 8, 8, 1), r"ConvBlock: stride\[0\] .*got 0"),
        (
            ConvBlock(4, (3, 3), pool="max", pool_stride=0),
            (1, 8, 8, 1),
            r"ConvBlock: pool_stride\[0\] must be an integer >= 1, got 0",
        ),
        (DenseStack((8, 0)), (2, 5), r"DenseStack: features\[1\]=0; valid: an int >= 1"),
        (DenseStack(out_features=0), (2, 5), r"DenseStack: out_features=0; valid"),
        (Pool("max", (2, 2)), (1, 8, 8), r"Pool.*rank 2.*\(1, 8, 8\)"),
        (Pool("median", 2), (1, 8, 8, 1), r"kind='median'"),
        (GlobalPool("sum"), (1, 4, 4, 1), r"kind='sum'"),
        (GlobalPool(), (4, 4), r"GlobalPool.*rank 3 to 5"),
        (DenseStack((4,), in_features=3), (2, 5), r"DenseStack.*\(\.\.\., 3\).*\(2, 5\)"),
        (Flatten(), (3,), r"Flatten.*rank >= 2"),
    ],
)
def test_bad_input_raises_value_error_naming_module(module, shape, match):
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(module.init, KEY, jax.ShapeDtypeStruct(shape, jnp.float32))


def test_error_names_the_submodule_path():
    import flax.linen as nn

    class Outer(nn.Module):
        @nn.compact
        def __call__(self, x):
            return ConvBlock(4, (3, 3), in_channels=3, name="stem")(x)

    with pytest.raises(ValueError, match="ConvBlock 'stem'"):
        jax.eval_shape(Outer().init, KEY, jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32))


def test_get_activation_accepts_names_callables_and_none():
    assert get_activation("GELU") is get_activation("gelu")
    assert get_activation(jnp.tanh) is jnp.tanh
    np.testing.assert_array_equal(get_activation(None)(jnp.arange(3.0)), jnp.arange(3.0))


def _bfloat16_ops(fn, *args):
    """Primitives other than casts that take a bfloat16 operand in ``fn``'s jaxpr."""
    jaxpr = jax.make_jaxpr(fn)(*args)
    return {
        e.primitive.name
        for e in jaxpr.eqns
        if e.primitive.name != "convert_element_type"
        and any(getattr(v.aval, "dtype", None) == jnp.bfloat16 for v in e.invars)
    }


@pytest.mark.parametrize("name", ["gelu", "gelu_exact", "silu", "tanh"])
def test_activate_computes_bfloat16_in_float32_and_rounds_once(name):
    x = jnp.asarray(NP_RNG.normal(size=64) * 3, jnp.bfloat16)
    fn = get_activation(name)
    y = activate(name, x)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.float32(y), np.float32(fn(np.float32(x)).astype(jnp.bfloat16)))
    # Neither the activation nor its gradient does arithmetic in bfloat16.
    grad = jax.grad(lambda v: activate(name, v).astype(jnp.float32).sum())
    assert _bfloat16_ops(grad, x) == set()
    assert grad(x).dtype == jnp.bfloat16
    x32 = x.astype(jnp.float32)  # float32 (and wider) inputs are untouched
    np.testing.assert_array_equal(activate(name, x32), fn(x32))


def test_activate_leaves_exact_activations_alone():
    x = jnp.asarray([-1.5, 0.0, 2.25], jnp.bfloat16)
    for name in ("relu", None):
        jaxpr = jax.make_jaxpr(functools.partial(activate, name))(x)
        ops = {e.primitive.name for e in jaxpr.eqns}
        assert "convert_element_type" not in ops
    with pytest.raises(ValueError, match="activation='mish' is not known"):
        activate("mish", x)


@pytest.mark.parametrize("pool", [None, "max"])
def test_bfloat16_conv_bias_gradient_is_summed_in_float32(pool):
    # The conv bias is added by fast_ops.add_channel_bias on both paths (plain and fused
    # pool), so no bfloat16 reduction is left for XLA:CPU's slow reduce-window tree.
    x = NP_RNG.normal(size=(2, 8, 8, 3)).astype(jnp.bfloat16)
    block = ConvBlock(4, (3, 3), pool=pool, activation="gelu", dtype=jnp.bfloat16)
    variables = jax.jit(block.init)(KEY, x)

    def loss(params):
        return block.apply({"params": params}, x).astype(jnp.float32).sum()

    assert "reduce_sum" not in _bfloat16_ops(jax.grad(loss), variables["params"])
    grads = jax.jit(jax.grad(loss))(variables["params"])
    assert grads["conv"]["bias"].dtype == jnp.float32


# ----------------------------------------------------------------------------- dtypes, transforms
def test_bfloat16_computation_with_float32_params():
    x = NP_RNG.normal(size=(2, 8, 8, 3)).astype(np.float32)
    block = ConvBlock(4, (3, 3), padding="SAME", norm="batch", pool="avg", dtype=jnp.bfloat16)
    variables = jax.jit(block.init)(KEY, x)
    chex.assert_trees_all_equal_dtypes(
        variables["params"], jax.tree.map(lambda p: p.astype(jnp.float32), variables["params"])
    )
    low = jax.jit(block.apply)(variables, x)
    high = jax.jit(block.clone(dtype=jnp.float32).apply)(variables, x)
    assert low.dtype == jnp.bfloat16 and high.dtype == jnp.float32
    np.testing.assert_allclose(low.astype(jnp.float32), high, rtol=5e-2, atol=5e-2)


def test_bfloat16_params():
    x = jnp.ones((1, 6, 6, 2), jnp.bfloat16)
    block = ConvBlock(3, (3, 3), param_dtype=jnp.bfloat16, dtype=jnp.bfloat16)
    variables = jax.jit(block.init)(KEY, x)
    assert variables["params"]["conv"]["kernel"].dtype == jnp.bfloat16
    assert jax.jit(block.apply)(variables, x).dtype == jnp.bfloat16


def test_jit_grad_and_vmap():
    x = NP_RNG.normal(size=(2, 8, 8, 3)).astype(np.float32)
    block = ConvBlock(4, (3, 3), norm="group", pool="max")
    ensemble = jax.jit(jax.vmap(lambda k: block.init(k, x)))(jax.random.split(KEY, 3))
    variables = jax.tree.map(lambda a: a[0], ensemble)

    @jax.jit
    def transformed(variables, ensemble, x):
        plain = block.apply(variables, x)
        grads = jax.grad(lambda v: jnp.sum(block.apply(v, x) ** 2))(variables)
        # vmap over an extra leading axis of inputs (e.g. several crops of a batch) ...
        per_crop = jax.vmap(lambda a: block.apply(variables, a))(jnp.stack([x, 2 * x, -x]))
        # ... and over an ensemble of parameters.
        per_member = jax.vmap(lambda v: block.apply(v, x))(ensemble)
        doubled = block.apply(variables, 2 * x)
        return plain, grads, per_crop, per_member, doubled

    plain, grads, per_crop, per_member, doubled = transformed(variables, ensemble, x)
    chex.assert_trees_all_equal_shapes(grads, variables)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    np.testing.assert_allclose(per_crop[1], doubled, rtol=1e-5, atol=1e-5)
    assert per_member.shape == (3, *plain.shape)
    np.testing.assert_allclose(per_member[0], plain, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- fused pool
def test_reshape_max_pool_gradient_matches_reduce_window_at_ties():
    # Small integers: most windows hold tied maxima, like zeros after a ReLU.
    x = NP_RNG.integers(0, 3, size=(2, 8, 6, 3)).astype(np.float32)
    cotangent = NP_RNG.normal(size=(2, 4, 3, 3)).astype(np.float32)

    def grad(method):
        pool = Pool("max", 2, method=method)
        return jax.jit(jax.vjp, static_argnums=0)(lambda a: pool.apply({}, a), x)[1](cotangent)

    np.testing.assert_array_equal(grad("reshape")[0], grad("reduce_window")[0])


def _random_bias(variables, seed):
    """The block's variables with a non-zero bias, so that the bias placement matters."""
    bias = variables["params"]["conv"]["bias"]
    noise = np.random.default_rng(seed).normal(size=bias.shape)
    return {"params": {"conv": {**variables["params"]["conv"], "bias": noise.astype(bias.dtype)}}}


def _value_and_grads(block, variables, x, cotangent):
    """Output and the gradients w.r.t. the input and all parameters (one jit)."""

    @jax.jit
    def run(variables, x):
        y, vjp = jax.vjp(lambda v, a: block.apply(v, a), variables, x)
        return y, *vjp(cotangent)

    return run(variables, x)


@pytest.mark.parametrize(
    "shape, fields",
    [
        ((2, 12, 12, 3), dict(kernel_size=(3, 3))),  # conv output 10x10 tiles exactly
        ((2, 11, 13, 2), dict(kernel_size=(3, 3), padding="SAME", pool_window=(2, 3))),
        ((3, 17, 4), dict(kernel_size=(5,), stride=2, pool_window=3, pool_method="reshape")),
        # 8 channels: no space-to-depth; the conv itself is cropped to what the pool reads
        ((2, 15, 14, 8), dict(kernel_size=(3, 3))),  # 13 x 12 -> 12 x 12
        ((2, 14, 13, 8), dict(kernel_size=(3, 2), padding="SAME", pool_window=(3, 2))),
        ((2, 16, 17, 8), dict(kernel_size=(3, 3), stride=(2, 1), dilation=(1, 2))),
        ((2, 13, 8), dict(kernel_size=(4,), padding=((3, 2),), pool_window=4)),
    ],
)
def test_fused_pool_equals_plain_path_values_and_gradients(shape, fields):
    x = NP_RNG.normal(size=shape).astype(np.float32)
    fused = ConvBlock(5, pool="max", activation="relu", **fields)
    plain = fused.clone(fused_pool=False)
    variables = _random_bias(jax.jit(fused.init)(KEY, x), seed=1)
    assert jax.tree.structure(variables) == jax.tree.structure(jax.jit(plain.init)(KEY, x))
    cotangent = NP_RNG.normal(size=fused.output_shape(shape)).astype(np.float32)
    y_fused, g_fused, gx_fused = _value_and_grads(fused, variables, x, cotangent)
    y_plain, g_plain, gx_plain = _value_and_grads(plain, variables, x, cotangent)
    assert float(jnp.mean(y_plain == 0)) > 0.05  # the ReLU clips: gradients see zeros
    np.testing.assert_allclose(y_fused, y_plain, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx_fused, gx_plain, rtol=1e-5, atol=1e-5)
    for name in ("kernel", "bias"):
        got, want = g_fused["params"]["conv"][name], g_plain["params"]["conv"][name]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert float(jnp.abs(want).max()) > 0


def _conv_output_shapes(fn, *args) -> list[tuple[int, ...]]:
    """Output shapes of the convolutions left in ``fn``'s optimized HLO."""
    hlo = jax.jit(fn).lower(*args).compile().as_text()
    found = re.findall(r"= f32\[([\d,]+)\][^ ]* (?:convolution|custom-call)\(", hlo)
    return sorted({tuple(int(d) for d in dims.split(",")) for dims in found})


def test_fused_pool_convolves_only_what_the_pool_reads():
    # CIFAR's conv2: 15 x 15 x 8 -> 13 x 13, pooled by 2 -> 6 x 6 reads 12 x 12 outputs.
    x = NP_RNG.normal(size=(2, 15, 15, 8)).astype(np.float32)
    block = ConvBlock(4, (3, 3), pool="max")
    variables = jax.jit(block.init)(KEY, x)

    def loss(v, a):
        return jnp.sum(block.apply(v, a) ** 2)

    fused = _conv_output_shapes(jax.grad(loss, argnums=(0, 1)), variables, x)
    assert (2, 12, 12, 4) in fused and (2, 13, 13, 4) not in fused
    plain = block.clone(fused_pool=False)
    unfused = _conv_output_shapes(
        jax.grad(lambda v, a: jnp.sum(plain.apply(v, a) ** 2), argnums=(0, 1)), variables, x
    )
    assert (2, 13, 13, 4) in unfused  # the plain path computes every output


def test_fused_pool_capture_keeps_conv_output_with_bias():
    x = NP_RNG.normal(size=(2, 10, 10, 3)).astype(np.float32)
    fused = ConvBlock(4, (3, 3), pool="max")
    variables = _random_bias(jax.jit(fused.init)(KEY, x), seed=2)

    def captured(block):
        _, state = jax.jit(
            lambda v, a: block.apply(v, a, capture_intermediates=True, mutable="intermediates")
        )(variables, x)
        return state["intermediates"]

    got, want = captured(fused), captured(fused.clone(fused_pool=False))
    assert "pool" not in got and "pool" in want  # the fused path really ran
    assert len(got["conv"]["__call__"]) == 1
    np.testing.assert_allclose(got["conv"]["__call__"][0], want["conv"]["__call__"][0], atol=1e-6)
    np.testing.assert_allclose(got["__call__"][0], want["__call__"][0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "fields",
    [
        dict(norm="group"),
        dict(activation="gelu"),
        dict(use_bias=False),
        dict(pool="avg"),
        dict(pool_stride=1),
        dict(pool_padding="SAME"),
        dict(pool_method="reduce_window"),
    ],
)
def test_fused_pool_only_where_exact(fields):
    x = jnp.ones((1, 8, 8, 2))
    block = ConvBlock(4, (3, 3), **{"pool": "max", **fields})

    @jax.jit
    def intermediates(x):
        variables = block.init(KEY, x)
        return block.apply(variables, x, capture_intermediates=True, mutable="intermediates")[1]

    assert "pool" in intermediates(x)["intermediates"]


def test_fused_pool_in_bfloat16():
    x = NP_RNG.normal(size=(2, 12, 12, 3)).astype(jnp.bfloat16)
    fused = ConvBlock(4, (3, 3), pool="max", dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    plain = fused.clone(fused_pool=False)
    variables = _random_bias(jax.jit(fused.init)(KEY, x), seed=3)
    cotangent = NP_RNG.normal(size=fused.output_shape(x.shape)).astype(jnp.bfloat16)
    y_fused, g_fused, gx_fused = _value_and_grads(fused, variables, x, cotangent)
    y_plain, g_plain, gx_plain = _value_and_grads(plain, variables, x, cotangent)
    assert y_fused.dtype == gx_fused.dtype == jnp.bfloat16
    assert g_fused["params"]["conv"]["bias"].dtype == jnp.bfloat16
    # Rounding is monotone, so round(max(c) + b) == max(round(c + b)): values equal where
    # both paths round c the same way, as XLA:CPU does. A GPU may fuse the plain path's
    # bias into its convolution and round once: up to one bfloat16 step (2^-7) apart.
    if jax.default_backend() == "cpu":
        np.testing.assert_array_equal(np.float32(y_fused), np.float32(y_plain))
    else:
        np.testing.assert_allclose(np.float32(y_fused), np.float32(y_plain), rtol=2**-7)
    got_all, want_all = jax.tree.leaves((g_fused, gx_fused)), jax.tree.leaves((g_plain, gx_plain))
    for got, want in zip(got_all, want_all, strict=True):
        np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=2e-2, atol=5e-2)


@pytest.mark.parametrize("norm", [None, "batch", "group"])
def test_conv_block_adds_a_residual_before_its_activation(norm):
    block = ConvBlock(4, (3, 3), padding="SAME", norm=norm, activation="relu")
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 5, 3)), jnp.float32)
    residual = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 5, 4)), jnp.float32)
    variables = block.init(KEY, x)
    plain = block.clone(activation=None)
    pre = plain.apply(variables, x, True, mutable=True)[0]
    got = block.apply(variables, x, True, residual, mutable=True)[0]
    np.testing.assert_allclose(got, jnp.maximum(pre + residual, 0.0), rtol=1e-5, atol=1e-5)


def test_conv_block_refuses_a_residual_of_another_shape():
    block = ConvBlock(4, (3, 3), padding="SAME", norm="batch", pool="max")
    x = jnp.ones((2, 6, 6, 3))
    variables = block.init(KEY, x)
    with pytest.raises(ValueError, match=r"residual must have the shape .* \(2, 6, 6, 4\)"):
        block.apply(variables, x, False, jnp.ones((2, 3, 3, 4)))
