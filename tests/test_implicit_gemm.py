"""The CPU implicit GEMM's own paths against float64 direct convolution: images stacked into
bands that span several of them (with padding shared between rows and between images), output
channels split into chunks, the stacked images staged once for every task, strided and
padded 1x1 layers on their gathered pixels, B read from the input itself (and staged for the
block that would read past it), 1x1 layers flattened to runs of pixels (a shallow one written
straight into the output, a deep one accumulated per reduction slice; bands ending in
one-vector columns, or every image's last pixels gathered into shared ones), strided layers over
their own taps on the phases; and Winograd's tasks split by output channels on a deep layer."""
import numpy as np
import pytest

import convbench as cb
from convbench.arith import ceil_div
from convbench.cpu import implicit_gemm
from convbench.spec import conv_spec

CASES = [  # (x shape, w shape, keywords, what the plan must do)
    ((8, 16, 7, 7), (32, 16, 3, 3), dict(padding=1), "stacked"),
    ((8, 64, 5, 5), (96, 64, 3, 3), dict(padding=1), "chunked"),
    ((5, 6, 5, 4), (8, 3, 3, 3), dict(padding=(2, 1, 0, 3), groups=2), "stacked"),
    ((3, 4, 6, 6), (4, 4, 3, 3), dict(padding=4), "unshared"),
    ((2, 9, 14, 1), (6, 3, 2, 5), dict(padding=(3, 0, 3, 1), groups=3, flip=True), "staged"),
    ((2, 5, 8, 8), (6, 5, 3, 3), dict(padding=2, dilation=2), "staged"),
    ((6, 4, 20, 20), (5, 4, 3, 3), dict(stride=2, padding=1), "read"),
    ((2, 70, 30, 30), (20, 70, 1, 1), {}, "flattened"),
    ((2, 200, 9, 9), (20, 200, 1, 1), {}, "flattened"),
    ((3, 5, 17, 9), (13, 5, 3, 1), {}, "read"),
    ((1, 3, 20, 20), (9, 3, 5, 5), dict(stride=(2, 3)), "read"),
    ((6, 40, 3, 3), (24, 40, 2, 2), {}, "shared"),
    ((6, 40, 7, 7), (24, 40, 1, 1), {}, "flattened"),
    # bands ending in one-vector columns: tall ones then single panels, over reduction slices;
    # packed weights and (one image) the layer's own
    ((6, 150, 7, 7), (44, 150, 1, 1), {}, "flattened"),
    ((1, 300, 7, 7), (44, 300, 1, 1), {}, "flattened"),
    # every image's last pixels gathered into shared columns: packed weights over reduction
    # slices, the layer's own weights, groups, images of one pixel
    ((8, 600, 7, 7), (64, 600, 1, 1), {}, "tails"),
    ((4, 2000, 7, 7), (48, 2000, 1, 1), {}, "tails"),
    ((8, 1024, 3, 3), (384, 512, 1, 1), dict(groups=2), "tails"),
    ((8, 3072, 1, 1), (384, 1024, 1, 1), dict(groups=3), "tails"),
    ((4, 24, 6, 6), (200, 24, 3, 3), dict(padding=1), "shared"),
    ((4, 12, 9, 9), (20, 12, 1, 1), dict(stride=2, padding=1), "gathered"),
    ((3, 8, 10, 7), (16, 4, 1, 1), dict(stride=(2, 3), groups=2, flip=True), "gathered"),
]


def _check_plan(layer, spec, expect):
    if expect == "shared":  # staged once for every task: small images stacked, or chunks
        assert layer.shared and not layer.read_input
        return
    if expect == "tails":  # each image one band, its last pixels computed with the others'
        assert layer.read_input and layer.bands == 1 and 0 < layer.gathered < spec.n * 49
        return
    if expect == "flattened" and spec.n > 1:  # too small to pay for the gather's own pass
        assert layer.gathered == 0
    if expect == "gathered":  # a strided or padded 1x1 layer: its pixels gathered first
        assert implicit_gemm.pointwise_gathered(spec)
        assert layer.target.stride == (1, 1) and layer.target.pad == (0, 0, 0, 0)
        return
    if expect in ("stacked", "staged"):
        assert not layer.read_input
        assert expect == "staged" or layer.band > spec.out_size[0]
        assert layer.pitch == spec.w + max(spec.pad[2:]) and layer.slot == spec.h + max(
            spec.pad[:2])
    elif expect == "chunked":
        assert layer.k_chunk < layer.k_pad
    elif expect == "unshared":
        assert layer.pitch == spec.padded_size[1]
    else:
        assert layer.read_input
        if expect == "flattened":  # a 1x1 layer as one of H*W rows of a pixel, read in place
            assert implicit_gemm.flattens(spec)
            assert (layer.target.h, layer.target.w, layer.pitch) == (spec.h * spec.w, 1, 1)


@pytest.fixture
def stale_workspace(monkeypatch):
    """Workspace arrays full of NaN, as memory left by an earlier call may be: a kernel that
    reads scratch it did not write spreads the NaN into its output. (A row's right padding
    shared with the next row's left once read a row beyond the staged band this way, on one
    call in 30.)"""
    from convbench import workspace

    monkeypatch.setattr(workspace, "empty", lambda shape, dtype: np.full(shape, np.nan, dtype))


@pytest.mark.parametrize("xs,ws,kw,expect", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("biased", [False, True])
def test_implicit_gemm_paths_match_direct(xs, ws, kw, expect, dtype, biased, stale_workspace):
    spec = conv_spec(xs, ws, **kw)
    _check_plan(implicit_gemm.plan(spec, 2), spec, expect)
    rng = np.random.default_rng(len(xs) + ws[0])
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype) if biased else None
    ref = cb.conv2d(x.astype(np.float64), w.astype(np.float64), algorithm="direct",
                    bias=None if b is None else b.astype(np.float64), **kw)
    for got in (cb.conv2d(x, w, bias=b, algorithm="implicit_gemm", **kw),
                cb.Conv2d(w, bias=b, algorithm="implicit_gemm", **kw)(x)):
        assert got.dtype == dtype
        tol = 1e-5 if dtype == np.float32 else 1e-13
        assert np.abs(got - ref).max() <= tol * np.abs(ref).max()


@pytest.mark.parametrize("ws,kw", [((8, 300, 3, 3), dict(padding=1)),
                                   ((12, 700, 3, 3), {}),
                                   ((16, 2400, 1, 1), {})])
def test_a_deep_layer_of_few_columns_reads_its_weights_in_place(ws, kw, stale_workspace):
    """Reductions of thousands of rows (C*kh*kw) over a few dozen output positions: the call
    reads the layer's own weights rather than packing them, and its slices of the reduction
    walk each row of A in order (the prepared form packs them, and must agree)."""
    xs = (1, ws[1], 6, 6)
    spec = conv_spec(xs, ws, **kw)
    assert spec.cg * spec.kh * spec.kw > 2048 and implicit_gemm.weights_read_in_place(spec)
    rng = np.random.default_rng(ws[1])
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    ref = cb.conv2d(x.astype(np.float64), w.astype(np.float64), algorithm="direct", **kw)
    for got in (cb.conv2d(x, w, algorithm="implicit_gemm", **kw),
                cb.Conv2d(w, algorithm="implicit_gemm", **kw)(x)):
        assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


def test_outputs_written_in_place_are_not_costed_as_copied():
    """The cost feature of outputs copied out of the accumulators: a shallow unbiased 1x1
    layer writes its whole blocks straight into the output (only each band's edge is copied),
    a biased one passes over every output to add the bias, a deeper one copies them all."""
    def copied(c, bias):
        spec = conv_spec((1, c, 56, 56), (144, c, 1, 1), bias=bias)
        layer = implicit_gemm.plan(implicit_gemm.flattened_spec(spec), 2)
        return implicit_gemm.implicit_gemm_cost_features(spec)[4], layer, spec
    shallow, layer, spec = copied(24, False)
    outputs = 144 * 56 * 56
    assert implicit_gemm.writes_in_place(layer.read_input, layer.pitch,
                                         layer.target.out_size[1], 24,
                                         implicit_gemm.REDUCTION_SLICE)
    assert 0 < shallow < 0.01 * outputs
    assert copied(24, True)[0] == outputs
    assert copied(256, False)[0] == outputs


@pytest.mark.parametrize("algorithm", ["winograd", "winograd_f2"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_winograd_chunked_output_channels(algorithm, dtype, stale_workspace):
    """A deep layer whose transformed kernels outgrow L2 runs as (share of tiles, chunk of
    output channels) tasks: every chunk, the padded columns and the bias land where they
    should."""
    from convbench.cpu import winograd

    xs, ws, pad = (2, 128, 9, 8), (130, 128, 3, 3), 1
    spec = conv_spec(xs, ws, padding=pad, dtype=dtype)
    _, k_chunk = winograd.blocking(spec, 4 if algorithm == "winograd" else 2)
    assert k_chunk < winograd.padded_k(spec)
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    ref = cb.conv2d(x.astype(np.float64), w.astype(np.float64), bias=b.astype(np.float64),
                    padding=pad, algorithm="direct")
    got = cb.conv2d(x, w, bias=b, padding=pad, algorithm=algorithm)
    tol = (2e-5 if algorithm == "winograd" else 2e-6) if dtype == np.float32 else 1e-13
    assert np.abs(got - ref).max() <= tol * np.abs(ref).max()


@pytest.mark.parametrize("xs,ws,kw,expect", CASES)
def test_one_task_reads_only_what_it_staged(xs, ws, kw, expect, stale_workspace, monkeypatch):
    """Planned as a single task (no split for threads), every band is the first its thread
    stages, so scratch it did not write still holds NaN: the output must be NaN-free."""
    planned = implicit_gemm.plan
    monkeypatch.setattr(implicit_gemm, "plan", lambda spec, threads: planned(spec, 0))
    spec = conv_spec(xs, ws, **kw)
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal(xs).astype(np.float32), rng.standard_normal(ws).astype(np.float32)
    got = implicit_gemm.implicit_gemm_conv2d(x, w, spec)
    ref = cb.conv2d(x.astype(np.float64), w.astype(np.float64), algorithm="direct", **kw)
    assert np.isfinite(got).all()
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("algorithm", ["winograd", "winograd_f2"])
def test_winograd_deep_share_cut_into_blocks(algorithm, stale_workspace, monkeypatch):
    """A deep layer on a plane large enough that a thread's share of tiles would spill V and
    M past the caches runs that share in several even blocks (the last one short), each with
    its chunk of output channels: every block's tiles land where they should."""
    from convbench.cpu import winograd

    # small enough limits that the layer is deep on every vector target (on AVX2 its U, with
    # K padded to 16 rather than 64, would fit the default BLOCK_BYTES)
    monkeypatch.setattr(winograd, "BLOCK_BYTES", 1 << 19)
    monkeypatch.setattr(winograd, "DEEP_BLOCK_BYTES", 1 << 18)
    m = 4 if algorithm == "winograd" else 2
    xs, ws, pad = (2, 160, 21, 19), (70, 160, 3, 3), 1
    spec = conv_spec(xs, ws, padding=pad)
    th, tw = spec.out_size[0] // m + 1, spec.out_size[1] // m + 1
    block, k_chunk = winograd.blocking(spec, m)
    assert block < 2 * th * tw // 2 and k_chunk < winograd.padded_k(spec)
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal(xs).astype(np.float32), rng.standard_normal(ws).astype(np.float32)
    b = rng.standard_normal(ws[0]).astype(np.float32)
    ref = cb.conv2d(x.astype(np.float64), w.astype(np.float64), bias=b.astype(np.float64),
                    padding=pad, algorithm="direct")
    got = cb.conv2d(x, w, bias=b, padding=pad, algorithm=algorithm)
    tol = 2e-5 if algorithm == "winograd" else 2e-6
    assert np.abs(got - ref).max() <= tol * np.abs(ref).max()


def test_a_flattened_layer_splits_into_whole_blocks_that_even_out_the_threads():
    """A 1x1 layer's image of 784 pixels, one image, is cut into bands of whole micro-kernel
    blocks, at least two per thread, the short band last."""
    spec = conv_spec((1, 96, 28, 28), (40, 96, 1, 1))
    layer = implicit_gemm.plan(spec, 2)
    assert layer.target.w == 1 and layer.band % layer.n_r == 0 and layer.bands >= 4
    blocks = -(-spec.h * spec.w // layer.n_r)
    per_band = layer.band // layer.n_r
    assert 0 < blocks - (layer.bands - 1) * per_band <= per_band


def test_a_small_image_ends_in_one_vector_columns():
    """A 7x7 image's 49 pixels: whole blocks up to the last whole one, then one-vector columns
    (on AVX2 48 + 8 computed, not 64 or 72), and the cost model counts those columns."""
    from convbench.cpu.vector.ir import TARGET
    from convbench.cpu.vector.microkernel import computed_positions

    spec = conv_spec((8, 96, 7, 7), (40, 96, 1, 1))
    layer = implicit_gemm.plan(spec, 2)
    lanes = TARGET.lanes(np.float32)
    assert computed_positions(49, layer.n_r, lanes) == -(-49 // lanes) * lanes
    features = implicit_gemm.implicit_gemm_cost_features(spec)
    assert features[1] < 8 * layer.k_pad * layer.positions * 96 or layer.positions <= 56


def test_a_1x1_layer_on_small_images_is_not_stacked():
    """Staging a 1x1 layer's images costs more than the blocks their 49 pixels waste."""
    layer = implicit_gemm.plan(conv_spec((8, 96, 7, 7), (40, 96, 1, 1)), 2)
    assert layer.read_input and not layer.shared and layer.band == 49


@pytest.mark.parametrize("pitch,pt,pl", [(1, 0, 0), (9, 1, 1)])
def test_a_band_past_the_last_image_stages_zeros(pitch, pt, pl):
    """A band that starts in the last stacked image and runs past it (a short last band,
    staged whole) holds that image's rows, their padding, then zeros to its end, whatever the
    scratch held before."""
    n, c, h, wid = 2, 3, 5, 1 if pitch == 1 else 7
    slot = h + pt
    x = np.arange(n * c * h * wid, dtype=np.float32).reshape(n, c, h, wid) + 1
    first, count = slot + 2, 3 * slot  # from row 2 of the second image, well past its end
    plane = count * pitch
    stage = np.full(c * plane, np.nan, dtype=np.float32)
    implicit_gemm._stage_stacked(stage, x, 0, c, first, count, plane, pitch, slot, pt, pl)
    want = np.zeros((c, count, pitch), dtype=np.float32)
    for r in range(count):
        image, ih = (first + r) // slot, (first + r) % slot - pt
        if image < n and 0 <= ih < h:
            want[:, r, pl:pl + wid] = x[image, :, ih]
    np.testing.assert_array_equal(stage.reshape(c, count, pitch), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [False, True])
def test_written_in_place_over_groups_of_position_blocks(dtype, bias):
    """A shallow 1x1 layer written straight into the output runs each block of output
    channels over a group of position blocks: two bands that end in a partial group (the
    second one shorter, ending in a one-vector column), and a last block of output channels
    (29 of 30 or 32) that goes through the accumulators instead."""
    xs, ws = (2, 16, 23, 23), (29, 16, 1, 1)
    spec = conv_spec(xs, ws, bias=bias, dtype=dtype)
    layer = implicit_gemm.plan(implicit_gemm.flattened_spec(spec), 2)
    assert implicit_gemm.writes_in_place(layer.read_input, layer.pitch, 1, 16,
                                         implicit_gemm.REDUCTION_SLICE)
    group = implicit_gemm.position_group(16, layer.n_r, np.dtype(dtype).itemsize)
    assert layer.n_r < group and layer.bands == 2 and layer.band % group
    assert layer.k_pad > 29
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(29).astype(dtype) if bias else None
    ref = cb.conv2d(x.astype(np.float64), w.astype(np.float64),
                    bias=None if b is None else b.astype(np.float64), algorithm="direct")
    tol = 1e-5 if dtype == np.float32 else 1e-13
    for got in (cb.conv2d(x, w, bias=b, algorithm="implicit_gemm"),
                cb.Conv2d(w, bias=b, algorithm="implicit_gemm")(x)):
        assert np.abs(got - ref).max() <= tol * np.abs(ref).max()


@pytest.mark.parametrize("lines, band, per_band, threads", [
    (3136, 504, 1, 2), (784, 504, 1, 2), (3136, 504, 8, 2), (12544, 504, 1, 2),
    (3136, 504, 3, 4), (408, 96, 1, 2)])
def test_even_bands_give_every_thread_as_many_tasks(lines, band, per_band, threads):
    """A flattened 1x1 layer's bands: a whole number of tasks per thread, one length but the
    last (shorter by fewer blocks than there are bands), at most twice as many bands as
    before."""
    n_r = 24
    got = implicit_gemm.even_band(lines, band, n_r, per_band, threads)
    bands = ceil_div(lines, got)
    assert got % n_r == 0 or got == lines
    assert bands * per_band % threads == 0
    assert ceil_div(lines, band) <= bands <= 2 * ceil_div(lines, band)
    last = lines - (bands - 1) * got
    assert 0 < last <= got and got - last < n_r * bands


def test_bands_stay_where_no_even_split_exists():
    """One band per image stays one (its last pixels may be gathered with the other
    images'); 9 blocks in 3 bands, which no count up to 6 splits evenly, keep the short last
    band that evens out two threads (4 + 1 against 4 blocks)."""
    assert implicit_gemm.even_band(49, 49, 24, 3, 2) == 49
    assert implicit_gemm.even_band(196, 96, 24, 1, 2) == 96


def test_a_one_image_1x1_layer_runs_in_even_bands():
    """N1 C8 56x56 K20 1x1 (7 bands of 504 on AVX2 before): an even count of bands on 2
    threads, of one length but the last, and the result of float64 direct convolution."""
    spec = conv_spec((1, 8, 56, 56), (20, 8, 1, 1))
    layer = implicit_gemm.plan(implicit_gemm.flattened_spec(spec), 2)
    assert layer.bands % 2 == 0 and layer.bands * layer.band - 3136 < layer.n_r * layer.bands
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 8, 56, 56)).astype(np.float32)
    w = rng.standard_normal((20, 8, 1, 1)).astype(np.float32)
    ref = cb.conv2d(x.astype(np.float64), w.astype(np.float64), algorithm="direct")
    got = cb.conv2d(x, w, algorithm="implicit_gemm")
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
