"""Layer files: a network's convolutions, one per line, in oneDNN benchdnn's descriptor syntax.

A line is ``DESCRIPTOR[*N] [+OPTION ...] [# comment]``, for example
``mb1ic64ih56oc64oh56kh3ph1n"res2a_branch2b"*3``. The descriptor is benchdnn's and means what
it means there:

* ``g`` groups, ``mb`` batch, ``ic``/``oc`` input and output channels of *all* groups,
  ``ih iw`` input size, ``oh ow`` output size, ``kh kw`` kernel, ``sh sw`` stride, ``ph pw``
  padding at the top and left, ``dh dw`` dilation as benchdnn counts it (``dh0``: none, the
  taps adjacent; ``dh1``: one pixel skipped, torch's dilation 2); ``_`` separates nothing;
  ``n"NAME"`` (or ``nNAME``) names the layer and ends the descriptor.
* A missing ``iw kw sw pw dw ow`` is its ``h`` twin (a square problem); a missing ``mb`` is
  benchdnn's 2, ``g`` 1, strides 1, dilation 0. Only ``w`` values given (no ``ih``) is a 1-D
  problem: height and kernel height 1.
* Without ``oh`` the output follows from the rest (padding 0 where also missing); with
  ``oh`` and no ``ph`` the padding is the one that gives ``oh``; with both, the bottom padding
  is ``ph`` where that gives ``oh`` (torch's symmetric padding) and otherwise the one that
  does (benchdnn's right padding).

``*N`` after the descriptor (or, as in benchdnn's own shape files, at the end of the quoted
name) says that the layer occurs N times in the network. What benchdnn says elsewhere (on its
command line) or cannot say is written as options after the descriptor: ``+bias`` (a bias is
added), ``+flip`` (true convolution), ``+float64`` (the dtype; float32 otherwise) and
``+pad=T,B,L,R`` (padding that the rules above would not derive, e.g. an unused bottom row).
``#`` starts a comment, outside a quoted name.

:func:`format_layer` writes a layer back in this form, and reading it gives the same
:class:`~convbench.spec.ConvSpec` (the tests check the round trip).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from .spec import ConvSpec, conv_spec

KEYS = ("g", "mb", "ic", "ih", "iw", "oc", "oh", "ow", "kh", "kw", "sh", "sw", "ph", "pw",
        "dh", "dw")
THREE_D = ("id", "od", "kd", "sd", "pd", "dd")  # benchdnn's depth keys: 3-D problems
OPTIONS = ("+bias", "+flip", "+float32", "+float64", "+pad=T,B,L,R")
DEFAULT_BATCH = 2  # benchdnn's default mb
_KEY = re.compile(r"(" + "|".join(sorted(KEYS + THREE_D, key=len, reverse=True)) + r")(-?\d*)")
_REPEAT = re.compile(r"\*(\S*)$")
_INNER_REPEAT = re.compile(r"\*(\d+)$")


class LayerFileError(ValueError):
    """A line that is not a valid layer; the message names the file, the line and what is
    allowed."""


@dataclass(frozen=True)
class NetworkLayer:
    """One convolution of a network: its name, its problem and how often the network runs it."""

    name: str
    spec: ConvSpec
    count: int = 1

    def at_batch(self, n: int) -> "NetworkLayer":
        """The same layer with a batch of ``n`` images."""
        if n < 0:
            raise ValueError(f"batch must be >= 0, got {n}")
        return dataclasses.replace(self, spec=dataclasses.replace(self.spec, n=int(n)))


# --------------------------------------------------------------------------- reading


def _split_comment(text: str) -> str:
    """The line without its comment (a '#' inside a quoted name is part of the name)."""
    quoted = False
    for at, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return text[:at]
    return text


def _tokens(text: str) -> list[str]:
    """Whitespace-separated tokens; a quoted name may hold spaces."""
    tokens, current, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch.isspace() and not quoted:
            if current:
                tokens.append(current)
            current = ""
        else:
            current += ch
    if quoted:
        raise ValueError('the name n"..." has no closing quote')
    return tokens + ([current] if current else [])


def _split_name(token: str) -> tuple[str, str | None, str]:
    """(the keys part, the name or None, what follows the name) of a descriptor token. No key
    holds an 'n', so the first 'n' starts the name."""
    at = token.find("n")
    if at < 0:
        return token, None, ""
    keys, rest = token[:at], token[at + 1:]
    if rest.startswith('"'):
        end = rest.find('"', 1)
        return keys, rest[1:end], rest[end + 1:]
    match = re.match(r"[^*]*", rest)
    return keys, match.group(0), rest[match.end():]


def _keys(text: str) -> dict[str, int]:
    values: dict[str, int] = {}
    at = 0
    while at < len(text):
        if text[at] == "_":
            at += 1
            continue
        match = _KEY.match(text, at)
        if not match:
            raise ValueError(f"unknown key at {text[at:at + 12]!r}; keys: {' '.join(KEYS)} "
                             '(and n"NAME")')
        key, number = match.groups()
        if key in THREE_D:
            raise ValueError(f"{key}: 3-D convolutions are not supported (2-D keys: "
                             f"{' '.join(KEYS)})")
        if not number or number == "-":
            raise ValueError(f"{key} has no value (write e.g. {key}3)")
        if key in values:
            raise ValueError(f"{key} is given twice")
        value = int(number)
        if value < 0:
            raise ValueError(f"{key} must be >= 0, got {value}")
        values[key] = value
        at = match.end()
    return values


def _count(text: str) -> int:
    if not re.fullmatch(r"\d+", text) or int(text) < 1:
        raise ValueError(f"the repeat count *N must be a whole number >= 1, got *{text}")
    return int(text)


def _options(tokens: list[str]) -> dict:
    found: dict = {}
    for token in tokens:
        key = token.split("=")[0]
        if key in found or (key in ("+float32", "+float64") and "dtype" in found):
            raise ValueError(f"option {key} is given twice")
        if token == "+bias":
            found["+bias"] = True
        elif token == "+flip":
            found["+flip"] = True
        elif token in ("+float32", "+float64"):
            found["dtype"] = token[1:]
        elif key == "+pad":
            parts = token[5:].split(",")
            if len(parts) != 4 or not all(re.fullmatch(r"\d+", p) for p in parts):
                raise ValueError(f"{token}: +pad needs four whole numbers, +pad=T,B,L,R")
            found["+pad"] = tuple(int(p) for p in parts)
        else:
            raise ValueError(f"unknown option {token!r}; options: {', '.join(OPTIONS)}")
    return found


def _positive(values: dict, key: str, what: str) -> int:
    value = values.get(key)
    if value is None:
        raise ValueError(f"{key} ({what}) is missing")
    if value < 1:
        raise ValueError(f"{key} ({what}) must be >= 1, got {value}")
    return value


def _axis(values: dict, i: str, o: str, k: str, s: str, p: str, d: str, name: str,
          strict: bool = True):
    """(input, kernel, stride, dilation, pad before, pad after) of one axis; not ``strict``
    (the padding given by +pad) an output that the padding keys cannot give is let pass."""
    size = _positive(values, i, f"input {name}")
    kernel = _positive(values, k, f"kernel {name}")
    stride = values.get(s, 1)
    if stride < 1:
        raise ValueError(f"{s} (stride) must be >= 1, got {stride}")
    dilation = values.get(d, 0) + 1  # benchdnn's dh0 is torch's dilation 1
    reach = (kernel - 1) * dilation + 1
    out = values.get(o)
    if out is not None and out < 1:
        raise ValueError(f"{o} (output {name}) must be >= 1, got {out}")
    before = values.get(p)
    if out is None:
        before = before or 0
        after = before
    else:
        if before is None:  # benchdnn: the padding that gives the output
            before = max(0, ((out - 1) * stride - size + reach) // 2)
        symmetric = (size + 2 * before - reach) // stride + 1
        after = before if symmetric == out else (out - 1) * stride - size + reach - before
        if strict and (after < 0 or (size + before + after - reach) // stride + 1 != out):
            possible = (size + 2 * before - reach) // stride + 1
            raise ValueError(f"{o}{out} does not follow from {i}{size} {k}{kernel} {s}{stride} "
                             f"{p}{before} {d}{dilation - 1} (that gives {o}{possible}); "
                             f"leave {o} out to derive it")
    return size, kernel, stride, dilation, before, after


def parse_descriptor(text: str) -> NetworkLayer:
    """The layer of one line's text (descriptor, repeat count, options); ValueError saying
    what is wrong and what is allowed."""
    tokens = _tokens(text)
    if not tokens:
        raise ValueError("empty descriptor")
    keys_part, name, after = _split_name(tokens[0])
    count = 1
    repeat = _REPEAT.search(after) if after else None
    if after:
        if not repeat or repeat.start() != 0:
            raise ValueError(f"unexpected {after!r} after the name; a name ends the descriptor "
                             "(then *N, then +options)")
        count = _count(repeat.group(1))
    elif name is None and "*" in keys_part:
        keys_part, _, tail = keys_part.partition("*")
        count = _count(tail)
    elif name is not None and _INNER_REPEAT.search(name) and tokens[0].endswith('"'):
        inner = _INNER_REPEAT.search(name)  # benchdnn's own files: n"net:layer*3"
        name, count = name[:inner.start()], _count(inner.group(1))
    values = _keys(keys_part)
    if not values:
        raise ValueError("no keys before the name; a layer needs at least ic, oc, ih and kh")
    options = _options(tokens[1:])
    groups = values.get("g", 1)
    if groups < 1:
        raise ValueError(f"g (groups) must be >= 1, got {groups}")
    batch = values.get("mb", DEFAULT_BATCH)
    ic = _positive(values, "ic", "input channels, of all groups")
    oc = _positive(values, "oc", "output channels, of all groups")
    if ic % groups or oc % groups:
        raise ValueError(f"g{groups} must divide ic{ic} and oc{oc} (they count all groups)")
    has_h = any(k in values for k in ("ih", "oh", "kh", "dh")) or values.get("sh", 1) != 1 or (
        values.get("ph", 0) > 0)
    if not has_h and not any(k in values for k in ("iw", "kw")):
        raise ValueError("ih (input height) and kh (kernel height) are missing")
    for h_key, w_key in (("ih", "iw"), ("oh", "ow"), ("kh", "kw"), ("sh", "sw"), ("ph", "pw"),
                         ("dh", "dw")):
        if has_h and w_key not in values and h_key in values:
            values[w_key] = values[h_key]  # square, as in benchdnn
        if not has_h:  # a 1-D problem along the width
            values[h_key] = {"ih": 1, "oh": 1, "kh": 1}.get(h_key, 0)
    if not has_h:
        values["sh"] = 1
    strict = "+pad" not in options
    h, kh, sh, dh, pt, pb = _axis(values, "ih", "oh", "kh", "sh", "ph", "dh", "height", strict)
    w, kw, sw, dw, pl, pr = _axis(values, "iw", "ow", "kw", "sw", "pw", "dw", "width", strict)
    pad = options.get("+pad", (pt, pb, pl, pr))
    spec = conv_spec((batch, ic, h, w), (oc, ic // groups, kh, kw), stride=(sh, sw),
                     padding=pad, dilation=(dh, dw), groups=groups,
                     flip=options.get("+flip", False), bias=options.get("+bias", False),
                     dtype=options.get("dtype", "float32"))
    for key, got in (("oh", spec.out_size[0]), ("ow", spec.out_size[1])):
        if values.get(key, got) != got:  # only possible with +pad
            raise ValueError(f"{key}{values[key]} does not follow from +pad={','.join(map(str, pad))}"
                             f" (that gives {key}{got})")
    if name is not None and not name:
        raise ValueError('n"" names nothing; give a name or leave n out')
    return NetworkLayer(name or "", spec, count)


def parse_line(text: str) -> NetworkLayer | None:
    """The layer on one line of a layer file; None for a blank or comment line."""
    body = _split_comment(text).strip()
    return parse_descriptor(body) if body else None


def read_layers(path: str | Path) -> list[NetworkLayer]:
    """Every layer of a layer file, in order; LayerFileError naming the file and the line."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LayerFileError(f"{path}: cannot read the layer file ({exc})") from None
    layers = []
    for number, line in enumerate(lines, start=1):
        try:
            layer = parse_line(line)
        except ValueError as exc:
            raise LayerFileError(f"{path}:{number}: {exc} (in {line.strip()[:60]!r})") from None
        if layer is not None:
            layers.append(layer)
    if not layers:
        raise LayerFileError(f"{path}: no layers (one descriptor per line, e.g. "
                             'mb1ic64ih56oc64oh56kh3ph1n"conv"*2)')
    return layers


def merged(layers: list[NetworkLayer]) -> list[NetworkLayer]:
    """Layers with the same problem as one, in order of first appearance, their counts added
    (the first one's name kept)."""
    by_spec: dict[ConvSpec, NetworkLayer] = {}
    for layer in layers:
        seen = by_spec.get(layer.spec)
        by_spec[layer.spec] = layer if seen is None else dataclasses.replace(
            seen, count=seen.count + layer.count)
    return list(by_spec.values())


# --------------------------------------------------------------------------- writing


def _derived(spec: ConvSpec) -> tuple[int, int, int, int] | None:
    """The padding a reader derives from the written descriptor of ``spec`` (None: none)."""
    try:
        return parse_descriptor(_descriptor(spec, "", 1, explicit_pad=False)).spec.pad
    except ValueError:  # padding the keys cannot say (more on the left than the output needs)
        return None


def _descriptor(spec: ConvSpec, name: str, count: int, explicit_pad: bool) -> str:
    (ho, wo), (sh, sw), (dh, dw) = spec.out_size, spec.stride, spec.dilation
    pt, _, pl, _ = spec.pad
    parts = [f"g{spec.groups}" if spec.groups > 1 else "", f"mb{spec.n}", f"ic{spec.c}",
             f"ih{spec.h}", f"iw{spec.w}" if spec.w != spec.h else "", f"oc{spec.k}",
             f"oh{ho}", f"ow{wo}" if (wo, spec.w) != (ho, spec.h) else "", f"kh{spec.kh}",
             f"kw{spec.kw}" if spec.kw != spec.kh else "",
             f"sh{sh}" if (sh, sw) != (1, 1) else "", f"sw{sw}" if sw != sh else "",
             f"ph{pt}", f"pw{pl}" if pl != pt else "",
             f"dh{dh - 1}" if (dh, dw) != (1, 1) else "", f"dw{dw - 1}" if dw != dh else ""]
    text = "".join(parts)
    if name:
        text += f'n"{name}"'
    if count != 1:
        text += f"*{count}"
    options = (["+bias"] if spec.bias else []) + (["+flip"] if spec.flip else []) + (
        ["+float64"] if spec.dtype == "float64" else [])
    if explicit_pad:
        options.append("+pad=" + ",".join(map(str, spec.pad)))
    return " ".join([text] + options)


def format_layer(layer: NetworkLayer) -> str:
    """The layer as one line of a layer file (read back, the same layer)."""
    if '"' in layer.name:
        raise ValueError(f"a layer name cannot hold a double quote: {layer.name!r}")
    if layer.count < 1:
        raise ValueError(f"count must be >= 1, got {layer.count}")
    explicit = _derived(layer.spec) != layer.spec.pad
    return _descriptor(layer.spec, layer.name, layer.count, explicit)


def write_layers(path: str | Path, layers: list[NetworkLayer], header: str = "") -> Path:
    """Write a layer file: the header as comment lines, then one layer per line."""
    path = Path(path)
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines += [format_layer(layer) for layer in layers]
    path.write_text("\n".join(lines) + "\n")
    return path
