"""Shared test setup.

JAX runs with ``jax_numpy_rank_promotion="raise"`` so silent broadcasting
fails loudly (the Equinox convention), and hypothesis has two profiles:
``ci`` (default, >= 1,000 examples for the shape properties) and ``slow``
(``HYPOTHESIS_PROFILE=slow``, many more).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "slow",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Property tests that hold the calculator against XLA multiply their example
# count by this (>= 1,000 per operation in CI; 10x that in the slow profile).
SHAPE_EXAMPLES = 1000 if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci" else 10_000

# pytest-xdist runs the suite in two processes (pyproject.toml). On a GPU each JAX process
# would otherwise reserve 75 % of the device's memory, so the second one would fail.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

_COMPILATION_CACHE = pytest.StashKey[str]()

# Most of the suite's time is XLA compiling small programs, and most of that is LLVM
# optimizing the CPU code it emits. The suite compiles with LLVM's optimizations off: the
# HLO programs (fusion, layout, jaxcnn's oneDNN/Winograd calls) are the ones users run and
# jaxcnn's own kernels are built as always; only XLA's generated loops run slower. 8m51 ->
# 6m28 here (docs/perf_notes.md, session 38). `JAXCNN_TEST_FULL_OPTIMIZATION=1` compiles as
# users do; a level in the user's XLA_FLAGS wins; not applied off CPU.
TEST_ONLY_XLA_FLAGS = ("--xla_backend_optimization_level=0",)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("JAXCNN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


# The suite's slowest files, slowest first (summed test time on the 2-core Xeon, session
# 45: 112, 73, 55, 43 and 38 s of 705). pytest-xdist hands each worker whole files in
# collection order (`--no-loadscope-reorder`, pyproject.toml), so these start first and
# the short files fill in at the end, instead of one worker running a 112-second file
# while the other has nothing left (7m03 -> 5m48 here; docs/perf_notes.md, session 45).
SLOWEST_FILES = (
    "test_routes_agree.py",
    "test_train_fit.py",
    "test_onednn.py",
    "test_shapes_flax.py",
    "test_winograd.py",
)


def pytest_collection_modifyitems(config, items):
    """Moves the tests of ``SLOWEST_FILES`` to the front, in that order (a stable sort:
    the order within each file, and of the other files, is kept)."""
    missing = [name for name in SLOWEST_FILES if not (Path(__file__).parent / name).exists()]
    if missing:  # a renamed file would silently lose its place
        raise pytest.UsageError(f"tests/conftest.py: SLOWEST_FILES names no such file: {missing}")
    rank = {name: index for index, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_configure(config):
    # Imported here, not at module top, so collecting pure-Python tests stays cheap.
    import jax

    jax.config.update("jax_numpy_rank_promotion", "raise")
    # Many tests compile the same program again: every `fit` builds fresh jitted steps,
    # and child processes (SIGKILL, four devices) start cold. JAX's persistent cache keys
    # an executable on its HLO, flags and backend, so a hit is the program a compile would
    # have built. One directory per process (its writes are not atomic), removed at exit;
    # the environment variable carries it into the children this process starts.
    cache = tempfile.mkdtemp(prefix="jaxcnn-test-xla-cache-")
    config.stash[_COMPILATION_CACHE] = cache
    os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    _compile_without_llvm_optimizations()


def _compile_without_llvm_optimizations() -> None:
    """Adds TEST_ONLY_XLA_FLAGS to XLA_FLAGS (read when the backend starts: after this)."""
    if os.environ.get("JAXCNN_TEST_FULL_OPTIMIZATION", "") not in ("", "0"):
        return
    from jaxcnn import placement, xla_flags

    if placement.cpu_platform_problem() is None:
        existing = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = xla_flags.merge_flags(existing, TEST_ONLY_XLA_FLAGS)


def full_optimization_env() -> dict[str, str]:
    """This process's environment without TEST_ONLY_XLA_FLAGS: for a child process that
    should compile as users do (one that trains for long, where LLVM's optimizations pay)."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    kept = [flag for flag in flags if flag not in TEST_ONLY_XLA_FLAGS]
    return {**os.environ, "XLA_FLAGS": " ".join(kept)}


def pytest_unconfigure(config):
    shutil.rmtree(config.stash.get(_COMPILATION_CACHE, ""), ignore_errors=True)


_NHWC = ("NHWC", "HWIO", "NHWC")


def conv_by_definition(x, w, pads):
    """An NHWC / HWIO stride-1 convolution as defined: pad each spatial edge by ``pads``
    (negative entries crop), then a VALID convolution. Not lax's own padding: XLA:CPU
    (jax 0.10.2) gets a negative low pad with a positive high one, e.g. (-1, 1), wrong
    (``jaxcnn.conv_backend.crop_negative_low_padding``)."""
    from jax import lax

    config = [(0, 0, 0), *((lo, hi, 0) for lo, hi in pads), (0, 0, 0)]
    padded = lax.pad(x, 0.0, config)
    return lax.conv_general_dilated(padded, w, (1, 1), "VALID", dimension_numbers=_NHWC)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (MNIST, Fashion-MNIST IDX files, CIFAR-10 JPEGs); skip if absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (a fresh clone has no ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def fresh_python():
    """Runs a script in a new interpreter, without this process's XLA_*, JAXCNN_* and
    JAX_PLATFORMS settings (plus ``env``), and returns the last line it printed.

    For what acts only before JAX's backend starts (XLA flags, glibc's malloc settings).
    """
    import subprocess
    import sys
    import textwrap

    def run(script: str, **env) -> str:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_", "JAXCNN_"))}
        clean.pop("JAX_PLATFORMS", None)
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            capture_output=True, text=True, timeout=180, env={**clean, **env},
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-1500:]
        return proc.stdout.strip().splitlines()[-1]

    return run


# digits, the small zoo net, 2 epochs (two points make a curve): ~15 s on 2 CPU cores,
# most of it compilation, so test_viz and test_report share one run per session.
TINY_EPOCHS = 2


@pytest.fixture(scope="session")
def tiny_digits_run(tmp_path_factory) -> dict:
    """One tiny real training run: its workdir, the restored model and its test predictions."""
    import numpy as np

    from jaxcnn import data, train

    config = train.base_config()
    config.dataset = "digits"
    config.model = "digits_cnn"
    config.num_epochs = TINY_EPOCHS
    config.batch_size = 64
    config.eval_batch_size = 359  # the whole digits test split in one batch
    config.progress_bar = False
    config.tensorboard = False
    workdir = tmp_path_factory.mktemp("tiny_run")
    train.fit(config, workdir)
    restored = train.restore(workdir)
    test = data.load("digits").test
    logits = np.asarray(restored.predict(test.images))
    inputs = data.normalize(test.images[:2], restored.norm_mean, restored.norm_std)
    return {
        "workdir": workdir,
        "restored": restored,
        "images": test.images,
        "labels": test.labels,
        "predictions": logits.argmax(axis=1),
        "inputs": np.asarray(inputs),
    }
