"""Peer runner: the same nets in PyTorch, eager or ``torch.compile``, on the CPU or a GPU.

``--variant eager`` (default) or ``--variant compile`` (``torch.compile(model)``, default
inductor backend). Adam(1e-3); bfloat16 through ``torch.autocast`` with float32
parameters (the mixed precision PyTorch recommends).

On the CPU: ``torch.set_num_threads(os.cpu_count())``, NCHW as a PyTorch user writes it.
On a CUDA GPU (``--device auto`` when torch sees one, or ``--device gpu``), what PyTorch's
performance tuning guide recommends for convnets: the model and the batches (all held on
the GPU, as the JAX runners hold theirs) in ``channels_last``, ``cudnn.benchmark`` on, and
TF32 matmuls (``set_float32_matmul_precision("high")``; cuDNN convolutions use TF32 by
default, and so does XLA for float32 on the GPU). The result's ``impl`` says which.

    python benchmarks/torch_peer.py --net mnist_cnn --variant compile
    python benchmarks/torch_peer.py --net cifar_cnn --device gpu --dtype bfloat16
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks import common  # noqa: E402


def _residual_block(cin: int, cout: int, stride: int) -> nn.Module:
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout, momentum=0.1)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout, momentum=0.1)
            self.short = (
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                if stride != 1 or cin != cout
                else nn.Identity()
            )

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            return torch.relu(self.short(x) + self.b2(self.c2(y)))

    return Block()


def build(net: str) -> nn.Module:
    """The benchmark net ``net`` in PyTorch (same layers as benchmarks/nets_flax.py).

    Args:
      net: ``mnist_cnn``, ``cifar_cnn``, ``resnet20`` or ``fast_cifar``.

    Returns:
      An ``nn.Module`` taking NCHW float32 input.
    """
    if net == "mnist_cnn":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.5), nn.Linear(1600, 10),
        )  # fmt: skip
    if net == "cifar_cnn":
        return nn.Sequential(
            nn.Conv2d(3, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3), nn.ReLU(),
            nn.Flatten(), nn.Linear(1024, 64), nn.ReLU(), nn.Linear(64, 10),
        )  # fmt: skip
    if net == "resnet20":
        layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
        cin = 16
        for stage, cout in enumerate((16, 32, 64)):
            for block in range(3):
                layers.append(_residual_block(cin, cout, 2 if stage and not block else 1))
                cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
        return nn.Sequential(*layers)
    if net == "fast_cifar":
        layers = [nn.Conv2d(3, 24, 2), nn.GELU()]
        cin = 24
        for cout in (64, 256, 256):
            layers += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.MaxPool2d(2),
                nn.BatchNorm2d(cout), nn.GELU(),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU(),
            ]  # fmt: skip
            cin = cout
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(256, 10, bias=False)]
        return nn.Sequential(*layers)
    raise ValueError(f"unknown net {net!r}")


def placement(requested: str) -> tuple[torch.device, dict]:
    """The torch device for ``--device`` and how it is set up (``impl``, ``device_name``).

    Raises:
      common.DeviceUnavailable: ``--device gpu`` and torch sees no CUDA device.
    """
    gpu_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if common.pick_device(requested, gpu_name, "torch") == "cpu":
        return torch.device("cpu"), {"device": "cpu", "device_name": "cpu", "impl": "NCHW"}
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
    impl = "cuda: channels_last, cudnn.benchmark, TF32 matmuls"
    return torch.device("cuda"), {"device": "gpu", "device_name": gpu_name, "impl": impl}


def main(argv=None) -> int:
    args = common.parse_args("torch", argv)
    variant = args.variant or "eager"
    if variant not in ("eager", "compile"):
        raise ValueError(f"--variant must be eager or compile, got {variant!r}")
    try:
        device, where = placement(args.device)
    except common.DeviceUnavailable as error:
        common.emit_unsupported("torch", args, str(error))
        return 0
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(args.seed)
    images, labels = common.random_data(args.net, args.steps * args.batch, args.seed)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    x_all = x_all.to(device).contiguous(memory_format=layout)
    y_all = torch.from_numpy(labels).long().to(device)
    batches = [
        (x_all[i : i + args.batch], y_all[i : i + args.batch])
        for i in range(0, len(x_all), args.batch)
    ]
    model = build(args.net).to(device, memory_format=layout)
    params = sum(p.numel() for p in model.parameters())
    model.train()
    forward = torch.compile(model) if variant == "compile" else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    use_bf16 = args.dtype == "bfloat16"

    def step(i):
        x, y = batches[i % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = loss_fn(forward(x), y)
        loss.backward()
        optimizer.step()
        return loss

    # On the CPU the step has finished when it returns; on a GPU, .item() waits for it.
    measured = common.time_loop(args, step, lambda loss: loss.item())
    args.variant = variant
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    common.emit(
        "torch",
        args,
        measured,
        params=params,
        versions={"torch": torch.__version__},
        threads=torch.get_num_threads(),
        device_peak_mb=peak,
        **where,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
