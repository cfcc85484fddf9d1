"""jaxcnn.xla_flags: flags added only before JAX starts, overridable, and accepted by XLA."""

from __future__ import annotations

import pytest

from jaxcnn import xla_flags


def test_merge_keeps_the_users_value_and_appends_new_flags():
    assert xla_flags.merge_flags("--xla_a=1", ["--xla_a=2", "--xla_b=3"]) == "--xla_a=1 --xla_b=3"
    assert xla_flags.merge_flags("", []) == ""


def test_merge_rejects_a_flag_without_dashes():
    with pytest.raises(ValueError, match="must start with '--'"):
        xla_flags.merge_flags("", ["xla_a=1"])


def test_chosen_flags_follow_the_environment(monkeypatch):
    monkeypatch.delenv("JAXCNN_XLA_FLAGS", raising=False)
    assert xla_flags.chosen_cpu_flags() == xla_flags.DEFAULT_CPU_FLAGS
    monkeypatch.setenv("JAXCNN_XLA_FLAGS", "--xla_a=1  --xla_b=2")
    assert xla_flags.chosen_cpu_flags() == ("--xla_a=1", "--xla_b=2")
    monkeypatch.setenv("JAXCNN_XLA_FLAGS", "")  # set but empty: no flags at all
    assert xla_flags.chosen_cpu_flags() == ()


def test_flags_are_added_before_the_backend_starts_and_xla_accepts_them(fresh_python):
    out = fresh_python(
        """
        import os
        from jaxcnn import xla_flags
        added = xla_flags.configure_cpu()
        assert added == xla_flags.DEFAULT_CPU_FLAGS, added
        assert all(f in os.environ["XLA_FLAGS"] for f in added)
        import jax.numpy as jnp
        assert float(jnp.ones(3).sum()) == 3.0  # XLA parsed the flags without complaint
        assert xla_flags.configure_cpu() == ()  # backend running: too late, nothing added
        print("ok", xla_flags.explain())
        """
    )
    assert out.startswith("ok XLA_FLAGS=") and "backend initialised: yes" in out


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"JAXCNN_NO_XLA_FLAGS": "1"}, "()"),
        ({"JAXCNN_XLA_FLAGS": "--xla_cpu_enable_fast_math=false"},
         "('--xla_cpu_enable_fast_math=false',)"),
        ({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=-individual_dot"}, "()"),
        ({"JAX_PLATFORMS": "tpu"}, "()"),
    ],
)  # fmt: skip
def test_environment_overrides(env, expected, fresh_python):
    assert (
        fresh_python("from jaxcnn import xla_flags; print(xla_flags.configure_cpu())", **env)
        == expected
    )
