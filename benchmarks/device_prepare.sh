#!/usr/bin/env bash
# Here, before a GPU call: gather what benchmarks/device_check.sh needs that the GPU
# machine lacks (it has jax, flax, optax, chex, orbax, torch, pytest, hypothesis but not
# ml_collections or keras, and nothing can be downloaded there) into two ignored folders,
# which the device tool's `carry` then names:
#   .whl/     ml_collections (pure Python), and keras with the two of its needs the
#             machine lacks (namex, optree), so the Keras-JAX peer runs on the GPU (3 MB)
#   .device/  the CIFAR-10 JPEG tar (19 MB) from ../shared/data
# Usage: bash benchmarks/device_prepare.sh   (then run with carry: [".whl", ".device"])
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl \
  "ml_collections==1.1.0" "keras==3.15.1" "namex==0.1.0" "optree==0.20.0"
mkdir -p .device
cp ../shared/data/cifar10_jpg/cifar10_jpg.tar.gz .device/
du -sh .whl .device
