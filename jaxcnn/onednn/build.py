"""Builds ``onednn_conv.cc`` on first use, caches the library, registers it with XLA.

The library needs a C++17 compiler, oneDNN's headers and library (Debian/Ubuntu:
``apt install libdnnl-dev``; elsewhere set ``JAXCNN_ONEDNN_ROOT`` to a prefix holding
``include/oneapi/dnnl`` and ``lib/libdnnl.so``) and XLA's FFI headers, which ship with
jaxlib (``jax.ffi.include_dir()``). It is compiled once per source, jax version and
compiler (about 3 s) into ``JAXCNN_CACHE_DIR`` (default ``~/.cache/jaxcnn``), written to
a temporary name and renamed, so an interrupted build leaves no half-written library.

Environment (read at first use):

* ``JAXCNN_ONEDNN_ROOT``: a oneDNN install prefix outside the system paths.
* ``CXX``: the compiler (default ``g++``, else ``c++``).
* ``JAXCNN_CACHE_DIR``: where built libraries are kept.
* ``JAXCNN_ONEDNN_OVERLAP``: what a convolution does when XLA starts it while another
  runs (a layer's two gradients are independent, so XLA runs them at once): ``wait``
  (default) for it, then take all the threads; ``single``: run at once on one thread,
  beside the other's full team (the policy before session 17, slower on 2 cores:
  ``docs/perf_notes.md``, item 36). See :func:`overlap_policy`.

:func:`unavailable_reason` says why the library cannot be used here (None when it can).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("onednn_conv.cc")
# Compiled into one library: the convolutions, batch norm's kernels, the fused first-layer
# conv + max pool, and the headers they share (the OpenMP team, bfloat16 conversions).
SOURCES = (SOURCE, SOURCE.with_name("batch_norm.cc"), SOURCE.with_name("conv_pool.cc"))
HEADERS = (SOURCE.with_name("team.h"), SOURCE.with_name("bfloat16.h"))
# FFI target name -> the handler symbol the library exports.
TARGETS = {
    "jaxcnn_onednn_conv_forward": "JaxcnnOnednnConvForward",
    "jaxcnn_onednn_conv_input_grad": "JaxcnnOnednnConvInputGrad",
    "jaxcnn_onednn_conv_kernel_grad": "JaxcnnOnednnConvKernelGrad",
    "jaxcnn_batch_norm_forward": "JaxcnnBatchNormForward",
    "jaxcnn_batch_norm_backward": "JaxcnnBatchNormBackward",
    "jaxcnn_conv_max_pool_forward": "JaxcnnConvMaxPoolForward",
    "jaxcnn_conv_max_pool_kernel_grad": "JaxcnnConvMaxPoolKernelGrad",
}


class OnednnUnavailable(RuntimeError):
    """The oneDNN convolution library could not be built or loaded (the message says why)."""


def _cache_dir() -> Path:
    if os.environ.get("JAXCNN_CACHE_DIR"):
        return Path(os.environ["JAXCNN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxcnn"


def _compiler() -> str:
    for name in (os.environ.get("CXX"), "g++", "c++"):
        if name and shutil.which(name):
            return name
    raise OnednnUnavailable("no C++ compiler found (set CXX, or install g++)")


def _cpu_identity() -> str:
    """The CPU's model and feature flags (what ``-march=native`` compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        import platform

        return platform.processor() or platform.machine()
    keep = [line for line in lines if line.split(":")[0].strip() in ("model name", "flags")]
    return "\n".join(keep[:2])


def compile_command(output: Path) -> list[str]:
    """The compiler command line that builds the library into ``output``.

    Examples:
        >>> cmd = compile_command(Path("/tmp/x.so"))
        >>> cmd[-4:]
        ['-ldnnl', '-o', '/tmp/x.so', '-Wno-return-type']
    """
    import jax

    root = os.environ.get("JAXCNN_ONEDNN_ROOT")
    extra = [] if not root else [f"-I{root}/include", f"-L{root}/lib", f"-Wl,-rpath,{root}/lib"]
    return [
        os.environ.get("CXX") or "g++",
        "-O3",  # vectorises batch_norm.cc's loops over channels
        "-march=native",  # for this CPU's vector width; the cache key names the CPU
        # GCC otherwise keeps to 256-bit vectors on AVX-512 CPUs; batch_norm.cc's
        # bfloat16 loops convert and round per element and ran 1.3x faster with 512.
        "-mprefer-vector-width=512",
        "-std=c++17",
        "-shared",
        "-fPIC",
        f"-I{jax.ffi.include_dir()}",
        *extra,
        *map(str, SOURCES),
        "-fopenmp",  # Debian's oneDNN runs on OpenMP; the binding sets team sizes
        "-ldnnl",
        "-o",
        str(output),
        # XLA's FFI headers end some switch functions without a return.
        "-Wno-return-type",
    ]


def library_path() -> Path:
    """Builds the library if this source, jax and compiler have no cached build yet.

    Raises:
      OnednnUnavailable: no compiler, or the build failed (its last error lines quoted).
    """
    import jax

    compiler = _compiler()
    digest = hashlib.sha256()
    for part in (*(f.read_bytes() for f in SOURCES + HEADERS), jax.__version__.encode(),
                 compiler.encode()):  # fmt: skip
        digest.update(part)
    digest.update(" ".join(compile_command(Path("-"))).encode())  # flags, include paths
    digest.update(_cpu_identity().encode())  # -march=native: a shared cache, another CPU
    target = _cache_dir() / f"onednn_conv-{digest.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix=".so.partial", dir=target.parent)
    os.close(fd)
    try:
        cmd = compile_command(Path(partial))
        cmd[0] = compiler
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "error" in line]
            shown = "\n".join((errors or done.stderr.splitlines())[-5:])
            raise OnednnUnavailable(
                f"building {', '.join(f.name for f in SOURCES)} failed ({' '.join(cmd[:2])} ... "
                f"exit {done.returncode}); is oneDNN installed (apt install libdnnl-dev, or set "
                f"JAXCNN_ONEDNN_ROOT)?\n{shown}"
            )
        os.replace(partial, target)  # atomic: readers see no library or a whole one
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return target


OVERLAP_POLICIES = ("wait", "single")


def overlap_policy() -> str:
    """``JAXCNN_ONEDNN_OVERLAP``, validated: ``"wait"`` (default) or ``"single"``.

    Read once, when the library loads.

    Raises:
      ValueError: naming the variable, its value and the valid ones.

    Examples:
        >>> overlap_policy() in OVERLAP_POLICIES
        True
    """
    from jaxcnn.conv_backend import env_choice

    return env_choice("JAXCNN_ONEDNN_OVERLAP", "wait", OVERLAP_POLICIES)


@functools.cache
def _load() -> str | None:
    """Builds, loads and registers the library once per process; returns why not, or None."""
    import jax

    single = overlap_policy() == "single"  # a bad value raises before anything is built
    try:
        library = ctypes.CDLL(str(library_path()))
    except OnednnUnavailable as err:
        return str(err)
    except OSError as err:  # built, but libdnnl.so cannot be found or loaded
        return f"loading the oneDNN convolution library failed: {err}"
    library.JaxcnnOnednnSetOverlap(ctypes.c_int64(int(single)))
    for target, symbol in TARGETS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)))
    return None


def unavailable_reason() -> str | None:
    """Why oneDNN convolutions cannot run in this process, or None when they can."""
    return _load()


def available() -> bool:
    """True when the library is built, loaded and registered with XLA."""
    return _load() is None


def require() -> None:
    """Raises :class:`OnednnUnavailable` (saying why) unless :func:`available`."""
    reason = _load()
    if reason is not None:
        raise OnednnUnavailable(reason)
