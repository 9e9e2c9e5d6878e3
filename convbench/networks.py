"""Networks as workloads: the shipped layer files of well-known CNNs, a user's own file, or a
torchvision model definition read through forward hooks.

The shipped files (``experiments/networks/<name>.txt``, installed with the package) list
every distinct convolution of a network at 224x224 with its repeat count; they were written by
``tools/network_layers.py`` from torchvision's definitions and need no torchvision to be read.
Reading a definition (:func:`from_torchvision`) needs torch and torchvision (the ``networks``
extra): no weights are downloaded, and the forward pass runs on torch's ``meta`` device, which
computes shapes only.
"""
from __future__ import annotations

import sys
import types
import warnings
from importlib import resources
from pathlib import Path

from .layerfile import LayerFileError, NetworkLayer, merged, read_layers
from .spec import conv_spec

# the networks the `networks` experiment runs, and the convolutions each has (torchvision)
CONV_COUNTS = {"resnet50": 53, "vgg16": 13, "mobilenet_v2": 52, "googlenet": 57,
               "efficientnet_b0": 81}
TITLES = {"resnet50": "ResNet-50", "vgg16": "VGG-16", "mobilenet_v2": "MobileNetV2",
          "googlenet": "GoogLeNet", "efficientnet_b0": "EfficientNet-B0",
          "resnet18": "ResNet-18", "mobilenet_v3_large": "MobileNetV3-Large",
          "densenet121": "DenseNet-121", "squeezenet1_1": "SqueezeNet 1.1",
          "shufflenet_v2_x1_0": "ShuffleNetV2 1.0", "regnet_y_400mf": "RegNetY-400MF"}


def networks_dir() -> Path:
    """Where the shipped layer files are (package data)."""
    return Path(str(resources.files("convbench.experiments") / "networks"))


def available() -> dict[str, Path]:
    """Shipped layer files by network name."""
    return {p.stem: p for p in sorted(networks_dir().glob("*.txt"))}


def resolve(name_or_path: str, relative_to: Path | None = None) -> Path:
    """The layer file of a shipped network's name, or a path (relative to ``relative_to``
    first, then to the working directory); ValueError naming what exists otherwise."""
    shipped = available()
    if name_or_path in shipped:
        return shipped[name_or_path]
    candidates = [Path(name_or_path)]
    if relative_to is not None and not Path(name_or_path).is_absolute():
        candidates.insert(0, relative_to / name_or_path)
    for path in candidates:
        if path.is_file():
            return path
    raise LayerFileError(f"no layer file {name_or_path!r}: not a file, and not a shipped "
                         f"network ({', '.join(shipped) or 'none'})")


def load(name_or_path: str, relative_to: Path | None = None) -> list[NetworkLayer]:
    """A network's distinct layers with their counts (identical problems merged)."""
    return merged(read_layers(resolve(name_or_path, relative_to)))


def title(name: str) -> str:
    """A network's name as people write it (ResNet-50 for resnet50)."""
    return TITLES.get(name, name)


# --------------------------------------------------------------------------- torchvision


def _import_torchvision():
    """torchvision's model definitions. A torchvision wheel built for another torch fails to
    register its compiled operators at import (``torchvision._meta_registrations``); the model
    definitions do not need them, so that module is stood in for by an empty one."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ValueError("reading a model definition needs torch and torchvision "
                         "(pip install -e \".[networks]\")") from None
    try:
        import torchvision
    except ImportError:
        raise ValueError("reading a model definition needs torchvision "
                         "(pip install -e \".[networks]\")") from None
    except RuntimeError:  # operator torchvision::nms does not exist: a mismatched build
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
        sys.modules["torchvision._meta_registrations"] = types.ModuleType(
            "torchvision._meta_registrations")
        import torchvision
    return torchvision


def torchvision_version() -> str:
    """The installed torchvision's version (needs torchvision)."""
    return _import_torchvision().__version__


def model_names() -> list[str]:
    """The classification models torchvision defines (needs torchvision)."""
    return sorted(_import_torchvision().models.list_models(module=None))


def from_torchvision(name: str, input_size: int = 224, batch: int = 1) -> list[NetworkLayer]:
    """Every convolution torchvision's ``name`` runs on a (batch, 3, S, S) input, in order of
    execution, named by its module path, identical ones merged with their counts. Read by
    forward hooks on the ``meta`` device: no weights, no arithmetic."""
    torchvision = _import_torchvision()
    import torch

    known = torchvision.models.list_models()
    if name not in known:
        raise ValueError(f"torchvision has no model {name!r}; models: {', '.join(known)}")
    if input_size < 1:
        raise ValueError(f"--input-size must be >= 1, got {input_size}")
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # GoogLeNet's note on its init
        model = torchvision.models.get_model(name, weights=None)
    model.eval()
    found: list[NetworkLayer] = []
    names = {module: path for path, module in model.named_modules()}

    def hook(module, inputs, output):
        found.append(_layer(names[module], module, tuple(inputs[0].shape)))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            model(torch.empty((batch, 3, input_size, input_size), device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return merged(found)


def _layer(path: str, conv, x_shape: tuple[int, ...]) -> NetworkLayer:
    """The problem of one torch Conv2d on an input of ``x_shape``."""
    if conv.padding_mode != "zeros":
        raise ValueError(f"{path}: padding_mode {conv.padding_mode!r} is not a convolution "
                         "convbench runs (zero padding only)")
    padding = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
    spec = conv_spec(x_shape, tuple(conv.weight.shape), stride=tuple(conv.stride),
                     padding=padding, dilation=tuple(conv.dilation), groups=conv.groups,
                     bias=conv.bias is not None)
    return NetworkLayer(path, spec, 1)
