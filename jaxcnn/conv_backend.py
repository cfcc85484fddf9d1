"""Which kernels run jaxcnn's convolutions: XLA's own, or oneDNN's through the FFI.

:func:`conv_general_dilated` has ``lax.conv_general_dilated``'s signature; the layers call
it instead of lax. It sends a call to oneDNN (:mod:`jaxcnn.onednn`) when the backend is
``"onednn"`` -- or ``"auto"`` and oneDNN measured faster on this CPU -- and the call is
one oneDNN runs: 2-D, NHWC input, HWIO kernel, float32 or bfloat16 (bfloat16 only where
oneDNN has kernels for it: AVX-512 or AVX2-VNNI-2, not AVX2 alone), no input dilation,
no groups, non-negative padding, tracing for a single CPU device (XLA cannot split a
foreign call over several devices). Anything else goes to lax.

Backends (``set_conv_backend``, the ``use_conv_backend`` context, or the environment
variable ``JAXCNN_CONV_BACKEND``; read when a function is traced, so set it before jit).
``JAXCNN_ONEDNN_ALGORITHM`` (also read at trace time) chooses oneDNN's algorithm for
float32 3x3 stride-1 convolutions: ``auto`` (default, since session 19) runs those with 64
or more channels in and out as Winograd F(4x4, 3x3), the rest direct: the fast CIFAR
net's step 1.17x and ResNet-20's 1.03x on the Intel Xeon, the teaching nets unchanged
(their conv2 has 32 channels in, where Winograd lost: x0.84 on the MNIST net's step
there); since session 49 only on enough output tiles for their channels (small maps at
small batches run direct: ``jaxcnn.onednn.ffi_conv.resolve_algorithm``, item 94).
``winograd`` takes every such convolution from 16 channels (on AMD Zen 4 1.2-1.5x on the
fast CIFAR net, 1.15x on the teaching nets, 0.97x on ResNet-20; on the Xeon 0.82x on
ResNet-20); ``direct`` none. Winograd's rounding errors are near 4e-6 of the largest
value (``docs/perf_notes.md``, items 34, 37 and 41).

* ``"auto"`` (default): oneDNN when its library builds here and the CPU is one where it
  measured faster: Intel CPUs (the Xeon of ``docs/perf_notes.md``, items 23-26) and any
  x86 CPU with AVX-512 (AMD's Zen 4, item 33: 1.2-1.3x in float32 on the larger nets,
  1.8x in bfloat16). On AVX2-only x86 CPUs (AMD's Zen 3, item 78) XLA, except
  convolutions with at most ``AVX2_ONEDNN_MAX_CHANNELS`` (32) channels in and out, which
  oneDNN runs faster there in float32 (ResNet-20's step 1.45x; bfloat16 ones computed in
  float32 and rounded once, 1.24x, item 80); and 3x3 stride-1 convolutions from 16
  channels as Winograd F(4x4, 3x3) (:mod:`jaxcnn.winograd`, items 85-87 and 89: the
  wide ones it would give XLA, and the narrow ones whose input map takes few more tiles
  than their output map by fused kernels; see ``WINOGRAD_MIN_CHANNELS`` and
  ``JAXCNN_WINOGRAD``: :func:`winograd_choice`). :func:`record_routes` lists which
  convolutions of a traced function the binding takes.
  Elsewhere (ARM: not measured) XLA.
* ``"xla"``: always ``lax.conv_general_dilated``.
* ``"onednn"``: oneDNN wherever the call allows; raises if the library is unavailable.

Examples:
    >>> with use_conv_backend("xla"):
    ...     resolved_backend()
    'xla'
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

import jax
from jax import lax

from jaxcnn import placement

BACKENDS = ("auto", "xla", "onednn")
_NHWC = ("NHWC", "HWIO", "NHWC")
_choice: str | None = None  # set_conv_backend's value; None: the environment decides


class SwitchError(ValueError):
    """A ``JAXCNN_*`` environment switch holds a value it does not take (the CLI prints it)."""


def _validated(name: str, where: str, valid=BACKENDS, error=ValueError) -> str:
    if name not in valid:
        raise error(f"{where}={name!r}; valid: {', '.join(valid)}")
    return name


def env_choice(variable: str, default: str, valid: tuple[str, ...]) -> str:
    """The environment variable's value, stripped and lower-cased, checked against ``valid``.

    Unset or empty gives ``default``; anything else not in ``valid`` raises
    :class:`SwitchError` (a ``ValueError``) naming the variable, its value and the valid ones.

    Examples:
        >>> env_choice("JAXCNN_UNSET_EXAMPLE", "direct", ("direct", "winograd"))
        'direct'
    """
    value = os.environ.get(variable, "").strip().lower() or default
    return _validated(value, variable, valid, error=SwitchError)


def conv_backend() -> str:
    """The chosen backend: ``set_conv_backend``'s, else ``JAXCNN_CONV_BACKEND``, else auto."""
    if _choice is not None:
        return _choice
    return env_choice("JAXCNN_CONV_BACKEND", "auto", BACKENDS)


def onednn_algorithm() -> str:
    """oneDNN's algorithm, from ``JAXCNN_ONEDNN_ALGORITHM``: ``"auto"`` (default: Winograd
    for float32 3x3 stride-1 convolutions with 64+ channels in and out on enough output
    tiles), ``"direct"`` or ``"winograd"`` (from 16 channels); see ``jaxcnn.onednn.conv2d``.

    Examples:
        >>> onednn_algorithm() in ("auto", "direct", "winograd")
        True
    """
    from jaxcnn.onednn.ffi_conv import ALGORITHMS

    return env_choice("JAXCNN_ONEDNN_ALGORITHM", "auto", ("auto", *ALGORITHMS))


def set_conv_backend(name: str | None) -> None:
    """Sets the backend for convolutions traced from now on (None: back to the environment)."""
    global _choice
    _choice = None if name is None else _validated(name, "conv_backend")


@contextlib.contextmanager
def use_conv_backend(name: str) -> Iterator[None]:
    """Sets the backend inside a ``with`` block (for tracing), then restores the old one."""
    global _choice
    previous, _choice = _choice, _validated(name, "conv_backend")
    try:
        yield
    finally:
        _choice = previous


# oneDNN's "avx512_core" ISA, which its AVX-512 convolution kernels need.
_AVX512_CORE = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"})


def cpu_vendor_and_flags(cpuinfo: str) -> tuple[str, frozenset[str]]:
    r"""The vendor and feature flags of the first processor in ``/proc/cpuinfo`` text.

    Examples:
        >>> vendor, flags = cpu_vendor_and_flags("vendor_id\t: AuthenticAMD\nflags\t\t: fma avx2\n")
        >>> vendor, sorted(flags)
        ('AuthenticAMD', ['avx2', 'fma'])
    """
    vendor, flags = "", frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        if vendor and flags:  # the first processor's; the others repeat them
            break
    return vendor, flags


def onednn_preferred(cpuinfo: str) -> bool:
    r"""Whether ``"auto"`` picks oneDNN on the CPU that ``/proc/cpuinfo`` text describes.

    Intel CPUs, and any CPU with AVX-512 (``avx512f``, ``bw``, ``vl`` and ``dq``): oneDNN
    measured faster on both kinds. Only the first processor's lines are read.

    Examples:
        >>> onednn_preferred("vendor_id\t: AuthenticAMD\nflags\t\t: fma avx2\n")
        False
        >>> onednn_preferred("vendor_id\t: AuthenticAMD\n"
        ...                  "flags\t\t: avx2 avx512f avx512dq avx512bw avx512vl\n")
        True
    """
    vendor, flags = cpu_vendor_and_flags(cpuinfo)
    return vendor == "GenuineIntel" or flags >= _AVX512_CORE


@functools.cache
def _cpuinfo_here() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return info.read()
    except OSError:
        return ""


@functools.cache
def _onednn_preferred_here() -> bool:
    return onednn_preferred(_cpuinfo_here())


@functools.cache
def amx_here() -> bool:
    """Whether this CPU has AMX for bfloat16 (``amx_bf16``), where oneDNN's bfloat16
    kernels differ most from its AVX-512 ones (``jaxcnn.onednn.ffi_conv`` picks some
    kernel-gradient methods by it)."""
    return "amx_bf16" in cpu_vendor_and_flags(_cpuinfo_here())[1]


def resolved_backend() -> str:
    """``"onednn"`` or ``"xla"``: what ``conv_backend()`` means for a CPU call here.

    Raises:
      OnednnUnavailable: the backend is ``"onednn"`` and the library cannot load.
    """
    from jaxcnn import onednn

    name = conv_backend()
    if name == "onednn":
        onednn.require()
        return name
    if name == "auto" and _onednn_preferred_here() and onednn.available():
        return "onednn"
    return "xla"


def _onednn_runs(lhs, rhs, padding, lhs_dilation, dimension_numbers, feature_group_count,
                 batch_group_count, preferred_element_type) -> bool:  # fmt: skip
    """Whether oneDNN's binding takes this call exactly as lax would compute it."""
    # One CPU device only: XLA cannot split a foreign call over several devices' shards.
    if lhs.ndim != 4 or rhs.ndim != 4 or not placement.one_cpu_device():
        return False
    if lhs.dtype != rhs.dtype or lhs.dtype not in (jax.numpy.float32, jax.numpy.bfloat16):
        return False
    if preferred_element_type is not None and preferred_element_type != lhs.dtype:
        return False
    if feature_group_count != 1 or batch_group_count != 1:
        return False
    if lhs_dilation is not None and tuple(lhs_dilation) != (1, 1):
        return False
    if not isinstance(padding, str) and min(min(p) for p in padding) < 0:
        return False
    wanted = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    given = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    return given == wanted


# On x86 CPUs with AVX2 but not oneDNN's avx512_core set (AMD's Zen 3), "auto" keeps XLA
# but sends float32 convolutions with at most this many channels in and out to oneDNN:
# there its AVX2 kernels beat XLA's on narrow layers (forward + both gradients alone,
# 16 -> 16 1.6x, 16 -> 32 at stride 2 3.4x) and not on wide ones (64 -> 256 level,
# 256 -> 256 0.75-1.0x). ResNet-20's float32 step 1.45x, the teaching and fast CIFAR
# nets level; oneDNN for every layer lost 3-10 % on those three (docs/perf_notes.md,
# item 78). oneDNN has no AVX2 kernels for bfloat16: such calls in bfloat16 are computed
# in float32 on oneDNN and rounded once (ResNet-20's bfloat16 step 1.24x, item 80).
AVX2_ONEDNN_MAX_CHANNELS = 32


def avx2_without_avx512(cpuinfo: str) -> bool:
    r"""Whether ``/proc/cpuinfo`` text describes an x86 CPU with AVX2 and FMA but without
    oneDNN's ``avx512_core`` set: where ``"auto"`` sends narrow convolutions to oneDNN
    (``AVX2_ONEDNN_MAX_CHANNELS``).

    Examples:
        >>> avx2_without_avx512("vendor_id\t: AuthenticAMD\nflags\t\t: fma avx2\n")
        True
        >>> avx2_without_avx512("flags\t\t: fma avx2 avx512f avx512dq avx512bw avx512vl\n")
        False
    """
    _, flags = cpu_vendor_and_flags(cpuinfo)
    return {"avx2", "fma"} <= flags and not flags >= _AVX512_CORE


@functools.cache
def avx2_without_avx512_here() -> bool:
    """:func:`avx2_without_avx512` for this machine's CPU."""
    return avx2_without_avx512(_cpuinfo_here())


def _narrow_on_onednn(lhs, rhs) -> bool:
    """Whether ``"auto"`` sends this call, which it would give XLA, to oneDNN instead."""
    from jaxcnn import onednn

    if conv_backend() != "auto" or lhs.dtype not in (jax.numpy.float32, jax.numpy.bfloat16):
        return False
    if max(rhs.shape[2:]) > AVX2_ONEDNN_MAX_CHANNELS or not avx2_without_avx512_here():
        return False
    return onednn.available()


# On the same AVX2-only CPUs "auto" also runs 3x3 stride-1 convolutions that it
# would give XLA (more than AVX2_ONEDNN_MAX_CHANNELS channels in or out) as Winograd
# F(4x4, 3x3) (jaxcnn.winograd): oneDNN has no Winograd without AVX-512, and XLA's direct
# kernels were already at the SGEMM ceiling. Forward + both gradients alone, batch 128:
# 7 x 7 256 -> 256 1.9x XLA's, 15 x 15 64 -> 256 2.0x, 15 x 15 64 -> 64 1.6x, 31 x 31
# 24 -> 64 1.5x, 8 x 8 64 -> 64 1.6x, 3 x 3 256 -> 256 1.2x; the fast CIFAR net's step
# 1.76x in float32 and 1.73x in bfloat16 (computed in float32 and rounded once, as item
# 80), ResNet-20's 1.14x and 1.07x (docs/perf_notes.md, item 85). Since item 86 any
# non-negative padding (VALID, the tiled pool's crops): the CIFAR net's step 1.25x in
# float32 and 1.22x in bfloat16. Since item 87 narrow SAME layers too (at most
# AVX2_ONEDNN_MAX_CHANNELS, which oneDNN ran before), by the fused kernels
# (winograd.fused_pays): forward + both gradients alone, 32 x 32 16 -> 16 1.2-1.6x
# oneDNN's AVX2 direct, 16 x 16 32 -> 32 1.8-2.5x; ResNet-20's step 1.36x. At least this
# many channels in and out (the narrowest measured).
WINOGRAD_MIN_CHANNELS = 16
# At most this many outputs computed per output wanted, where a map needs more than one
# 4 x 4 tile, for the unfused path: the tiles cover it to the next multiple of 4 on each
# side. The MNIST net's cropped 10 x 10 conv2 map (1.44) gained nothing unfused (x0.98-1.02
# on its step); the fast CIFAR net's 3 x 3 maps (one tile, 1.78) kept it (x1.03 on that
# step). Item 86.
WINOGRAD_MAX_WASTE = 1.4
# The same limit for layers the fused kernels take (winograd.fused_pays): the MNIST net's
# conv2 (10 x 10, 1.44) fused, in one batch slice, made its step 1.38x faster (item 89);
# more wasteful maps (a 5 x 5 one: 2.56) were not measured.
FUSED_MAX_WASTE = 1.5
WINOGRAD_CHOICES = ("auto", "on", "off")


def winograd_choice() -> str:
    """``JAXCNN_WINOGRAD``, validated (read at trace time): ``"auto"`` (default: the rule
    above, AVX2-only x86 CPUs under the ``"auto"`` backend), ``"on"`` (every float32 or
    bfloat16 3x3 stride-1 call the binding can take, any CPU, any backend; bfloat16
    computed in float32 and rounded once; raises where the binding cannot load, as
    ``JAXCNN_CONV_BACKEND=onednn`` does), ``"off"`` (never).

    Examples:
        >>> winograd_choice() in WINOGRAD_CHOICES
        True
    """
    return env_choice("JAXCNN_WINOGRAD", "auto", WINOGRAD_CHOICES)


def _winograd_shaped(rhs, window_strides, padding, rhs_dilation) -> bool:
    """Whether a call the binding takes (``_onednn_runs``: float32 or bfloat16, no negative
    padding) is a 3x3 stride-1 undilated convolution with ``"SAME"``, ``"VALID"`` or
    explicit padding."""
    if tuple(rhs.shape[:2]) != (3, 3) or tuple(window_strides) != (1, 1):
        return False
    if rhs_dilation is not None and tuple(rhs_dilation) != (1, 1):
        return False
    return not isinstance(padding, str) or padding in ("SAME", "VALID")


def _winograd_takes(lhs, rhs, window_strides, padding, rhs_dilation) -> bool:
    """Whether this call (one the binding takes: NHWC, one CPU device, no groups) runs
    as :func:`jaxcnn.winograd.conv3x3`."""
    from jaxcnn import onednn, winograd

    choice = winograd_choice()
    if choice == "off" or not _winograd_shaped(rhs, window_strides, padding, rhs_dilation):
        return False
    if choice == "on":
        return True
    channels = rhs.shape[2:]
    if conv_backend() != "auto" or min(channels) < WINOGRAD_MIN_CHANNELS:
        return False
    pads = winograd.explicit_padding(lhs.shape[1:3], padding)
    fused = winograd.fused_pays(channels, pads, lhs.shape[1:3])
    waste_limit = FUSED_MAX_WASTE if fused else WINOGRAD_MAX_WASTE
    if winograd.tile_waste(lhs.shape[1:3], pads) > waste_limit:
        return False
    if not avx2_without_avx512_here():
        return False
    if max(channels) <= AVX2_ONEDNN_MAX_CHANNELS and not fused:
        return False
    return onednn.available()


def _dtype_runs(dtype) -> bool:
    """Whether oneDNN has kernels for ``dtype`` on this CPU: float32 everywhere, bfloat16
    with AVX-512 or AVX2-VNNI-2 (``jaxcnn.onednn.build.makes_bfloat16``)."""
    from jaxcnn.onednn import build

    return dtype != jax.numpy.bfloat16 or build.makes_bfloat16()


def crop_negative_low_padding(lhs, rhs, padding, lhs_dilation, dimension_numbers):
    """``(lhs, padding)`` with every negative low pad done as a crop of ``lhs`` instead
    (its low pad then 0); unchanged where none is negative, or under ``lhs_dilation``.

    Why: XLA:CPU (jax 0.10.2) computes convolutions whose padding has a negative low
    entry and a positive high one, e.g. ``(-1, 1)``, wrongly (values from outside the
    input, up to 1e31 in our tests); cropping first gives the defined result, the same as
    ``lax.pad`` then a VALID convolution.

    Examples:
        >>> import jax.numpy as jnp
        >>> x, w = jnp.arange(5.0).reshape(1, 5, 1, 1), jnp.ones((2, 1, 1, 1))
        >>> x2, pads = crop_negative_low_padding(x, w, ((-1, 1), (0, 0)), None,
        ...                                      ("NHWC", "HWIO", "NHWC"))
        >>> x2[0, :, 0, 0].tolist(), pads
        ([1.0, 2.0, 3.0, 4.0], ((0, 1), (0, 0)))
    """
    if isinstance(padding, str) or all(int(lo) >= 0 for lo, _ in padding):
        return lhs, padding
    if lhs_dilation is not None and any(d != 1 for d in lhs_dilation):
        return lhs, padding
    dims = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    return _moved_to_lhs(lhs, dims, padding, [min(int(lo), 0) for lo, _ in padding])


def _moved_to_lhs(lhs, dims, padding, low):
    """``lhs`` padded by ``low[i]`` (negative: cropped) at the low edge of spatial axis
    ``i``, and ``padding`` less those amounts: the same convolution."""
    config = [(0, 0, 0)] * lhs.ndim
    for axis, amount in zip(dims.lhs_spec[2:], low, strict=True):
        config[axis] = (amount, 0, 0)
    kept = tuple((int(lo) - amount, int(hi)) for (lo, hi), amount in zip(padding, low, strict=True))
    return lax.pad(lhs, jax.numpy.zeros((), lhs.dtype), config), kept


def _explicit_padding_geometry(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers):
    """``(dimension numbers, kernel size per axis, kernel dilation per axis)`` of a call
    with explicit padding and no ``lhs_dilation``; None for any other (the padding
    corrections for XLA below apply to those calls only)."""
    if isinstance(padding, str):
        return None
    if lhs_dilation is not None and any(d != 1 for d in lhs_dilation):
        return None
    dims = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    kernel = [rhs.shape[axis] for axis in dims.rhs_spec[2:]]
    return dims, kernel, tuple(rhs_dilation or (1,) * len(kernel))


def pad_wide_low_padding(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers):
    """``(lhs, padding)`` with the part of each low pad beyond the dilated kernel's reach
    (``(k - 1) * dilation``) done as an explicit ``lax.pad`` of ``lhs``; unchanged where
    no low pad is that wide, or under ``lhs_dilation``.

    Why: the input gradient of a convolution with such a pad is a convolution with a
    negative low pad and a positive high one, which XLA:CPU (jax 0.10.2) computes wrongly
    (see :func:`crop_negative_low_padding`): a 3x3 kernel with padding ``((4, 0), (4, 0))``
    got input gradients off by 70 % in float32 and up to 1e17 or -inf in bfloat16. The
    explicit pad's gradient is a slice, exact; the convolution's own low pad then stays
    within reach.

    Examples:
        >>> import jax.numpy as jnp
        >>> x, w = jnp.ones((1, 5, 5, 1)), jnp.ones((3, 3, 1, 1))
        >>> x2, pads = pad_wide_low_padding(x, w, ((4, 0), (1, 1)), None, None,
        ...                                 ("NHWC", "HWIO", "NHWC"))
        >>> x2.shape, pads
        ((1, 7, 5, 1), ((2, 0), (1, 1)))
    """
    geometry = _explicit_padding_geometry(
        lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers
    )
    if geometry is None:
        return lhs, padding
    dims, kernel, dilation = geometry
    reach = [(k - 1) * d for k, d in zip(kernel, dilation, strict=True)]
    if all(int(lo) <= r for (lo, _), r in zip(padding, reach, strict=True)):
        return lhs, padding
    extra = [max(int(lo) - r, 0) for (lo, _), r in zip(padding, reach, strict=True)]
    return _moved_to_lhs(lhs, dims, padding, extra)


def pad_low_edge_of_halving_axes(
    lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers
):
    """``(lhs, padding)`` with the low pad of each axis whose kernel is 2 wide (dilation 1)
    and whose stride is 2, where that pad is 1, done as an explicit ``lax.pad`` of ``lhs``;
    unchanged elsewhere, or under ``lhs_dilation``.

    Why: the input gradient of such a convolution is a transposed one whose window on that
    axis is 2 wide over an input dilated by 2, without padding, which XLA:CPU's operand
    swap (``conv_operand_swapper.cc``, jax 0.10.2) copies into the swapped convolution
    unchanged; where another axis makes the swap look worthwhile (a kernel wider than the
    map it slides over, as a 2x4 kernel with stride 2 and padding 1 on a 10x3 input has)
    the new convolution is malformed and XLA aborts the process while compiling the
    gradient. With the pad done first, the transposed window is padded and the swap
    handles it.

    Examples:
        >>> import jax.numpy as jnp
        >>> x, w = jnp.ones((1, 10, 3, 1)), jnp.ones((2, 4, 1, 1))
        >>> x2, pads = pad_low_edge_of_halving_axes(x, w, (2, 2), ((1, 1), (1, 1)), None,
        ...                                         None, ("NHWC", "HWIO", "NHWC"))
        >>> x2.shape, pads
        ((1, 11, 3, 1), ((0, 1), (1, 1)))
    """
    # A string padding is left alone: "SAME" puts a 2-wide kernel's odd pad at the high end.
    geometry = _explicit_padding_geometry(
        lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers
    )
    if geometry is None:
        return lhs, padding
    dims, kernel, dilation = geometry
    low = [
        int(lo == 1 and k == 2 and d == 1 and s == 2)
        for (lo, _), k, d, s in zip(padding, kernel, dilation, window_strides, strict=True)
    ]
    if not any(low):
        return lhs, padding
    return _moved_to_lhs(lhs, dims, padding, low)


# The route lists of the active record_routes blocks (innermost last).
_route_recorders: list[list[str]] = []


@contextlib.contextmanager
def record_routes() -> Iterator[list[str]]:
    """Within the block, the route of every convolution traced through
    :func:`conv_general_dilated`, in order: ``"binding"`` (jaxcnn's Winograd kernels or
    oneDNN, each call using every core) or ``"xla"``. ``jaxcnn.train`` traces a model
    abstractly in one to decide how many batch slices its step computes.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> def conv(x):
        ...     return conv_general_dilated(x, jnp.ones((2, 2, 1, 1)), (1, 1), "VALID",
        ...                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
        >>> with record_routes() as routes:
        ...     _ = jax.eval_shape(conv, jax.ShapeDtypeStruct((1, 4, 4, 1), jnp.float32))
        >>> len(routes), routes[0] in ("binding", "xla")
        (1, True)
    """
    routes: list[str] = []
    _route_recorders.append(routes)
    try:
        yield routes
    finally:
        # By identity: list.remove compares by value, and two empty lists are equal.
        _route_recorders[:] = [other for other in _route_recorders if other is not routes]


def _recorded(route: str, y):
    for routes in _route_recorders:
        routes.append(route)
    return y


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """``lax.conv_general_dilated``, run by the backend :func:`resolved_backend` picks
    (under ``"auto"`` on an AVX2-only CPU, narrow calls by oneDNN, bfloat16 ones in
    float32: see ``AVX2_ONEDNN_MAX_CHANNELS``; 3x3 stride-1 ones from 16 channels as
    Winograd F(4x4, 3x3): see ``WINOGRAD_MIN_CHANNELS`` and :func:`winograd_choice`).

    Examples:
        >>> import jax.numpy as jnp
        >>> y = conv_general_dilated(jnp.ones((1, 4, 4, 1)), jnp.ones((2, 2, 1, 1)), (1, 1),
        ...                          "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        >>> y.shape, float(y.sum())
        ((1, 3, 3, 1), 36.0)
    """
    lhs, padding = crop_negative_low_padding(lhs, rhs, padding, lhs_dilation, dimension_numbers)
    args = (lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type)  # fmt: skip
    runs = _onednn_runs(lhs, rhs, padding, lhs_dilation, dimension_numbers,
                        feature_group_count, batch_group_count, preferred_element_type)  # fmt: skip
    backend = resolved_backend()
    by_winograd = runs and _winograd_takes(lhs, rhs, window_strides, padding, rhs_dilation)
    by_narrow_rule = runs and backend == "xla" and _narrow_on_onednn(lhs, rhs)
    if (by_winograd or by_narrow_rule) and lhs.dtype == jax.numpy.bfloat16:
        # Neither has bfloat16 kernels on AVX2 CPUs: float32, rounded once (item 80).
        wide = (lhs.astype(jax.numpy.float32), rhs.astype(jax.numpy.float32))
        y = conv_general_dilated(*wide, *args[2:-1], preferred_element_type=None)
        return y.astype(jax.numpy.bfloat16)
    if by_winograd:
        from jaxcnn import winograd

        return _recorded("binding", winograd.conv3x3(lhs, rhs, padding))
    if by_narrow_rule:
        backend = "onednn"
    if not runs or backend != "onednn" or not _dtype_runs(lhs.dtype):
        # Only XLA needs them: the binding's gradients take any padding.
        lhs, padding = pad_wide_low_padding(
            lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers
        )
        lhs, padding = pad_low_edge_of_halving_axes(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers
        )
        return _recorded(
            "xla", lax.conv_general_dilated(lhs, rhs, window_strides, padding, *args[4:])
        )
    from jaxcnn.onednn import conv2d

    dilation = (1, 1) if rhs_dilation is None else tuple(rhs_dilation)
    if isinstance(padding, str):
        effective = [(k - 1) * d + 1 for k, d in zip(rhs.shape[:2], dilation, strict=True)]
        padding = lax.padtype_to_pads(lhs.shape[1:3], effective, window_strides, padding)
    y = conv2d(lhs, rhs, window_strides, padding, dilation, onednn_algorithm())
    return _recorded("binding", y)
