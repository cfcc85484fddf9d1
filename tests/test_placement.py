"""jaxcnn.placement: the layers' "one CPU device?" question, asked of JAX or assumed."""

import threading

import jax
import pytest

from jaxcnn import placement


def test_outside_the_assumption_jax_answers():
    assert placement.on_cpu() == (jax.default_backend() == "cpu")
    expected = jax.default_backend() == "cpu" and jax.device_count() == 1
    assert placement.one_cpu_device() == expected


@pytest.fixture
def jax_says_gpu(monkeypatch):
    """JAX answering "one GPU", counting how often it is asked."""
    asked = []

    def backend():
        asked.append("default_backend")
        return "gpu"

    monkeypatch.setattr(jax, "default_backend", backend)
    monkeypatch.setattr(jax, "device_count", lambda *a, **k: asked.append("count") or 1)
    return asked


def test_the_assumption_answers_without_asking_jax(jax_says_gpu):
    with placement.assume_one_cpu_device():
        assert placement.on_cpu() and placement.one_cpu_device()
    assert jax_says_gpu == []
    assert not placement.on_cpu() and not placement.one_cpu_device()
    assert "default_backend" in jax_says_gpu


def test_the_assumption_ends_with_an_exception(jax_says_gpu):
    with pytest.raises(RuntimeError), placement.assume_one_cpu_device():
        raise RuntimeError("a model that cannot be traced")
    assert not placement.one_cpu_device()


def test_another_thread_still_asks_jax(jax_says_gpu):
    seen = []
    with placement.assume_one_cpu_device():
        worker = threading.Thread(target=lambda: seen.append(placement.one_cpu_device()))
        worker.start()
        worker.join()
        assert placement.one_cpu_device()
    assert seen == [False]


@pytest.fixture
def platforms_setting():
    """Sets jax.config.jax_platforms for one test (as JAX_PLATFORMS would), then restores it."""
    previous = jax.config.jax_platforms
    yield lambda value: jax.config.update("jax_platforms", value)
    jax.config.update("jax_platforms", previous)


@pytest.mark.parametrize(
    "platforms, problem",
    [
        ("cpu", None),
        ("CPU,cuda", None),
        ("tpu", "JAX_PLATFORMS='tpu' does not start with cpu"),
        ("cuda,cpu", "JAX_PLATFORMS='cuda,cpu' does not start with cpu"),
    ],
)
def test_the_platform_setting_decides(platforms_setting, platforms, problem):
    platforms_setting(platforms)
    assert placement.cpu_platform_problem() == problem


class _Plugin:
    def __init__(self, name):
        self.name = name


@pytest.mark.parametrize(
    "plugins, problem",
    [
        ([], None),
        (["some_profiler"], None),
        (["cuda12", "some_profiler"], "accelerator plugin(s) installed: cuda12"),
        (["tpu"], "accelerator plugin(s) installed: tpu"),
    ],
)
def test_without_a_setting_an_accelerator_plugin_decides(
    platforms_setting, monkeypatch, plugins, problem
):
    import importlib.metadata

    platforms_setting(None)
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda group: [_Plugin(name) for name in plugins]
    )
    assert placement.cpu_platform_problem() == problem
