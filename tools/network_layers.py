"""Write the shipped layer files (convbench/experiments/networks/*.txt) from torchvision's
model definitions: every convolution a network runs on a 1x3x224x224 input, read by forward
hooks on torch's meta device (no weights downloaded), identical ones merged with their counts.

    pip install -e ".[networks]"
    python tools/network_layers.py                 # the shipped networks
    python tools/network_layers.py resnet101 --input-size 299 --out my_layers/

Only regenerating needs torchvision; reading the files needs nothing beyond convbench.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from convbench import layerfile, networks

SHIPPED = ["resnet50", "vgg16", "mobilenet_v2", "googlenet", "efficientnet_b0", "resnet18",
           "mobilenet_v3_large", "densenet121", "squeezenet1_1", "shufflenet_v2_x1_0"]


def write(name: str, input_size: int, out: Path) -> Path:
    layers = networks.from_torchvision(name, input_size)
    total = sum(layer.count for layer in layers)
    header = (f"{networks.title(name)}: torchvision {networks.torchvision_version()} models.{name} "
              f"(weights=None), input 1x3x{input_size}x{input_size}\n"
              f"{total} convolutions, {len(layers)} distinct (*N: occurs N times), in order of "
              "first execution\nwritten by tools/network_layers.py; benchdnn descriptor "
              "syntax, see convbench/layerfile.py")
    return layerfile.write_layers(out / f"{name}.txt", layers, header)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=SHIPPED, help="torchvision model names")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--out", type=Path, default=networks.networks_dir())
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        print(write(name, args.input_size, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
