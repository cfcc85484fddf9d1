"""jaxcnn.summary: shapes vs jax.eval_shape, totals vs the real tree, FLOPs, fields, CLI."""

from __future__ import annotations

import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import jaxcnn
from jaxcnn import models
from jaxcnn.commands import summary as summary_command
from jaxcnn.layers import ConvBlock, DenseStack, Flatten
from jaxcnn.model_summary import parameter_explosion, parse_input_shape, summary

RNGS = {"params": jax.random.key(0, impl="rbg"), "dropout": jax.random.key(1, impl="rbg")}
INPUTS = {
    "mnist_cnn": (28, 28, 1),
    "digits_cnn": (8, 8, 1),
    "cifar_cnn": (32, 32, 3),
    "lenet5": (28, 28, 1),
    "alexnet": (224, 224, 3),
    "vgg11": (224, 224, 3),
    "vgg16": (224, 224, 3),
    "resnet18": (224, 224, 3),
    "resnet34": (224, 224, 3),
    "resnet50": (224, 224, 3),
    "resnet20": (32, 32, 3),
    "resnet56": (32, 32, 3),
    "cnn3d": (8, 16, 16, 1),
    "fast_cifar": (32, 32, 3),
}


def count(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def captured_shapes(model, shape, **kwargs):
    """Independent truth: every module call's output shape from eval_shape + capture."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)

    def run(a):
        variables = model.init(RNGS, a, **kwargs)
        _, state = model.apply(
            variables, a, capture_intermediates=True, mutable=True, rngs=RNGS, **kwargs
        )
        return variables, state["intermediates"]

    variables, inter = jax.eval_shape(run, x)
    shapes = {}
    flat = jax.tree_util.tree_flatten_with_path(inter, is_leaf=lambda n: isinstance(n, tuple))[0]
    for key_path, calls in flat:
        names = tuple(str(k.key) for k in key_path)
        if names[-1] == "__call__":
            shapes["/".join(names[:-1])] = [tuple(jax.tree.leaves(c)[0].shape) for c in calls]
    return variables, shapes


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_zoo_summary_matches_eval_shape_and_the_parameter_tree(name):
    model = models.get(name)
    table = summary(model, INPUTS[name], batch_size=2)
    variables, shapes = captured_shapes(model, (2, *INPUTS[name]), train=False)
    seen = {}
    for row in table:
        index = seen.get(row.path, 0)
        seen[row.path] = index + 1
        assert row.output_shape == shapes[row.path][index], row.path
    assert table.output_shape == shapes[""][0]
    assert table.trainable_params == count(variables["params"])
    assert table.non_trainable_params == count(variables.get("batch_stats", {}))
    # Every parameter sits on exactly one row: the column sums to the total (flax#2930).
    assert sum(row.params for row in table) == table.trainable_params
    assert sum(row.non_trainable for row in table) == table.non_trainable_params
    assert table.trainable_bytes == 4 * table.trainable_params  # float32


def test_mnist_cnn_table_by_hand():
    table = summary(models.get("mnist_cnn"), "28x28x1")
    rows = {row.path: row for row in table}
    assert [r.path for r in table] == ["conv1", "conv2", "Flatten_0", "Dropout_0", "classifier"]
    assert rows["conv1"].output_shape == (1, 13, 13, 32) and rows["conv1"].params == 320
    assert rows["conv2"].output_shape == (1, 5, 5, 64) and rows["conv2"].params == 18_496
    assert rows["classifier"].params == 16_010
    # FLOPs = 2 x MACs: 26*26*32 outputs x 9 taps; 11*11*64 x 9*32; 1600 x 10.
    assert rows["conv1"].flops == 2 * 26 * 26 * 32 * 9
    assert rows["conv2"].flops == 2 * 11 * 11 * 64 * 9 * 32
    assert rows["classifier"].flops == 2 * 1600 * 10
    assert table.flops == 2 * (26 * 26 * 32 * 9 + 11 * 11 * 64 * 288 + 16_000)
    # Receptive field: 3x3 conv (3, jump 1), 2x2 pool (4, 2), 3x3 conv (8, 2), pool (10, 4).
    assert (rows["conv1"].receptive_field, rows["conv1"].jump) == ((4, 4), (2, 2))
    assert (rows["conv2"].receptive_field, rows["conv2"].jump) == ((10, 10), (4, 4))
    assert rows["Flatten_0"].receptive_field is None
    text = str(table)
    for fragment in (
        "Layer (path)",
        "ConvBlock",
        "(1, 13, 13, 32)",
        "Total params: 34,826",
        "Trainable params: 34,826 (136.04 KiB)",
        "FLOPs: 4,881,920",
        "2 x multiply-accumulates",
    ):
        assert fragment in text
    assert table.as_dicts()[0]["path"] == "conv1"
    assert jaxcnn.summary is summary


def test_resnet20_receptive_field_follows_the_main_path_not_the_shortcut():
    table = summary(models.get("resnet20"), (32, 32, 3))
    rows = {row.path: row for row in table}
    # stem 3; +2 per 3x3 conv at jump 1 (6 convs) = 15; stride 2: 17, +5*4 = 37;
    # stride 2: 41, +5*8 = 81.
    assert rows["stage1_2"].receptive_field == (15, 15)
    assert rows["stage2_0/conv1"].receptive_field == (17, 17)
    assert rows["stage3_2"].receptive_field == (81, 81) and rows["stage3_2"].jump == (4, 4)
    assert rows["stage1_0"].depth == 1 and rows["stage1_0/conv1"].depth == 2


class FunctionalPools(nn.Module):
    """Flax's own MNIST example style: pools called as functions, not modules."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), padding="SAME", name="a")(x))
        x = nn.max_pool(x, (3, 3), strides=(1, 1), padding="SAME")  # same shape
        x = nn.Conv(4, (3, 3), padding="SAME", name="b")(x)
        x = nn.avg_pool(x, (2, 2), strides=(2, 2))  # shape halves
        return nn.Conv(4, (3, 3), padding="SAME", name="c")(x)


def test_pools_called_as_functions_extend_the_receptive_field():
    rows = {row.path: row for row in summary(FunctionalPools(), (12, 12, 1))}
    # a: 3; SAME 3x3/1 max pool: 5; b: 7; 2x2/2 avg pool: 8, jump 2; c: 8 + 2 * 2 = 12.
    assert (rows["a"].receptive_field, rows["b"].receptive_field) == ((3, 3), (7, 7))
    assert (rows["c"].receptive_field, rows["c"].jump) == ((12, 12), (2, 2))


class Upsampling(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), strides=2, padding="SAME", name="down")(x))
        x = nn.relu(nn.ConvTranspose(4, (3, 3), strides=(2, 2), name="up")(x))
        return nn.Conv(4, (3, 3), padding="SAME", name="after")(x)


def test_receptive_field_is_unknown_after_a_transposed_conv_not_guessed():
    # The calculator has no spec for transposed convolutions (neither does the CLI):
    # the rows after one say so instead of reusing an older same-shaped tensor's path.
    rows = {row.path: row for row in summary(Upsampling(), (8, 8, 1))}
    assert (rows["down"].receptive_field, rows["down"].jump) == ((3, 3), (2, 2))
    assert rows["up"].receptive_field is None and rows["after"].receptive_field is None


class UserNet(nn.Module):
    """A user's own module: a shared jaxcnn block, a plain flax conv, a DenseStack."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        shared = ConvBlock(8, (3, 3), padding="SAME", norm="batch", name="shared")
        x = shared(shared(x, train), train)  # the same weights twice
        x = nn.Conv(4, (3, 3), strides=2, padding="VALID", name="down")(x)
        x = Flatten()(x)
        return DenseStack((16,), out_features=5, name="mlp")(x, train)


def test_user_module_shared_nested_and_plain_flax_layers():
    table = summary(UserNet(), (9, 9, 8), batch_size=3)
    paths = [row.path for row in table]
    assert paths == ["shared", "shared", "down", "Flatten_0", "mlp", "mlp/Dense_0", "mlp/Dense_1"]
    shared_rows = [row for row in table if row.path == "shared"]
    assert [r.params for r in shared_rows] == [9 * 8 * 8 + 2 * 8, 0]  # counted once
    assert shared_rows[0].non_trainable == 2 * 8
    assert shared_rows[0].flops == shared_rows[1].flops == 2 * 3 * 81 * 8 * 72  # per call
    down = table[2]
    assert down.output_shape == (3, 4, 4, 4) and down.params == 9 * 8 * 4 + 4
    assert down.flops == 2 * 3 * 16 * 4 * 72
    # RF: two 3x3 SAME convs (5), then a 3x3/2 conv (7, jump 2).
    assert (down.receptive_field, down.jump) == ((7, 7), (2, 2))
    assert table[4].params == 0  # DenseStack's parameters are on its Dense rows
    assert table[5].params == 64 * 16 + 16 and table[6].params == 16 * 5 + 5
    variables, _ = captured_shapes(UserNet(), (3, 9, 9, 8))
    assert sum(row.params for row in table) == table.trainable_params == count(variables["params"])


def test_bfloat16_params_halve_the_memory():
    table = summary(models.get("lenet5", param_dtype=jnp.bfloat16), (28, 28, 1))
    assert table.trainable_bytes == 2 * table.trainable_params == 2 * 61_706


def test_parameter_explosion():
    comparison = parameter_explosion((100, 100, 1))  # one unit per pixel
    assert comparison.dense_units == 10_000
    assert comparison.dense_weights == 100_000_000
    assert comparison.dense_params == 100_010_000
    assert comparison.conv_params == 3 * 3 * 1 * 32 + 32
    assert "100,000,000 weights" in str(comparison)
    rgb = parameter_explosion(
        "32x32x3", 512, conv_features=64, kernel_size=5, model=models.get("cifar_cnn")
    )
    assert rgb.dense_weights == 32 * 32 * 3 * 512 and rgb.conv_params == 5 * 5 * 3 * 64 + 64
    assert rgb.model_params == 122_570 and "The whole CNN: 122,570" in str(rgb)
    with pytest.raises(ValueError, match="dense_units=0"):
        parameter_explosion((10, 10, 1), 0)
    with pytest.raises(ValueError, match="kernel_size=\\(3, 3, 3\\)"):
        parameter_explosion((10, 10, 1), kernel_size=(3, 3, 3))


def test_bad_arguments():
    with pytest.raises(ValueError, match="input_shape='28x28xa'"):
        parse_input_shape("28x28xa")
    with pytest.raises(ValueError, match="input_shape=\\(28, 0, 1\\)"):
        summary(models.get("mnist_cnn"), (28, 0, 1))
    with pytest.raises(ValueError, match="batch_size=0"):
        summary(models.get("mnist_cnn"), (28, 28, 1), batch_size=0)


def test_cli_prints_table_json_and_errors(capsys):
    assert summary_command.main(["resnet18", "--input", "64x64x3", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "layer4_1" in out and "Trainable params: 11,181,642" in out  # 11,689,512 - 990 * 512
    assert (
        summary_command.main(
            [
                "mnist_cnn",
                "--input",
                "8x8x1",
                "--kwarg",
                "padding=SAME",
                "--json",
                "--compare-dense",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    payload = json.loads(out[: out.rindex("}") + 1])
    assert payload["rows"][0]["output_shape"] == [1, 4, 4, 32]
    assert "Dense first layer, 64 units" in out
    assert summary_command.main(["mnist_cnn", "--input", "8x8x1"]) == 2
    assert "output size below 1" in capsys.readouterr().err
    assert summary_command.main(["lenet6", "--input", "8x8x1"]) == 2
    assert "not in the zoo" in capsys.readouterr().err
