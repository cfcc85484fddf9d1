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
