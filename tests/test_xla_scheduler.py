"""jaxcnn.xla_scheduler: which XLA:CPU scheduler a train step's jit gets, and that it acts."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest

from jaxcnn import xla_scheduler

MEMORY = {xla_scheduler.OPTION: "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


@pytest.fixture(autouse=True)
def _no_switches(monkeypatch):
    for name in ("JAXCNN_XLA_SCHEDULER", "JAXCNN_NO_XLA_FLAGS", "XLA_FLAGS"):
        monkeypatch.delenv(name, raising=False)


def test_auto_picks_memory_for_bfloat16_steps_without_batch_norm_on_cpu_only():
    assert xla_scheduler.train_step_options("bfloat16", platform="cpu") == MEMORY
    assert xla_scheduler.train_step_options(jnp.bfloat16, platform="cpu") == MEMORY
    assert xla_scheduler.train_step_options("float32", platform="cpu") == {}
    assert xla_scheduler.train_step_options("bfloat16", platform="cpu", batch_norm=True) == {}
    assert xla_scheduler.train_step_options("bfloat16", platform="gpu") == {}
    assert xla_scheduler.train_step_options("bfloat16", platform="tpu") == {}
    assert xla_scheduler.describe({}) == "XLA's default"


@pytest.mark.parametrize("choice", ["memory", "concurrency"])
def test_the_switch_applies_to_every_step(monkeypatch, choice):
    monkeypatch.setenv("JAXCNN_XLA_SCHEDULER", f" {choice.upper()} ")
    for dtype in ("float32", "bfloat16"):
        for batch_norm in (False, True):
            assert xla_scheduler.train_step_options(dtype, "cpu", batch_norm) == {
                xla_scheduler.OPTION: xla_scheduler.VALUES[choice]
            }
    options = xla_scheduler.train_step_options("float32", "cpu")
    assert xla_scheduler.describe(options) == f"{choice}-optimised"  # what fit prints


@pytest.mark.parametrize(
    "variable, value",
    [
        ("JAXCNN_NO_XLA_FLAGS", "1"),
        ("XLA_FLAGS", "--xla_cpu_enable_concurrency_optimized_scheduler=true"),
        ("XLA_FLAGS", "--xla_a=1 --xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_DEFAULT"),
    ],
)
def test_auto_leaves_the_choice_to_xla_when_the_user_made_one(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    assert xla_scheduler.chosen("bfloat16") == ""
    assert xla_scheduler.train_step_options("bfloat16", platform="cpu") == {}


def test_a_flag_that_only_contains_the_name_is_not_a_scheduler_choice(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/xla_cpu_scheduler_type")
    assert xla_scheduler.chosen("bfloat16") == "memory"


def test_an_invalid_switch_names_the_variable_its_value_and_the_choices(monkeypatch):
    monkeypatch.setenv("JAXCNN_XLA_SCHEDULER", "bfs")
    with pytest.raises(
        ValueError, match=r"JAXCNN_XLA_SCHEDULER='bfs'; valid: auto, memory, concurrency"
    ):
        xla_scheduler.chosen("float32")


def _entry_order(compiler_options):
    """The optimised entry computation's dots and fusions, in the order XLA scheduled them."""

    def two_chains(x, w):  # two independent chains of three matmuls, joined at the end
        a = x @ w
        b = x @ w.T
        for _ in range(2):
            a, b = a @ w, b @ w.T
        return a + b

    x = jnp.ones((64, 64), jnp.bfloat16)
    text = jax.jit(two_chains, compiler_options=compiler_options).lower(x, x).compile().as_text()
    entry = text[text.index("\nENTRY") :]
    return re.findall(r"\n\s*%([\w.]+) = \S+ (?:dot|fusion)\(", entry)


def test_the_option_reorders_the_compiled_step_and_concurrency_is_xla_default():
    # This jaxlib reads the enum per jit (the old boolean passed per jit is ignored): if a
    # jaxlib renames it, compiling with it fails here instead of silently doing nothing.
    default = _entry_order({})
    memory = _entry_order(xla_scheduler.train_step_options("bfloat16", platform="cpu"))
    concurrency = _entry_order({xla_scheduler.OPTION: xla_scheduler.VALUES["concurrency"]})
    assert len(default) >= 6 and sorted(memory) == sorted(default)
    assert memory != default  # same operations, another order
    assert concurrency == default
