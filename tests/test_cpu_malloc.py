"""jaxcnn.cpu_malloc: glibc keeps XLA's large scratch block mapped between calls.

Each case runs in a fresh interpreter: the settings act only before JAX's backend starts.
"""

from __future__ import annotations

import json

import pytest

from jaxcnn import cpu_malloc

glibc_only = pytest.mark.skipif(cpu_malloc._glibc() is None, reason="needs glibc (Linux)")

# A jitted call whose temporaries (the barriers keep y) are one 96 MB block: above the
# 64 MB that a worker thread's glibc arena can hold, so by default it is a fresh mmap
# that faults in all of its 24,576 pages on every call.
_FAULTS_PER_CALL = """
    import resource
    import jax, jax.numpy as jnp
    import os
    from jaxcnn import cpu_malloc, xla_flags
    xla_flags.configure_cpu(scratch_bytes=int(os.environ["SCRATCH"]))
    x = jnp.ones((24 * 2**20,), jnp.float32)

    @jax.jit
    def f(x):
        y = jax.lax.optimization_barrier(x * 2.0)
        z = jax.lax.optimization_barrier(y * y + 1.0)
        return z.sum() + y.sum()

    assert f.lower(x).compile().memory_analysis().temp_size_in_bytes >= 96 * 2**20

    faults = []  # per call; the fewest, once the heap has grown to its steady size
    for _ in range(12):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        f(x).block_until_ready()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(cpu_malloc.state().split(":")[0], min(faults[4:]))
"""


@glibc_only
@pytest.mark.parametrize(
    "choice, scratch, kept",
    [("auto", 96 << 20, True), ("reuse", 0, True),
     ("auto", 16 << 20, False), ("system", 96 << 20, False)],
)  # fmt: skip
def test_the_scratch_block_is_kept_mapped_only_where_chosen(choice, scratch, kept, fresh_python):
    state, faults = fresh_python(
        _FAULTS_PER_CALL, JAXCNN_MALLOC=choice, SCRATCH=str(scratch)
    ).split()
    assert state == ("reuse" if kept else "system")
    if kept:
        assert int(faults) < 2_000, f"{faults} page faults per call with the block kept"
    else:  # the case the settings exist for: 24,576 pages, faulted in again each call
        assert int(faults) > 20_000, f"only {faults} page faults per call by default"


def test_the_estimate_counts_every_layer_output_without_starting_jax(fresh_python):
    out = fresh_python(
        """
        import jax.numpy as jnp
        from jax._src import xla_bridge
        from jaxcnn import cpu_malloc, models
        per_image = cpu_malloc.activation_bytes(models.get("resnet20", dtype=jnp.bfloat16),
                                                (32, 32, 3), batch_size=1)
        print(per_image >> 10, xla_bridge.backends_are_initialized())
        """
    )
    assert out == "1272 False"  # KB per image; XLA's block at batch 128 was 103 MB


# Batch sizes whose steps faulted in XLA's whole block every step under glibc's defaults
# (page faults counted, docs/perf_notes.md item 93), and the next smaller ones measured,
# which did not: `auto` must put each on its side.
_FAULTED_FROM = {  # (net, dtype): (largest batch without faults, smallest with)
    ("mnist_cnn", "float32"): (256, 512),
    ("mnist_cnn", "bfloat16"): (256, 512),
    ("cifar_cnn", "float32"): (128, 256),
    ("cifar_cnn", "bfloat16"): (128, 256),
    ("resnet20", "bfloat16"): (32, 64),
    ("fast_cifar", "bfloat16"): (32, 64),
}


def test_the_estimate_puts_the_measured_batch_sizes_on_the_side_their_faults_favour(
    fresh_python,
):
    out = fresh_python(
        f"""
        import json
        import jax.numpy as jnp
        from jaxcnn import cpu_malloc, models
        shapes = {{"mnist_cnn": (28, 28, 1), "cifar_cnn": (32, 32, 3),
                   "resnet20": (32, 32, 3), "fast_cifar": (32, 32, 3)}}
        kept = {{}}
        for (net, dtype), batches in {_FAULTED_FROM!r}.items():
            model = models.get(net, dtype=jnp.dtype(dtype))
            kept[f"{{net}} {{dtype}}"] = [
                cpu_malloc.scratch_estimate(model, shapes[net], b) >= cpu_malloc.REUSE_FROM_BYTES
                for b in batches
            ]
        print(json.dumps(kept))
        """
    )
    kept = json.loads(out)
    assert kept == {f"{net} {dtype}": [False, True] for net, dtype in _FAULTED_FROM}


@glibc_only
def test_too_late_once_the_backend_has_started(fresh_python):
    out = fresh_python(
        """
        import jax.numpy as jnp
        from jaxcnn import cpu_malloc
        jnp.ones(3).block_until_ready()
        print(cpu_malloc.configure(1 << 30))
        """
    )
    assert out == "unchanged: the JAX backend had started (its threads keep their arenas)"


def test_not_applied_off_cpu(fresh_python):
    out = fresh_python(
        "from jaxcnn import cpu_malloc; print(cpu_malloc.configure(1 << 30))", JAX_PLATFORMS="tpu"
    )
    assert out == "unchanged: JAX_PLATFORMS='tpu' does not start with cpu"


def test_an_invalid_choice_names_the_variable_and_the_valid_values(monkeypatch):
    monkeypatch.setenv("JAXCNN_MALLOC", "jemalloc")
    with pytest.raises(ValueError, match=r"JAXCNN_MALLOC='jemalloc'; valid: auto, reuse, system"):
        cpu_malloc.configure()


def test_the_benchmark_line_reports_it(fresh_python):
    out = fresh_python(
        "from jaxcnn import xla_flags; print(xla_flags.explain())", JAXCNN_MALLOC="system"
    )
    assert out.endswith("; malloc unchanged: configure() not called")
