"""Layer files (convbench/layerfile.py): benchdnn's descriptor syntax and meaning, the round
trip through format_layer, one-line errors naming the file and the line, and the shipped
networks against their layer counts (and torchvision's definitions, where it is installed)."""
import importlib.util

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convbench import networks
from convbench.layerfile import (LayerFileError, NetworkLayer, format_layer, merged,
                                 parse_descriptor, parse_line, read_layers, write_layers)
from convbench.spec import conv_spec


@pytest.mark.parametrize("text,shape,expect", [
    # benchdnn's ResNet-50 file: g, mb, every key spelled out, the repeat inside the name
    ('g1mb1ic3ih224iw224oc64oh112ow112kh7kw7sh2sw2ph3pw3n"resnet_50:conv1"',
     ((1, 3, 224, 224), (64, 3, 7, 7)), dict(stride=(2, 2), pad=(3, 3, 3, 3))),
    ('mb1ic64ih56oc256oh56kh1ph0n"resnet_50:res2a_branch1*4"',
     ((1, 64, 56, 56), (256, 64, 1, 1)), dict(count=4, name="resnet_50:res2a_branch1")),
    ('mb1ic64ih56oc64oh56kh3ph1n"res2a_branch2b"*3',
     ((1, 64, 56, 56), (64, 64, 3, 3)), dict(count=3, pad=(1, 1, 1, 1))),
    # ic and oc count all groups: a depthwise layer
    ("g32mb1ic32ih112oc32oh112kh3ph1", ((1, 32, 112, 112), (32, 1, 3, 3)), dict(groups=32)),
    # no mb: benchdnn's 2; no output and no padding: padding 0, output derived
    ("ic16ih64oc16kh9", ((2, 16, 64, 64), (16, 16, 9, 9)), dict(pad=(0, 0, 0, 0))),
    # an output and no padding: the padding that gives it
    ("mb1ic8ih28oc8oh28kh5", ((1, 8, 28, 28), (8, 8, 5, 5)), dict(pad=(2, 2, 2, 2))),
    # dh0 is no dilation, dh1 torch's dilation 2
    ("mb1ic4ih20oc4kh3dh1", ((1, 4, 20, 20), (4, 4, 3, 3)), dict(dilation=(2, 2))),
    # an output needing more padding at the bottom than ph: benchdnn's right padding
    ("mb1ic3ih8oc4oh9kh3ph1", ((1, 3, 8, 8), (4, 3, 3, 3)), dict(pad=(1, 2, 1, 2))),
    # rectangular: the w keys given apart; underscores separate nothing
    ("mb1_ic3_ih10iw20_oc5_kh3kw1_sh1sw2_ph1pw0", ((1, 3, 10, 20), (5, 3, 3, 1)),
     dict(stride=(1, 2), pad=(1, 1, 0, 0))),
    # only w keys: a 1-D problem
    ("mb1ic1iw100oc1kw5", ((1, 1, 1, 100), (1, 1, 1, 5)), {}),
    # the extension: bias, true convolution, float64
    ("mb1ic2ih8oc2kh3 +bias +flip +float64", ((1, 2, 8, 8), (2, 2, 3, 3)),
     dict(bias=True, flip=True, dtype="float64")),
])
def test_descriptors_mean_what_benchdnn_means(text, shape, expect):
    layer = parse_descriptor(text)
    assert (layer.spec.x_shape, layer.spec.w_shape) == shape
    for key, value in expect.items():
        got = getattr(layer, key) if key in ("count", "name") else getattr(layer.spec, key)
        assert got == value, key


def test_torch_symmetric_padding_survives_an_output_that_needs_less():
    """ResNet's 7x7 stride-2 conv: torch pads 3 on both sides though 2 at the bottom would
    give the same 112 rows; the file says ph3 oh112 and reads back as torch's layer."""
    layer = parse_descriptor("mb1ic3ih224oc64oh112kh7sh2ph3")
    assert layer.spec == conv_spec((1, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3)


@st.composite
def _specs(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c = groups * draw(st.integers(1, 3))
    k = groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pad = tuple(draw(st.integers(0, 4)) for _ in range(4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - pad[0] - pad[1]), 24))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - pad[2] - pad[3]), 24))
    return conv_spec((draw(st.integers(0, 9)), c, h, w), (k, c // groups, kh, kw),
                     stride=stride, padding=pad, dilation=(dh, dw), groups=groups,
                     flip=draw(st.booleans()), bias=draw(st.booleans()),
                     dtype=draw(st.sampled_from(["float32", "float64"])))


@settings(max_examples=300, deadline=None)
@given(_specs(), st.sampled_from(["", "conv1", "layer 2.0 # odd:name"]),
       st.integers(1, 12))
def test_every_spec_round_trips(spec, name, count):
    layer = NetworkLayer(name, spec, count)
    line = format_layer(layer)
    assert "\n" not in line
    assert parse_line(line) == layer


def test_a_file_round_trips_with_its_comments(tmp_path):
    layers = [NetworkLayer("a", conv_spec((1, 3, 32, 32), (8, 3, 3, 3), padding=1), 2),
              NetworkLayer("b", conv_spec((1, 8, 32, 32), (8, 1, 5, 5), padding=2, groups=8,
                                          bias=True))]
    path = write_layers(tmp_path / "net.txt", layers, "my net\ntwo layers")
    text = path.read_text()
    assert text.startswith("# my net\n# two layers\n")
    assert read_layers(path) == layers


@pytest.mark.parametrize("line,message", [
    ("xx3ic3ih8oc4kh3", "unknown key"),
    ("ic3ih8oc4kh", "kh has no value"),
    ("ic3ih8oc4kh3ic4", "ic is given twice"),
    ("ic0ih8oc4kh3", "ic (input channels, of all groups) must be >= 1"),
    ("ih8oc4kh3", "ic (input channels, of all groups) is missing"),
    ("ic3ih8kh3", "oc (output channels, of all groups) is missing"),
    ("ic3oc4kh3", "ih (input height) is missing"),
    ("ic3ih8oc4", "kh (kernel height) is missing"),
    ("g2ic3ih8oc4kh3", "g2 must divide ic3 and oc4"),
    ("g0ic3ih8oc3kh3", "g (groups) must be >= 1"),
    ("ic3ih2oc4kh3", "output would be smaller than 1x1"),
    ("ic3ih8oc4oh2kh3ph1", "oh2 does not follow"),
    ("ic3ih8oc4kh3sh0", "sh (stride) must be >= 1"),
    ("ic3ih8oc4kh3*0", "repeat count *N must be a whole number >= 1"),
    ("ic3ih8oc4kh3*x", "repeat count *N must be a whole number >= 1"),
    ('ic3ih8oc4kh3n"abc', "no closing quote"),
    ('ic3ih8oc4kh3n""', "names nothing"),
    ('ic3ih8oc4kh3n"a"xyz', "unexpected 'xyz' after the name"),
    ("ic3ih8oc4kh3 +foo", "unknown option '+foo'; options: +bias"),
    ("ic3ih8oc4kh3 +bias +bias", "option +bias is given twice"),
    ("ic3ih8oc4kh3 +pad=1,2", "+pad needs four whole numbers"),
    ("ic3ih8oc4oh8kh3 +pad=0,0,0,0", "oh8 does not follow from +pad"),
    ("ic3id8ih8oc4kh3", "3-D convolutions are not supported"),
    ("ic-3ih8oc4kh3", "ic must be >= 0"),
    ('n"x"', "no keys before the name"),
])
def test_bad_lines_are_one_line_errors_naming_file_and_line(tmp_path, line, message):
    path = tmp_path / "net.txt"
    path.write_text(f"# a comment\nmb1ic3ih8oc4kh3n\"fine\"\n\n{line}  # why\n")
    with pytest.raises(LayerFileError) as err:
        read_layers(path)
    text = str(err.value)
    assert text.startswith(f"{path}:4: ") and message in text and "\n" not in text


def test_an_empty_or_missing_file_is_an_error(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n\n")
    with pytest.raises(LayerFileError, match="no layers"):
        read_layers(empty)
    with pytest.raises(LayerFileError, match="cannot read"):
        read_layers(tmp_path / "absent.txt")


def test_merged_adds_counts_of_identical_problems():
    spec = conv_spec((1, 8, 14, 14), (8, 8, 3, 3), padding=1)
    other = conv_spec((1, 8, 14, 14), (16, 8, 1, 1))
    out = merged([NetworkLayer("a", spec, 2), NetworkLayer("b", other),
                  NetworkLayer("c", spec, 3)])
    assert out == [NetworkLayer("a", spec, 5), NetworkLayer("b", other, 1)]


@pytest.mark.parametrize("name,count", sorted(networks.CONV_COUNTS.items()))
def test_shipped_networks_have_their_convolution_counts(name, count):
    layers = networks.load(name)
    assert sum(layer.count for layer in layers) == count
    assert all(layer.spec.n == 1 and layer.name for layer in layers)
    assert len({layer.spec for layer in layers}) == len(layers)  # distinct, counts merged


def test_resnet50_is_v1_5_stride_on_the_3x3():
    strided = [layer for layer in networks.load("resnet50") if layer.spec.stride == (2, 2)]
    kernels = sorted((layer.spec.kh, layer.name) for layer in strided)
    assert [k for k, _ in kernels] == [1, 1, 1, 3, 3, 3, 7]  # downsample 1x1s, 3x3s, stem
    assert all(name.endswith(".conv2") for k, name in kernels if k == 3)


def test_efficientnet_has_its_squeeze_excitation_layers_with_bias():
    tiny = [layer for layer in networks.load("efficientnet_b0") if layer.spec.h == 1]
    assert tiny and all(layer.spec.bias and layer.spec.kh == 1 for layer in tiny)


needs_torchvision = pytest.mark.skipif(importlib.util.find_spec("torchvision") is None,
                                       reason="torchvision not installed (the networks extra)")


@needs_torchvision
@pytest.mark.parametrize("name", sorted(networks.available()))
def test_shipped_files_match_torchvision_definitions(name):
    assert networks.load(name) == networks.from_torchvision(name, 224)


@needs_torchvision
def test_a_model_at_another_input_size():
    layers = networks.from_torchvision("resnet18", 112)
    assert layers[0].spec.x_shape == (1, 3, 112, 112)
    assert sum(layer.count for layer in layers) == 20
