"""jaxcnn.models: the zoo's shapes and published parameter counts, the spec, get()."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcnn import models

# "rbg" keys: XLA:CPU compiles their random bits several times faster than threefry's,
# which dominates the cost of a jitted init of a small model.
NP_RNG = np.random.default_rng(0)
RNGS = {"params": jax.random.key(0, impl="rbg"), "dropout": jax.random.key(1, impl="rbg")}

# name -> (one example's shape, num_classes, published trainable parameter count)
ZOO = {
    "mnist_cnn": ((28, 28, 1), 10, 34_826),  # Keras "simple MNIST convnet"
    "digits_cnn": ((8, 8, 1), 10, 85_066),
    "cifar_cnn": ((32, 32, 3), 10, 122_570),  # TensorFlow CNN tutorial
    "lenet5": ((28, 28, 1), 10, 61_706),
    "alexnet": ((224, 224, 3), 1000, 61_100_840),  # torchvision
    "vgg11": ((224, 224, 3), 1000, 132_863_336),  # torchvision
    "vgg16": ((224, 224, 3), 1000, 138_357_544),  # torchvision
    "resnet18": ((224, 224, 3), 1000, 11_689_512),  # torchvision
    "resnet34": ((224, 224, 3), 1000, 21_797_672),  # torchvision
    "resnet50": ((224, 224, 3), 1000, 25_557_032),  # torchvision
    "resnet20": ((32, 32, 3), 10, 269_722),  # He et al. 2016: 0.27M (option A)
    "resnet56": ((32, 32, 3), 10, 853_018),  # He et al. 2016: 0.85M (option A)
    "cnn3d": ((8, 16, 16, 1), 10, 70_426),
    "fast_cifar": ((32, 32, 3), 10, 1_972_802),
}
# Small enough to initialise and run for real on a batch of 2 within the CI budget.
RUN_FOR_REAL = ("mnist_cnn", "digits_cnn", "cifar_cnn", "lenet5", "cnn3d", "resnet20")


def count(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def abstract_init(model, shape, **kwargs):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(lambda a: model.init(RNGS, a, train=False, **kwargs), x)


def test_names_cover_the_contract():
    contract = {
        "mnist_cnn",
        "cifar_cnn",
        "lenet5",
        "alexnet",
        "vgg11",
        "vgg16",
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet20",
        "resnet56",
        "cnn3d",
        "fast_cifar",
    }
    assert contract <= set(models.names())
    assert set(ZOO) == set(models.names())


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_parameter_count_and_output_shape(name):
    shape, num_classes, published = ZOO[name]
    model = models.get(name, num_classes=num_classes)
    variables = abstract_init(model, (2, *shape))
    assert count(variables["params"]) == published
    out = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False),
        variables,
        jax.ShapeDtypeStruct((2, *shape), jnp.float32),
    )
    assert out.shape == (2, num_classes) and out.dtype == jnp.float32


@pytest.mark.parametrize("name", RUN_FOR_REAL)
def test_small_models_init_and_apply_for_real(name):
    shape, _, _ = ZOO[name]
    model = models.get(name, num_classes=7)
    x = NP_RNG.normal(size=(2, *shape)).astype(np.float32)
    # One compilation: init_with_output runs the forward pass with the fresh variables.
    logits, variables = jax.jit(lambda a: model.init_with_output(RNGS, a, train=False))(x)
    assert logits.shape == (2, 7) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits))), name
    assert count(variables["params"]) == count(abstract_init(model, (2, *shape))["params"])


def test_training_mode_updates_batch_stats_and_uses_dropout():
    spec = {
        "stages": [{"type": "conv", "features": 4, "norm": "batch", "pool": "max"}],
        "head": [{"type": "flatten"}, {"type": "dropout", "rate": 0.5}],
    }
    model = models.from_spec(spec, num_classes=3)
    x = NP_RNG.normal(size=(2, 6, 6, 1)).astype(np.float32)
    variables = jax.jit(lambda a: model.init(RNGS, a, train=False))(x)

    @jax.jit
    def train_apply(v, a, key):
        return model.apply(v, a, train=True, mutable=["batch_stats"], rngs={"dropout": key})

    a, state_a = train_apply(variables, x, jax.random.key(4, impl="rbg"))
    b, _ = train_apply(variables, x, jax.random.key(5, impl="rbg"))
    assert not np.allclose(a, b)  # dropout masks differ
    old = jax.tree.leaves(variables["batch_stats"])
    new = jax.tree.leaves(state_a["batch_stats"])
    assert any(not np.allclose(o, n) for o, n in zip(old, new, strict=True))


def test_bfloat16_computation_keeps_float32_params_and_logits():
    low_model = models.get("digits_cnn", dtype="bfloat16")
    f32_model = models.get("digits_cnn")
    x = NP_RNG.normal(size=(2, 8, 8, 1)).astype(np.float32)
    abstract = abstract_init(low_model, x.shape)
    assert {leaf.dtype for leaf in jax.tree.leaves(abstract)} == {jnp.dtype(jnp.float32)}
    variables = jax.tree.map(
        lambda leaf: (NP_RNG.normal(size=leaf.shape) * 0.2).astype(np.float32), abstract
    )
    assert hash(low_model) != hash(f32_model)  # hashable: usable as a jit static argument

    @jax.jit
    def both(v, a):
        return low_model.apply(v, a, train=False), f32_model.apply(v, a, train=False)

    low, high = both(variables, x)
    assert low.dtype == jnp.float32
    np.testing.assert_allclose(low, high, rtol=0.1, atol=0.1)


def test_resnet20_option_b_and_in_channels_change_counts():
    assert (
        count(abstract_init(models.get("resnet20", shortcut="B"), (1, 32, 32, 3))["params"])
        == 272_474
    )  # + 1x1 projections 16->32, 32->64 with their BN
    three = models.get("mnist_cnn", in_channels=3)
    assert count(abstract_init(three, (1, 28, 28, 3))["params"]) == 34_826 + 2 * 9 * 32


def test_bottleneck_block_runs_and_keeps_shape():
    block = models.BottleneckBlock(4, stride=2)
    x = jax.ShapeDtypeStruct((1, 8, 8, 8), jnp.float32)
    y, variables = jax.eval_shape(block.init_with_output, jax.random.key(1, impl="rbg"), x)
    assert y.shape == (1, 4, 4, 16)
    # 1x1 8->4, 3x3 4->4, 1x1 4->16, projection 8->16, each + BN (scale, bias)
    assert count(variables["params"]) == 32 + 8 + 144 + 8 + 64 + 32 + 128 + 32


class _TwoBlocks(nn.Module):
    block_cls: type
    materialize_output: bool

    @nn.compact
    def __call__(self, x):
        kw = {"materialize_output": self.materialize_output}
        x = self.block_cls(4, stride=2, **kw)(x, True)
        return self.block_cls(4, **kw)(x, True)


def test_materialized_block_output_changes_nothing_but_speed():
    # Two stacked blocks in training mode: the case where XLA:CPU recomputed the chain.
    x = jnp.asarray(NP_RNG.normal(size=(2, 6, 6, 3)), jnp.float32)
    results = []
    for flag in (True, False):
        module = _TwoBlocks(models.ResidualBlock, flag)
        variables = module.init(RNGS, x)

        def loss(params, module=module, variables=variables):
            y, _ = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
            weights = jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size
            return jnp.sum(y * weights)

        results.append(jax.jit(jax.value_and_grad(loss))(variables["params"]))
    (value_on, grad_on), (value_off, grad_off) = results
    # Equal up to float rounding: XLA fuses (so rounds) the two programs differently.
    np.testing.assert_allclose(value_on, value_off, rtol=1e-6)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # noqa: E731
    jax.tree.map(close, grad_on, grad_off)


class _AddAfterResidualBlock(models.ResidualBlock):
    """The basic block as written before session 19: conv2 without activation, then
    ``activation(y + shortcut)`` as a separate op (same sub-module names)."""

    @nn.compact
    def __call__(self, x, train=False):
        from jaxcnn.layers import ConvBlock, activate
        from jaxcnn.models.residual import _shortcut

        common = {"norm": self.norm, "kernel_init": self.kernel_init, "dtype": self.dtype}
        conv = lambda stride, act, name: ConvBlock(  # noqa: E731
            self.features, (3, 3), stride, padding=1, activation=act, name=name, **common
        )
        y = conv(self.stride, self.activation, "conv1")(x, train)
        y = conv(1, None, "conv2")(y, train)
        shortcut = _shortcut(self, x, self.features, self.stride, train)
        return activate(self.activation, y + shortcut)


@pytest.mark.parametrize("features, stride", [(4, 1), (8, 2)], ids=["identity", "projection"])
def test_the_shortcut_added_inside_conv2s_norm_changes_no_value(features, stride):
    # ResidualBlock adds the shortcut inside conv2's batch norm, before the ReLU (one op
    # with the norm, jaxcnn.batch_norm). Same variables, values and gradients as before.
    x = jnp.asarray(NP_RNG.normal(size=(2, 6, 6, 4)), jnp.float32)
    new = models.ResidualBlock(features, stride=stride, materialize_output=False)
    old = _AddAfterResidualBlock(features, stride=stride, materialize_output=False)
    variables = new.init(RNGS, x)
    chex_equal = lambda a, b: np.testing.assert_array_equal(a, b)  # noqa: E731
    jax.tree.map(chex_equal, variables, old.init(RNGS, x))

    def run(module):
        def loss(params, x):
            y, stats = module.apply({**variables, "params": params}, x, True, mutable=True)
            weights = jnp.linspace(-1.0, 1.0, y.size).reshape(y.shape)
            return jnp.sum(y * weights), (y, stats)

        return jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(variables["params"], x)

    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)  # noqa: E731
    jax.tree.map(close, run(new), run(old))


@pytest.mark.parametrize("block_cls", [models.ResidualBlock, models.BottleneckBlock])
def test_blocks_materialize_their_output_unless_told_not_to(block_cls):
    x = jnp.ones((1, 4, 4, 8))

    def jaxpr(flag):
        block = block_cls(2, materialize_output=flag)
        variables = jax.eval_shape(block.init, RNGS, x)
        return str(jax.make_jaxpr(lambda v: block.apply(v, x))(variables))

    # Convolutions may be custom VJPs too (jaxcnn.conv_backend): look for materialize's.
    assert "name=materialize" in jaxpr(True)
    assert "name=materialize" not in jaxpr(False)


@pytest.mark.parametrize("backend", ["auto", "xla"])
@pytest.mark.parametrize("block_cls", [models.ResidualBlock, models.BottleneckBlock])
def test_training_blocks_skip_the_copy_where_the_norm_kernels_write_the_output(
    block_cls, backend, monkeypatch
):
    from jaxcnn.onednn import build

    if backend == "auto" and not build.available():
        pytest.skip(f"binding unavailable: {build.unavailable_reason()}")
    monkeypatch.setenv("JAXCNN_NORM_BACKEND", backend)
    x = jnp.ones((1, 4, 4, 8))
    block = block_cls(2)
    variables = jax.eval_shape(block.init, RNGS, x)
    train = lambda v: block.apply(v, x, True, mutable=["batch_stats"])  # noqa: E731
    # The kernels' output is a foreign call's result, in memory already: no copy. XLA's
    # fusions are not: the copy stays.
    assert ("name=materialize" in str(jax.make_jaxpr(train)(variables))) is (backend == "xla")


@pytest.mark.parametrize("flag", [True, False])
def test_spec_residual_materialize_reaches_the_blocks(flag):
    spec = {"stages": [{"type": "residual", "features": 4, "materialize": flag}]}
    model = models.from_spec(spec, num_classes=2)
    x = jnp.ones((1, 4, 4, 4))
    variables = jax.eval_shape(lambda: model.init(RNGS, x))
    jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, x))(variables))
    assert ("name=materialize" in jaxpr) is flag


def test_get_with_config_kwargs_as_the_trainer_calls_it():
    config = ml_collections.ConfigDict({"model": "mnist_cnn", "model_kwargs": {"padding": "SAME"}})
    model = models.get(config.model, num_classes=10, **config.model_kwargs)
    out = jax.eval_shape(
        lambda: model.init_with_output(RNGS, jnp.zeros((1, 8, 8, 1)), train=False)[0]
    )
    assert out.shape == (1, 10)


def test_get_rejects_unknown_names_and_arguments():
    with pytest.raises(ValueError, match=r"model name='resnet19' is not in the zoo; valid: .*"):
        models.get("resnet19")
    with pytest.raises(ValueError, match=r"model 'mnist_cnn' got unknown arguments \['width'\]"):
        models.get("mnist_cnn", width=3)
    with pytest.raises(ValueError, match=r"num_classes=0; valid: an int >= 1"):
        models.get("lenet5", num_classes=0)
    with pytest.raises(ValueError, match=r"dtype='float33' is not a dtype"):
        models.get("lenet5", dtype="float33")
    with pytest.raises(ValueError, match=r"depth=21; valid: 6n \+ 2"):
        models.cifar_resnet(21)


# ----------------------------------------------------------------------------- the spec
SPEC_1D = {
    "spatial_dims": 1,
    "stages": [
        {"type": "conv", "features": 8, "kernel": 5, "padding": "CAUSAL", "dilation": 2},
        {"type": "pool", "kind": "avg", "window": 2},
        {"type": "residual", "features": 8, "blocks": 2},
        {"type": "dropout", "rate": 0.1},
    ],
    "head": [{"type": "global_pool", "kind": "max"}, {"type": "dense", "features": 16}],
}


def test_spec_from_config_dict_1d():
    config = ml_collections.ConfigDict({"spec": SPEC_1D})
    model = models.from_spec(config.spec, num_classes=4, in_channels=2)
    variables = abstract_init(model, (3, 40, 2))
    expected = (
        5 * 2 * 8
        + 8  # causal conv
        + 2 * (2 * (3 * 8 * 8 + 2 * 8))  # 2 residual blocks of 2 conv+BN
        + 8 * 16
        + 16
        + 16 * 4
        + 4  # dense + classifier
    )
    assert count(variables["params"]) == expected
    paths = set(variables["params"])
    assert {"ConvBlock_0", "ResidualBlock_0", "ResidualBlock_1", "Dense_0", "classifier"} <= paths


def test_spec_conv_repeat_names_and_2d_defaults():
    spec = {
        "stages": [
            {
                "type": "conv",
                "features": 4,
                "repeat": 3,
                "stride": 2,
                "pool": "max",
                "padding": "SAME",
                "name": "stage1",
            }
        ]
    }
    model = models.CNN(spec, num_classes=2)
    variables = abstract_init(model, (1, 32, 32, 3))
    assert set(variables["params"]) == {"stage1_0", "stage1_1", "stage1_2", "classifier"}
    # stride on the first repeat only, pool after the last: 32 -> 16 -> 16 -> 16 -> 8
    out = jax.eval_shape(
        lambda v: model.apply(
            v, jnp.zeros((1, 32, 32, 3)), capture_intermediates=True, mutable=["intermediates"]
        ),
        variables,
    )[1]["intermediates"]
    assert out["stage1_2"]["__call__"][0].shape == (1, 8, 8, 4)


@pytest.mark.parametrize(
    "spec,match",
    [
        ({"stages": [{"type": "convolution", "features": 4}]}, r"spec.stages\[0\].type="),
        ({"stages": [{"type": "conv"}]}, r"spec.stages\[0\] \(conv\) needs 'features'"),
        ({"stages": [{"type": "conv", "features": 4, "kernal": 3}]}, r"unknown keys \['kernal'\]"),
        ({"stages": [], "head": [{"type": "dense", "features": 3}]}, r"must start with 'flatten'"),
        ({"stages": [], "head": [{"type": "conv", "features": 3}]}, r"spec.head\[0\].type"),
        ({"spatial_dims": 4}, r"spec.spatial_dims=4"),
        ({"layers": []}, r"unknown keys \['layers'\]"),
        ({"stages": [{"type": "dropout", "rate": 1.5}]}, r"rate=1.5"),
        ({"stages": [{"type": "residual", "features": 4, "shortcut": "C"}]}, r"shortcut='C'"),
        (
            {"stages": [{"type": "residual", "features": 4, "materialize": "yes"}]},
            r"spec.stages\[0\].materialize='yes'; valid: True, False",
        ),
        ({"stages": [{"type": "conv", "features": 4, "activation": "rleu"}]}, r"'rleu'"),
        ({"kernel_init": "orthogonal"}, r"kernel_init='orthogonal'"),
        # Values the layers would reject at init are rejected when the spec is read.
        ({"stages": [{"type": "conv", "features": 0}]}, r"stages\[0\].features=0; valid"),
        (
            {"stages": [{"type": "conv", "features": 4, "padding": "samee"}]},
            r"spec.stages\[0\] \(conv\): padding='samee' is not a padding mode",
        ),
        (
            {"stages": [{"type": "conv", "features": 4, "kernel": 0}]},
            r"spec.stages\[0\] \(conv\): kernel must be an integer >= 1, got 0",
        ),
        ({"stages": [{"type": "conv", "features": 4, "norm": "bn"}]}, r"\[0\].norm='bn'; valid"),
        ({"stages": [{"type": "conv", "features": 4, "pool": "maxx"}]}, r"\[0\].pool='maxx'"),
        (
            {"stages": [{"type": "conv", "features": 4, "pool": "max", "pool_stride": 0}]},
            r"\(conv\): pool_stride must be an integer >= 1, got 0",
        ),
        ({"stages": [{"type": "pool", "kind": "median"}]}, r"stages\[0\].kind='median'"),
        ({"stages": [{"type": "pool", "window": 0}]}, r"\(pool\): window must be an integer"),
        (
            {"stages": [{"type": "residual", "features": 4, "stride": 0}]},
            r"\(residual\): stride must be an integer >= 1, got 0",
        ),
        (
            {"stages": [], "head": [{"type": "global_pool", "kind": "sum"}]},
            r"spec.head\[0\].kind='sum'; valid: one of \('avg', 'max'\)",
        ),
        (
            {"stages": [], "head": [{"type": "flatten"}, {"type": "dense", "features": -1}]},
            r"spec.head\[1\].features=-1",
        ),
    ],
)
def test_spec_errors_name_the_item(spec, match):
    with pytest.raises(ValueError, match=match):
        models.from_spec(spec)


def test_model_input_errors():
    model = models.get("mnist_cnn")
    with pytest.raises(
        ValueError, match=r"CNN: a 2-D network expects input .*got shape \(28, 28, 1\)"
    ):
        abstract_init(model, (28, 28, 1))
    with pytest.raises(ValueError, match=r"CNN: expected input with 1 channels.*\(2, 28, 28, 3\)"):
        abstract_init(model, (2, 28, 28, 3))
    with pytest.raises(ValueError, match=r"Pool 'conv2/pool'.*output size below 1"):
        abstract_init(model, (2, 8, 8, 1))
    # Weights made for 28x28 applied to 32x32 images: the flattened width differs.
    variables = abstract_init(model, (1, 28, 28, 1))
    with pytest.raises(ValueError, match=r"CNN: input of shape \(6, 6, 64\) after the stages"):
        jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 32, 32, 1)), train=False), variables)
