"""Builds ``onednn_conv.cc`` on first use, caches the library, registers it with XLA.

The library needs a C++17 compiler, oneDNN's headers and library (Debian/Ubuntu:
``apt install libdnnl-dev``; elsewhere set ``JAXCNN_ONEDNN_ROOT`` to a prefix holding
``include/oneapi/dnnl`` and ``lib/libdnnl.so``) and XLA's FFI headers, which ship with
jaxlib (``jax.ffi.include_dir()``). It is compiled once per source, jax version and
compiler (10-30 s) into ``JAXCNN_CACHE_DIR`` (default ``~/.cache/jaxcnn``), written to
a temporary name and renamed, so an interrupted build leaves no half-written library.

Which oneDNN. The main library links the one under ``JAXCNN_ONEDNN_ROOT``, else the
system's (Debian 12's ``libdnnl-dev`` is oneDNN 2.6), else oneDNN 3.2 from PyPI
(``onednn-cpu-gomp`` and ``onednn-devel-cpu-gomp``, jaxcnn's dependencies on Linux x86-64,
installed under the environment's prefix: :func:`pip_onednn_root`). When the main one is
older than 3, the convolutions alone are also built against the PyPI oneDNN 3 as a second
library, whose targets (``jaxcnn_onednn3_conv_*``) run bfloat16 convolutions
(:func:`onednn3_serves`): its AMX gradient kernels took 0.5-0.7x oneDNN 2.6's time alone
on the Intel Xeon (the steps moved within the machine's noise: ``docs/perf_notes.md``,
item 46), while float32 stays on 2.6, which still has Winograd (oneDNN 3 dropped it on
AVX-512). Built by GCC, both libraries share one OpenMP team policy and wait for each
other: team.h's inline variables are unique symbols across the process.

Environment (read at first use):

* ``JAXCNN_ONEDNN_ROOT``: a oneDNN install prefix outside the system paths.
* ``JAXCNN_ONEDNN_BFLOAT16``: ``auto`` (default: the second library, as above) or
  ``main`` (bfloat16 convolutions on the main library too). Read at trace time.
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

import concurrent.futures
import ctypes
import fcntl
import functools
import hashlib
import os
import shutil
import site
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("onednn_conv.cc")
# Compiled into one library: the convolutions, batch norm's kernels, the fused first-layer
# conv + max pool, the bfloat16 kernel gradient over image pairs, the gradient sum of
# fast_ops.fork, the Winograd tile transforms, and the headers they share (the OpenMP
# team, bfloat16 conversions, AVX-512 helpers).
SOURCES = tuple(
    SOURCE.with_name(name)
    for name in (
        "onednn_conv.cc",
        "batch_norm.cc",
        "conv_pool.cc",
        "kernel_grad_pairs.cc",
        "add.cc",
        "winograd.cc",
    )
)
HEADERS = tuple(SOURCE.with_name(h) for h in ("team.h", "bfloat16.h", "simd16.h"))
# FFI target name -> the handler symbol the library exports.
TARGETS = {
    "jaxcnn_onednn_conv_forward": "JaxcnnOnednnConvForward",
    "jaxcnn_onednn_conv_input_grad": "JaxcnnOnednnConvInputGrad",
    "jaxcnn_onednn_conv_kernel_grad": "JaxcnnOnednnConvKernelGrad",
    "jaxcnn_batch_norm_forward": "JaxcnnBatchNormForward",
    "jaxcnn_batch_norm_backward": "JaxcnnBatchNormBackward",
    "jaxcnn_bias_activation_forward": "JaxcnnBiasActivationForward",
    "jaxcnn_bias_activation_backward": "JaxcnnBiasActivationBackward",
    "jaxcnn_conv_max_pool_forward": "JaxcnnConvMaxPoolForward",
    "jaxcnn_conv_max_pool_kernel_grad": "JaxcnnConvMaxPoolKernelGrad",
    "jaxcnn_kernel_grad_pairs": "JaxcnnKernelGradPairs",
    "jaxcnn_add": "JaxcnnAdd",
    "jaxcnn_winograd_input": "JaxcnnWinogradInput",
    "jaxcnn_winograd_output": "JaxcnnWinogradOutput",
    "jaxcnn_winograd_output_grad": "JaxcnnWinogradOutputGrad",
    "jaxcnn_winograd_input_grad": "JaxcnnWinogradInputGrad",
    "jaxcnn_winograd_conv": "JaxcnnWinogradConv",
    "jaxcnn_winograd_kernel_grad": "JaxcnnWinogradKernelGrad",
}


# The second library's targets: the convolutions' names with "onednn3" (see onednn3_serves).
CONV_TARGETS = tuple(t for t in TARGETS if t.startswith("jaxcnn_onednn_conv_"))
SYSTEM_HEADERS = tuple(
    Path(prefix, "include/oneapi/dnnl/dnnl.hpp") for prefix in ("/usr", "/usr/local")
)


def onednn3_target(target: str) -> str:
    """The second library's name for a convolution target.

    Examples:
        >>> onednn3_target("jaxcnn_onednn_conv_forward")
        'jaxcnn_onednn3_conv_forward'
    """
    return target.replace("jaxcnn_onednn_", "jaxcnn_onednn3_", 1)


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


def pip_onednn_root() -> Path | None:
    """The prefix where PyPI's oneDNN 3 (``onednn-devel-cpu-gomp``) is installed, or None.

    Its wheels put ``include/oneapi/dnnl`` and ``lib/libdnnl.so.3`` under the
    environment's prefix (``sys.prefix``: the virtualenv), or the user's with ``--user``.

    Examples:
        >>> root = pip_onednn_root()
        >>> root is None or (root / "include/oneapi/dnnl/dnnl.hpp").exists()
        True
    """
    for prefix in (Path(sys.prefix), Path(site.getuserbase())):  # pip install [--user]
        if (prefix / "include/oneapi/dnnl/dnnl.hpp").exists() and any(
            (prefix / "lib").glob("libdnnl.so.3*")
        ):
            return prefix
    return None


def main_root() -> str | None:
    """The oneDNN prefix the main library links: ``JAXCNN_ONEDNN_ROOT``, else None for the
    system's (when its headers are there), else :func:`pip_onednn_root` (None if absent)."""
    if os.environ.get("JAXCNN_ONEDNN_ROOT"):
        return os.environ["JAXCNN_ONEDNN_ROOT"]
    if any(header.exists() for header in SYSTEM_HEADERS):
        return None
    pip = pip_onednn_root()
    return None if pip is None else str(pip)


def compile_command(output: Path, sources=None, root: str | None = "main") -> list[str]:
    """The compiler command line that builds ``sources`` (default all) into ``output``.

    ``root`` is the oneDNN prefix, None for the system's; ``"main"``: :func:`main_root`.

    Examples:
        >>> cmd = compile_command(Path("/tmp/x.so"))
        >>> cmd[-4:]
        ['-ldnnl', '-o', '/tmp/x.so', '-Wno-return-type']
    """
    import jax

    root = main_root() if root == "main" else root
    extra = [] if not root else [f"-I{root}/include", f"-L{root}/lib", f"-Wl,-rpath,{root}/lib"]
    return [
        os.environ.get("CXX") or "g++",
        "-O3",  # vectorises batch_norm.cc's loops over channels
        "-march=native",  # for this CPU's vector width; the cache key names the CPU
        # GCC otherwise keeps to 256-bit vectors on AVX-512 CPUs; batch_norm.cc's
        # bfloat16 loops convert and round per element and ran 1.3x faster with 512.
        "-mprefer-vector-width=512",
        # IEEE results unchanged (not -ffast-math: no reassociation, NaN and inf kept);
        # it lets GCC vectorise loops whose float -> int conversion or min / max might
        # raise a floating-point exception flag, which nothing reads. Without it the
        # GELU loops' exp stayed scalar where simd16.h's AVX-512 loops are not built:
        # 7.6x slower on the AVX2 Zen 3 (docs/perf_notes.md, item 83).
        "-fno-trapping-math",
        "-std=c++17",
        "-shared",
        "-fPIC",
        f"-I{jax.ffi.include_dir()}",
        *extra,
        *map(str, SOURCES if sources is None else sources),
        "-fopenmp",  # Debian's oneDNN runs on OpenMP; the binding sets team sizes
        "-ldnnl",
        "-o",
        str(output),
        # XLA's FFI headers end some switch functions without a return.
        "-Wno-return-type",
    ]


def library_path(sources=None, root: str | None = "main", name: str = "onednn_conv") -> Path:
    """Builds the library if this source, jax and compiler have no cached build yet.

    Args: as :func:`compile_command`'s; ``name`` starts the cached file's name.

    Raises:
      OnednnUnavailable: no compiler, or the build failed (its last error lines quoted).
    """
    import jax

    sources = SOURCES if sources is None else sources
    root = main_root() if root == "main" else root
    compiler = _compiler()
    digest = hashlib.sha256()
    for part in (*(f.read_bytes() for f in (*sources, *HEADERS)), jax.__version__.encode(),
                 compiler.encode()):  # fmt: skip
        digest.update(part)
    command = compile_command(Path("-"), sources, root)  # its output named at the build
    digest.update(" ".join(command).encode())  # flags, paths
    digest.update(_cpu_identity().encode())  # -march=native: a shared cache, another CPU
    target = _cache_dir() / f"{name}-{digest.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # One process builds, the others (pytest's workers, a data loader's) wait for it
    # instead of compiling the same library at once on the same cores.
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            _build([compiler, *command[1:]], sources, target)
    return target


def _compile_in_parallel(cmd: list[str], sources, output: str) -> subprocess.CompletedProcess:
    """``cmd`` (:func:`compile_command`'s) run as one ``-c`` compile per source on every
    core, then one link into ``output``: the sources take about a minute one after
    another."""
    names = [str(f) for f in sources]
    flags = [c for c in cmd[1:] if c not in names and c not in ("-shared", "-ldnnl")]
    out_at = flags.index("-o")
    flags = flags[:out_at] + flags[out_at + 2 :]  # without "-o -"
    with tempfile.TemporaryDirectory(dir=Path(output).parent) as folder:
        objects = [str(Path(folder) / f"{i}-{Path(n).stem}.o") for i, n in enumerate(names)]

        def compile_one(pair):
            source, obj = pair
            return subprocess.run([cmd[0], *flags, "-c", source, "-o", obj],
                                  capture_output=True, text=True)  # fmt: skip

        with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            results = list(pool.map(compile_one, zip(names, objects, strict=True)))
        failed = [r for r in results if r.returncode != 0]
        if failed:
            return failed[0]
        link = []  # cmd with the objects where the sources were (before -ldnnl)
        for part in cmd:
            if part == names[0]:
                link.extend(objects)
            elif part not in names:
                link.append(part)
        link[link.index("-o") + 1] = output
        return subprocess.run(link, capture_output=True, text=True)


def _build(cmd: list[str], sources, target: Path) -> None:
    fd, partial = tempfile.mkstemp(suffix=".so.partial", dir=target.parent)
    os.close(fd)
    try:
        done = _compile_in_parallel(cmd, sources, partial)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "error" in line]
            shown = "\n".join((errors or done.stderr.splitlines())[-5:])
            raise OnednnUnavailable(
                f"building {', '.join(f.name for f in sources)} failed ({' '.join(cmd[:2])} ... "
                f"exit {done.returncode}); is oneDNN installed (pip install "
                f"onednn-devel-cpu-gomp==2023.2.0, apt install libdnnl-dev, or set "
                f"JAXCNN_ONEDNN_ROOT)?\n{shown}"
            )
        os.replace(partial, target)  # atomic: readers see no library or a whole one
    finally:
        if os.path.exists(partial):
            os.remove(partial)


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
    _versions["main"] = _version_of(library)
    library.JaxcnnKernelGradPairsBuilt.restype = ctypes.c_int64
    _built["simd16"] = bool(library.JaxcnnKernelGradPairsBuilt())  # JAXCNN_SIMD16
    _built["bfloat16"] = _makes_bfloat16(library)
    return None


def _makes_bfloat16(library) -> bool:
    library.JaxcnnOnednnMakesBfloat16.restype = ctypes.c_int64
    return bool(library.JaxcnnOnednnMakesBfloat16())


# What the loaded libraries have: simd16.h's loops compiled in, bfloat16 primitives.
_built: dict[str, bool] = {}


def simd16_built() -> bool:
    """Whether the loaded library has ``simd16.h``'s AVX-512 loops: ``kernel_grad_pairs.cc``'s
    kernel and ``batch_norm.cc``'s vector GELU. Its compiler targeted AVX-512F and
    AVX512_BF16 (``-march=native`` on such a CPU). False where it is not loaded.

    Examples:
        >>> simd16_built() in (True, False)
        True
    """
    return _load() is None and _built.get("simd16", False)


def kernel_grad_pairs_built() -> bool:
    """Whether the loaded library has ``kernel_grad_pairs.cc``'s kernel (:func:`simd16_built`).

    Examples:
        >>> kernel_grad_pairs_built() == simd16_built()
        True
    """
    return simd16_built()


_versions: dict[str, str] = {}  # "main" / "onednn3" -> the oneDNN version each links


def _version_of(library) -> str:
    library.JaxcnnOnednnVersion.restype = ctypes.c_int64
    number = library.JaxcnnOnednnVersion()
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}"


@functools.cache
def _load_onednn3() -> str | None:
    """Builds, loads and registers the second library (oneDNN 3's convolutions); returns
    why not, or None. Only where the main library loaded and links an older oneDNN."""
    import jax

    reason = _load()
    if reason is not None:
        return reason
    if int(_versions["main"].split(".")[0]) >= 3:
        return f"the main library already links oneDNN {_versions['main']}"
    root = pip_onednn_root()
    if root is None:
        return "PyPI's oneDNN 3 is not installed (pip install onednn-devel-cpu-gomp==2023.2.0)"
    try:
        library = ctypes.CDLL(str(library_path((SOURCE,), str(root), "onednn3_conv")))
    except OnednnUnavailable as err:
        return str(err)
    except OSError as err:
        return f"loading the oneDNN 3 convolution library failed: {err}"
    # The same policy, in case this library has its own team state: GCC makes team.h's
    # inline variables one per process (unique symbols); a compiler that does not, not.
    library.JaxcnnOnednnSetOverlap(ctypes.c_int64(int(overlap_policy() == "single")))
    for target in CONV_TARGETS:
        capsule = jax.ffi.pycapsule(getattr(library, TARGETS[target]))
        jax.ffi.register_ffi_target(onednn3_target(target), capsule)
    _versions["onednn3"] = _version_of(library)
    _built["onednn3_bfloat16"] = _makes_bfloat16(library)
    return None


BFLOAT16_CHOICES = ("auto", "main")


def onednn3_serves(dtype) -> bool:
    """Whether convolutions of ``dtype`` run on the second library (oneDNN 3): bfloat16
    ones under ``JAXCNN_ONEDNN_BFLOAT16=auto`` (the default) where it builds and the main
    library links an older oneDNN. Builds it on first use (about 20 s).

    Examples:
        >>> onednn3_serves("float32")
        False
    """
    import numpy as np
    from jax import numpy as jnp

    from jaxcnn.conv_backend import env_choice

    choice = env_choice("JAXCNN_ONEDNN_BFLOAT16", "auto", BFLOAT16_CHOICES)
    if choice == "main" or np.dtype(dtype) != jnp.bfloat16:
        return False
    return _load_onednn3() is None


def makes_bfloat16(on_main: bool = False) -> bool:
    """Whether oneDNN runs bfloat16 convolutions on this CPU: the library that takes them
    (oneDNN 3 where :func:`onednn3_serves`, else the main one; ``on_main``: the main one)
    creates their primitives. oneDNN's bfloat16 kernels need AVX-512 (``avx512_core``) or
    AVX2-VNNI-2; an AVX2-only CPU such as AMD's Zen 3 has none, so jaxcnn's backend
    switch does not send it bfloat16 calls there (``jaxcnn.conv_backend``: XLA's, or
    narrow ones in float32). False where nothing is loaded.

    Examples:
        >>> makes_bfloat16() in (True, False)
        True
    """
    if _load() is not None:
        return False
    if not on_main and onednn3_serves("bfloat16"):
        return _built.get("onednn3_bfloat16", False)
    return _built.get("bfloat16", False)


def onednn_versions() -> dict[str, str]:
    """The oneDNN versions loaded: ``{"main": ..., "onednn3": ...}`` (those that are).

    Examples:
        >>> sorted(onednn_versions()) in ([], ["main"], ["main", "onednn3"])
        True
    """
    return dict(_versions)


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
