"""FLOPs per training image, counted from the forward pass's jaxpr, and the machine's peak.

How the estimate is made (the same for every runner, so achieved FLOP/s compare fairly):

* forward multiply-accumulates (MACs) are summed over every ``conv_general_dilated`` and
  ``dot_general`` in the traced forward pass of the reference Flax net (batch 1):
  a convolution costs ``output elements x kernel window x input channels / groups``, a
  matmul ``output elements x contracted size``; pooling, activations, normalisation and
  the optimiser are left out (they are a few percent);
* one training image = forward + gradient w.r.t. activations + gradient w.r.t. weights
  = 3 x forward, each MAC = 2 FLOPs, less the first layer's activation gradient, which no
  framework computes (the input needs no gradient):
  ``train_flops = 2 * (3 * forward_macs - first_layer_macs)``.

Peak: ``cores x FP32 FLOP/cycle x clock``; FLOP/cycle is 64 for a core with two 512-bit FMA
pipes (AVX-512: 16 lanes x 2 FLOPs x 2 pipes), 32 for AVX2-only (two 256-bit FMA pipes)
and for AMD's Zen 4 (family 25), which runs AVX-512 on its two 256-bit pipes;
the clock is the current ``cpu MHz`` of /proc/cpuinfo (KVM guests report the nominal one).
The bfloat16 peak is twice the FP32 one with AVX-512 BF16, and 1024 FLOP/cycle per core
with AMX (Intel Xeon since Sapphire Rapids: one ``tdpbf16ps`` tile product, 16 x 16 x 32
multiply-adds, every 16 cycles); a framework reaches it only through kernels that use the
tiles (on XLA:CPU in jaxlib 0.10.2: a bfloat16 matmul with a float32 result).

GPU peaks are not measured but looked up by the device's name (``gpu_peak``): the
vendor's datasheet figures for dense tensor-core math, TF32 for float32 (what cuDNN and
XLA use for float32 convolutions on these GPUs by default) and bfloat16.

    python benchmarks/flops.py       # prints {"mnist_cnn": {...}, ...} as JSON
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _conv_macs(eqn) -> int:
    out = eqn.outvars[0].aval.shape
    rhs = eqn.invars[1].aval.shape
    dn = eqn.params["dimension_numbers"]
    # rhs_spec lists (out feature dim, in feature dim, *spatial dims) of the kernel.
    rhs_spec = dn.rhs_spec
    window = math.prod(rhs[d] for d in rhs_spec[2:])
    in_per_group = rhs[rhs_spec[1]]
    return math.prod(out) * window * in_per_group


def _dot_macs(eqn) -> int:
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)


def _walk(jaxpr, found: list[int]) -> None:
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "conv_general_dilated":
            found.append(_conv_macs(eqn))
        elif eqn.primitive.name == "dot_general":
            found.append(_dot_macs(eqn))
        for param in eqn.params.values():  # pjit / custom_vjp bodies
            inner = getattr(param, "jaxpr", None)
            if inner is not None:
                _walk(getattr(inner, "jaxpr", inner), found)


def training_flops_per_image(net: str) -> dict:
    """Counts forward MACs of the reference Flax ``net`` and derives training FLOPs/image.

    Args:
      net: a benchmark net name (``mnist_cnn``, ``cifar_cnn``, ``resnet20``, ``fast_cifar``).

    Returns:
      ``{"forward_macs", "first_layer_macs", "train_flops"}`` per image.

    Examples:
      >>> training_flops_per_image("mnist_cnn")["train_flops"]
      14256384
    """
    import jax
    import jax.numpy as jnp

    from benchmarks import common, nets_flax

    shape, _ = common.NETS[net]
    model = nets_flax.build(net)
    x = jnp.zeros((1, *shape), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, x)
    macs: list[int] = []
    _walk(jaxpr.jaxpr, macs)
    forward = sum(macs)
    return {
        "forward_macs": forward,
        "first_layer_macs": macs[0],
        "train_flops": 2 * (3 * forward - macs[0]),
    }


# The extensions that set the FLOP/cycle, as /proc/cpuinfo spells them.
VECTOR_EXTENSIONS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2", "fma")
AMX_BF16_FLOPS_PER_CYCLE = 1024  # per core: 16 x 16 x 32 multiply-adds x 2 FLOPs / 16 cycles


def machine_peak(cpuinfo: str | None = None) -> dict:
    """The CPU's nominal FP32 peak from /proc/cpuinfo (model, cores, clock, FLOP/cycle).

    Args:
      cpuinfo: the text of ``/proc/cpuinfo``; read from the machine when None.

    Returns:
      ``{"cpu_model", "cpu_id", "isa", "cores", "mhz", "flops_per_cycle", "peak_gflops",
      "bf16_peak_gflops", "how"}``. ``cpu_id`` is the family and model numbers (two CPUs
      sold under one name, e.g. "AMD EPYC", differ there), ``isa`` the vector extensions
      that set the FLOP/cycle. With AVX-512 BF16 (``vdpbf16ps``: two bfloat16 products
      per float32 lane) the bfloat16 peak is twice the FP32 peak; with AMX (``amx_bf16``)
      it is 1024 FLOP/cycle per core; without either, bfloat16 math runs at the FP32 rate
      at best.

    Examples:
      >>> info = "model name : AMD EPYC\\ncpu family : 25\\nmodel : 1\\ncpu MHz : 2445.4\\n"
      >>> machine = machine_peak(info + "flags : fpu avx2 fma\\n")
      >>> machine["isa"], machine["flops_per_cycle"], machine["cpu_id"]
      ('avx2 fma', 32, 'family 25, model 1')
    """
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""

    def field(name: str) -> str | None:
        found = re.search(rf"^{name}\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
        return found.group(1).strip() if found else None

    flags = set((field("flags") or "").split())
    family, model = field("cpu family"), field("model")
    # Zen 4 (AMD family 25) splits each 512-bit op over its two 256-bit FMA pipes.
    zen4 = family == "25" and "AMD" in (field("vendor_id") or "") + (field("model name") or "")
    per_cycle = 64 if "avx512f" in flags and not zen4 else 32 if "fma" in flags else 8
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    clock = float(field(r"cpu MHz") or "nan")
    if "amx_bf16" in flags:
        bf16_per_cycle = AMX_BF16_FLOPS_PER_CYCLE
        bf16_how = f"; bfloat16 {bf16_per_cycle} FLOP/cycle (amx_bf16)"
    elif "avx512_bf16" in flags:
        bf16_per_cycle, bf16_how = 2 * per_cycle, "; bfloat16 x2 (avx512_bf16)"
    else:
        bf16_per_cycle, bf16_how = per_cycle, ""
    return {
        "cpu_model": field("model name") or "unknown",
        "cpu_id": f"family {family}, model {model}" if family and model else "unknown",
        "isa": " ".join(f for f in VECTOR_EXTENSIONS if f in flags) or "no AVX2/FMA",
        "cores": cores,
        "mhz": clock,
        "flops_per_cycle": per_cycle,
        "peak_gflops": cores * per_cycle * clock / 1000,
        "bf16_peak_gflops": cores * bf16_per_cycle * clock / 1000,
        "how": f"{cores} cores x {per_cycle} FP32 FLOP/cycle x {clock:.0f} MHz" + bf16_how,
    }


# Datasheet dense tensor-core peaks in TFLOP/s, (TF32, bfloat16); the first name that is a
# substring of the device's name wins, so the specific variants come before the plain one.
GPU_PEAKS_TFLOPS: tuple[tuple[str, float, float], ...] = (
    ("H100 PCIe", 378.0, 756.0),
    ("H100 NVL", 417.5, 835.5),
    ("H200 NVL", 417.5, 835.5),
    ("H100", 494.7, 989.4),  # SXM; the H200 SXM has the same math, more memory
    ("H200", 494.7, 989.4),
    ("A100", 156.0, 312.0),
    ("L4", 60.0, 121.0),
)


def gpu_peak(device_name: str | None) -> dict | None:
    """The datasheet dense peak of a known GPU, or None for an unknown one (no "% peak").

    Args:
      device_name: as the framework names it, e.g. ``"NVIDIA H200"``.

    Returns:
      ``{"name", "peak_gflops", "bf16_peak_gflops", "how"}``; float32 is the TF32 peak.

    Examples:
      >>> gpu_peak("NVIDIA H100 80GB HBM3")["bf16_peak_gflops"]
      989400.0
      >>> gpu_peak("NVIDIA H100 PCIe")["peak_gflops"], gpu_peak("cpu")
      (378000.0, None)
    """
    for key, tf32, bf16 in GPU_PEAKS_TFLOPS:
        if device_name and key in device_name:
            return {
                "name": device_name,
                "peak_gflops": tf32 * 1000,
                "bf16_peak_gflops": bf16 * 1000,
                "how": f"{key} datasheet, dense tensor cores: TF32 {tf32:g}, "
                f"bfloat16 {bf16:g} TFLOP/s",
            }
    return None


def main() -> int:
    from benchmarks import common

    print(json.dumps({net: training_flops_per_image(net) for net in common.NETS}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
