"""The fixed layer suite of the benchmarks and the regression gate (the layers the issues and
the seed article name), in one place."""
from __future__ import annotations

from dataclasses import dataclass

from ..spec import ConvSpec, PoolSpec, conv_spec, pool_spec


@dataclass(frozen=True)
class Layer:
    name: str
    spec: ConvSpec | PoolSpec
    ci: bool = False  # part of the small subset the CI gate times


def _conv(n, c, hw, k, ks, padding=0, groups=1, bias=False) -> ConvSpec:
    return conv_spec((n, c, hw, hw), (k, c // groups, ks, ks), padding=padding, groups=groups,
                     bias=bias)


LAYERS = [
    Layer("traffic-sign-1", _conv(32, 3, 32, 4, 5), ci=True),
    Layer("traffic-sign-2", _conv(32, 4, 14, 10, 5), ci=True),
    Layer("vgg-3x3", _conv(8, 64, 56, 64, 3, padding=1)),
    Layer("single-512-3x3", _conv(1, 1, 512, 1, 3), ci=True),
    Layer("single-512-11x11", _conv(1, 1, 512, 1, 11)),
    Layer("layer-64-9x9", _conv(4, 16, 64, 16, 9)),
    Layer("layer-64-15x15", _conv(4, 16, 64, 16, 15), ci=True),
    Layer("inception-1x1", _conv(8, 192, 28, 64, 1)),
    Layer("inception-5x5", _conv(8, 64, 28, 32, 5, padding=2)),
    Layer("mobilenet-dw-3x3", _conv(8, 256, 56, 256, 3, padding=1, groups=256)),
    Layer("pointwise-1x1-bias", _conv(8, 64, 28, 64, 1, bias=True)),
    Layer("maxpool-2x2", pool_spec("max", (32, 64, 56, 56), 2), ci=True),
    Layer("maxpool-3x3-s2", pool_spec("max", (32, 64, 56, 56), 3, stride=2)),
    Layer("avgpool-3x3-s2", pool_spec("avg", (32, 64, 56, 56), 3, stride=2)),
]


def layers(subset: str = "all") -> list[Layer]:
    """``all`` layers or the ``ci`` subset."""
    if subset not in ("all", "ci"):
        raise ValueError(f"subset must be 'all' or 'ci', got {subset!r}")
    return [layer for layer in LAYERS if subset == "all" or layer.ci]


NETWORK_SHARE = 0.5  # of the random layers, this share drawn from real networks' families
CHANNELS = [16, 24, 32, 48, 64, 96, 128, 144, 192, 256, 320, 384, 512, 576, 672, 960, 1024,
            1152, 2048]


def _network_layer(rng) -> ConvSpec:
    """A layer of a family real CNNs are made of (ResNet, MobileNet, EfficientNet, GoogLeNet,
    VGG at 224x224): pointwise 1x1 on small images with many channels (some strided), deep
    3x3, depthwise 3x3/5x5/7x7 (some strided), squeeze-excitation 1x1 on 1x1 with a bias,
    the strided first layers, and 5x5 inception branches; batch 1 or 8."""
    n = int(rng.choice([1, 1, 8]))
    size = int(rng.choice([7, 14, 28, 56]))
    pick = lambda values: int(rng.choice(values))  # noqa: E731
    family = rng.random()
    if family < 0.3:  # pointwise
        c, k = pick(CHANNELS), pick(CHANNELS)
        stride = 2 if rng.random() < 0.15 and size > 7 else 1
        return conv_spec((n, c, size, size), (k, c, 1, 1), stride=stride,
                         bias=bool(rng.random() < 0.2))
    if family < 0.5:  # deep 3x3
        c, k = pick(CHANNELS[:13]), pick(CHANNELS[:13])
        stride = 2 if rng.random() < 0.2 and size > 7 else 1
        return conv_spec((n, c, size, size), (k, c, 3, 3), stride=stride, padding=1,
                         bias=bool(rng.random() < 0.2))
    if family < 0.75:  # depthwise
        c, ks = pick(CHANNELS[2:]), pick([3, 3, 5, 7])
        size = pick([7, 14, 28, 56, 112])
        stride = 2 if rng.random() < 0.3 and size > 7 else 1
        return conv_spec((n, c, size, size), (c, 1, ks, ks), stride=stride, padding=ks // 2,
                         groups=c, bias=bool(rng.random() < 0.2))
    if family < 0.85:  # squeeze-excitation
        c, k = pick(CHANNELS[5:]), pick([4, 8, 16, 24, 48])
        if rng.random() < 0.5:
            c, k = k, c
        return conv_spec((n, c, 1, 1), (k, c, 1, 1), bias=True)
    if family < 0.93:  # first layers: 3 channels, strided
        ks = pick([3, 7])
        size = pick([112, 224])
        return conv_spec((1, 3, size, size), (pick([16, 24, 32, 64]), 3, ks, ks), stride=2,
                         padding=ks // 2)
    c, k = pick([16, 24, 32, 48, 64]), pick([32, 48, 64, 96, 128])  # inception 5x5
    size = pick([14, 28])
    return conv_spec((n, c, size, size), (k, c, 5, 5), padding=2)


def random_layers(count: int, seed: int, max_flops: float = 2e9) -> list[ConvSpec]:
    """A broad random set of valid conv layers, each under ``max_flops``: half from the
    families real networks are made of (:func:`_network_layer`), half spread over the whole
    space (batch, channels, sizes, kernels, padding, stride, depthwise and grouped layers,
    biases, single large channels); the calibration set (one seed) and the set ``auto`` is
    judged on (another seed)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out: list[ConvSpec] = []
    while len(out) < count:
        if rng.random() < NETWORK_SHARE:
            spec = _network_layer(rng)
            if spec.flops <= max_flops:
                out.append(spec)
            continue
        single = rng.random() < 0.25  # one large channel, the signal-processing case
        n = 1 if single else int(rng.choice([1, 2, 4, 8, 16]))
        c = 1 if single else int(rng.choice([1, 3, 4, 8, 16, 32, 64, 128]))
        k = 1 if single else int(rng.choice([1, 4, 8, 16, 32, 64]))
        size = int(rng.choice([128, 256, 512] if single else [7, 8, 14, 16, 28, 32, 56, 64]))
        ks = int(rng.choice([1, 3, 3, 5, 5, 7, 9, 11, 15, 21]))
        if ks > size:
            continue
        groups, kind = 1, rng.random()
        if not single and kind < 0.12:  # depthwise (MobileNet): 3x3 or 5x5, multiplier 1-2
            groups, k, ks = c, c * int(rng.choice([1, 1, 2])), int(rng.choice([3, 3, 5]))
        elif not single and kind < 0.2 and c % 4 == 0 and k % 4 == 0:  # grouped (ResNeXt)
            groups = int(rng.choice([2, 4]))
        stride = 2 if rng.random() < 0.15 else 1
        padding = ks // 2 if rng.random() < 0.5 else 0
        spec = conv_spec((n, c, size, size), (k, c // groups, ks, ks), stride=stride,
                         padding=padding, groups=groups, bias=bool(rng.random() < 0.3))
        if spec.flops <= max_flops:
            out.append(spec)
    return out
