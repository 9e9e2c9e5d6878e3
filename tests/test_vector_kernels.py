"""The hand-vectorised building blocks against NumPy: the GEMM micro-kernel (both strides of A,
every dtype), Winograd's tile transforms (vector body and scalar tail, scattered stores,
bias, the guard on an overhanging tile), the FFT algorithms' spectral block, the in-register
block transpose and the channel-last staging built on it, the own FFT's vector pieces, and the
cache-line alignment of large workspace; the vector target they are compiled for, and the same
tests compiled for the other widths (AVX2, SSE) in a subprocess."""
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numba import njit

from convbench import workspace
from convbench.cpu.vector import transpose
from convbench.cpu.fourier.lane_ops import butterfly_dif, butterfly_dit, lane_dft, lane_idft
from convbench.cpu.fourier.real_fft2 import bit_reversal
from convbench.cpu.vector.microkernel import (MR, ROW_CHOICES, best_block, best_rows,
                                             block_indexed, column_indexed, computed_positions,
                                             gemm, nr, tail_start, tall_rows)
from convbench.cpu.vector.channel_taps import row_taps
from convbench.cpu.vector.spectral_mac import mac_channels
from convbench.cpu.vector.ir import TARGET
from convbench.cpu.winograd import _stage_rows
from convbench.cpu.vector.winograd_tiles import transform
from convbench.winograd_transforms import matrices


@njit
def _gemm(a, a_off, a_row, a_col, b, ldb, c, ldc, rows, cols, kc, n_r):
    gemm(a, a_off, a_row, a_col, b, 0, ldb, c, 0, ldc, rows, cols, kc, n_r)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("a_transposed", [False, True])
@pytest.mark.parametrize("kc", [1, 7, 64])
def test_gemm_matches_numpy(dtype, a_transposed, kc):
    rng = np.random.default_rng(kc)
    n_r = nr(dtype)
    rows, cols = 2 * MR, 2 * n_r
    a = rng.standard_normal((rows, kc)).astype(dtype)
    b = rng.standard_normal((kc, cols)).astype(dtype)
    c = np.full((rows, cols), np.nan, dtype)  # every value must be overwritten
    stored = np.ascontiguousarray(a.T if a_transposed else a).reshape(-1)
    pad = 3  # A starts inside its array
    flat_a = np.concatenate([np.zeros(pad, dtype), stored])
    a_row, a_col = (1, rows) if a_transposed else (kc, 1)
    _gemm(flat_a, pad, a_row, a_col, b.reshape(-1), cols, c.reshape(-1), cols, rows, cols, kc,
          n_r)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=tol, atol=tol * kc)


_IN4 = transform(matrices(4)[0], scatter=False, biased=False)
_OUT4 = transform(matrices(4)[2], scatter=True, biased=True)


@njit
def _input(src, s_row, s_col, dst, d_row, d_col, length):
    _IN4(src, 0, s_row, s_col, dst, 0, d_row, d_col, 1, src, 6, 6, length)


@njit
def _output(src, s_row, s_col, dst, d_off, d_row, d_chan, bias, rows, cols, length):
    _OUT4(src, 0, s_row, s_col, dst, d_off, d_row, 1, d_chan, bias, rows, cols, length)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channels", [1, 5, 16, 37])
def test_input_transform_is_bt_x_b(dtype, channels):
    rng = np.random.default_rng(channels)
    x = rng.standard_normal((6, 6, channels)).astype(dtype)  # channel-last tile
    out = np.zeros((6, 6, channels), dtype)
    _input(x.reshape(-1), 6 * channels, channels, out.reshape(-1), 6 * channels, channels,
           channels)
    bt = matrices(4)[0]
    expected = np.einsum("ri,ijc,sj->rsc", bt, x.astype(np.float64), bt)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_transform_is_g_g_gt_with_padded_columns_zero(m, flip, dtype):
    """U[xi*a + nu, c, k] = (G g_kc G^T)[xi, nu], the kernel rotated for true convolution;
    K = 13 leaves a vector tail and micro-kernel padding columns, which must read zero."""
    from convbench.cpu.winograd import kernel_transform, padded_k
    from convbench.spec import conv_spec
    rng = np.random.default_rng(m)
    w = rng.standard_normal((13, 5, 3, 3)).astype(dtype)
    spec = conv_spec((1, 5, 8, 8), w.shape, padding=1, flip=flip, dtype=np.dtype(dtype))
    u = kernel_transform(w, spec, m)
    a, g = m + 2, matrices(m)[1]
    taps = w[:, :, ::-1, ::-1] if flip else w
    expected = np.einsum("xi,kcij,yj->xyck", g, taps.astype(np.float64), g).reshape(a * a, 5, 13)
    assert u.shape == (a * a, 5, padded_k(spec))
    np.testing.assert_allclose(u[:, :, :13], expected, rtol=1e-6, atol=1e-6)
    assert not u[:, :, 13:].any()


@pytest.mark.parametrize("channels", [3, 16, 21, 37])
@pytest.mark.parametrize("whole", [False, True])
def test_output_transform_scatters_adds_bias_and_clips(channels, whole):
    """An overhanging tile (stored lane by lane, clipped) and a whole one (on AVX-512 in
    float32: transposed in registers, stored a row at a time); channel tails either way."""
    rng = np.random.default_rng(channels)
    m_tile = rng.standard_normal((6, 6, channels)).astype(np.float32)
    bias = rng.standard_normal(channels).astype(np.float32)
    ho, wo = 7, 6  # a 4x4 tile at (4, 3) overhangs by one row and one column; at (1, 2) not
    top, left, rows = (1, 2, 4) if whole else (4, 3, 3)
    out = np.full((channels, ho, wo), -7.0, np.float32)
    _output(m_tile.reshape(-1), 6 * channels, channels, out.reshape(-1), top * wo + left, wo,
            ho * wo, bias, rows, rows, channels)
    at = matrices(4)[2]
    y = np.einsum("ri,ijc,sj->crs", at, m_tile.astype(np.float64), at) + bias[:, None, None]
    written = (slice(None), slice(top, top + rows), slice(left, left + rows))
    np.testing.assert_allclose(out[written], y[:, :rows, :rows], rtol=1e-5, atol=1e-4)
    untouched = np.ones_like(out, bool)
    untouched[written] = False
    assert (out[untouched] == -7.0).all()


@njit
def _indexed(rows, a, b, b_off, b_rows, c, ldc, kc, accumulate):
    block_indexed(rows, a, 0, 1, rows, b, b_off, b_rows, c, 0, ldc, kc, accumulate)


@pytest.mark.parametrize("rows", ROW_CHOICES)
@pytest.mark.parametrize("accumulate", [0, 1])
def test_indexed_block_reads_rows_through_the_table(rows, accumulate):
    rng = np.random.default_rng(rows)
    cols, kc = nr(np.float32, rows), 9
    b = rng.standard_normal(4000).astype(np.float32)
    table = rng.choice(4000 - cols - 5, kc, replace=False).astype(np.int64)
    a = rng.standard_normal((kc, rows)).astype(np.float32)  # packed: k-major
    c0 = rng.standard_normal((rows, cols)).astype(np.float32)
    c = c0.copy()
    _indexed(rows, a.reshape(-1), b, 5, table, c.reshape(-1), cols, kc, accumulate)
    gathered = np.stack([b[5 + t:5 + t + cols] for t in table]).astype(np.float64)
    expected = a.T.astype(np.float64) @ gathered + (c0 if accumulate else 0.0)
    np.testing.assert_allclose(c, expected, rtol=1e-5, atol=1e-4)


@njit
def _column(panel_rows, tall, a, a_row, a_col, a_panel, b, b_off, b_rows, c, ldc, kc,
            accumulate):
    column_indexed(panel_rows, tall, a, 0, a_row, a_col, a_panel, b, b_off, b_rows, c, 0, ldc,
                   kc, accumulate)


@pytest.mark.parametrize("panel_rows", ROW_CHOICES)
@pytest.mark.parametrize("tall", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_column_block_spans_panels(panel_rows, tall, packed):
    """A one-vector column over one panel or, tall, over several: from packed panels (each
    reduction step's rows contiguous) or from the layer's own rows; C's other columns kept."""
    rng = np.random.default_rng(panel_rows + 10 * tall)
    rows, lanes, kc, reduction = (tall_rows(panel_rows) if tall else panel_rows,
                                  TARGET.lanes(np.float32), 9, 11)
    weights = rng.standard_normal((rows, reduction)).astype(np.float32)
    if packed:  # (panels, reduction, panel_rows)
        a = weights.reshape(-1, panel_rows, reduction).transpose(0, 2, 1).copy().reshape(-1)
        a_row, a_col = 1, panel_rows
    else:
        a, a_row, a_col = weights.reshape(-1), reduction, 1
    b = rng.standard_normal(600).astype(np.float32)
    table = rng.choice(600 - lanes - 3, kc, replace=False).astype(np.int64)
    ldc = lanes + 5
    c0 = rng.standard_normal((rows, ldc)).astype(np.float32)
    c = c0.copy()
    _column(panel_rows, tall, a, a_row, a_col, panel_rows * reduction, b, 3, table,
            c.reshape(-1), ldc, kc, 1)
    gathered = np.stack([b[3 + t:3 + t + lanes] for t in table]).astype(np.float64)
    expected = weights[:, :kc].astype(np.float64) @ gathered + c0[:, :lanes]
    np.testing.assert_allclose(c[:, :lanes], expected, rtol=1e-5, atol=1e-4)
    assert (c[:, lanes:] == c0[:, lanes:]).all()


def test_band_ends_in_columns_only_where_a_block_would_waste_a_vector():
    """49 positions in blocks of 24 (8 lanes): 48 whole, one column of 8; 47 in blocks of 24:
    the last block wastes one position, so it stays whole."""
    assert tail_start(49, 24, 8) == 48 and computed_positions(49, 24, 8) == 56
    assert tail_start(47, 24, 8) == 48 and computed_positions(47, 24, 8) == 48
    assert tail_start(20, 64, 16) == 0 and computed_positions(20, 64, 16) == 32
    assert computed_positions(64, 16, 8) == 64
    # a shape that computes 49 as 64 is not preferred over one that computes it as 56
    lanes = TARGET.lanes(np.float32)
    assert computed_positions(49, nr(np.float32, best_block(128, 49, np.float32)), lanes) <= (
        -(-49 // lanes) * lanes)


def test_best_rows_pads_least():
    """On 32 registers (AVX-512) the three shapes, the taller on a tie; on 16 (AVX2) no
    8 x 1 block, which would load B once per multiply-add."""
    assert best_rows(4) == 4 and best_rows(3) == 4 and best_rows(6) == 6
    if TARGET.registers >= 32:
        assert best_rows(10) == 6
        assert ROW_CHOICES == (4, 6, 8)
        assert best_rows(16) == 8 and best_rows(64) == 8 and best_rows(12) == 6
    else:
        assert ROW_CHOICES == (4, 6) and best_rows(16) == 4 and best_rows(12) == 4
        assert best_rows(10) == 4


def _target(**env) -> dict:
    code = ("import dataclasses, json; from convbench.target import vector_target; "
            "print(json.dumps(dataclasses.asdict(vector_target())))")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")
             and k != "NUMBA_ENABLE_AVX"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**clean, **env}, check=True)
    return json.loads(run.stdout)


HOST_AVX512 = "avx512f" in Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() \
    else False


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 targets")
def test_vector_target_is_the_one_numba_compiles_for():
    """Numba compiles for NUMBA_CPU_NAME with NUMBA_CPU_FEATURES, else the host's features
    (AVX off where NUMBA_ENABLE_AVX=0): a CPU name alone keeps the host's AVX-512, a feature
    list decides, 'generic' is SSE."""
    assert _target(NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES="-avx512f")["isa"] == "avx2"
    assert _target(NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES="-avx512f")["vector_bytes"] == 32
    assert _target(NUMBA_CPU_NAME="skylake-avx512", NUMBA_CPU_FEATURES="")["vector_bytes"] == 64
    assert _target(NUMBA_CPU_NAME="generic")["isa"] == "sse"
    assert _target(NUMBA_ENABLE_AVX="0")["isa"] not in ("avx512", "avx2", "avx") or (
        _target(NUMBA_ENABLE_AVX="0")["vector_bytes"] < 64)
    host = _target()
    assert (host["vector_bytes"] == 64) == HOST_AVX512
    assert _target(NUMBA_CPU_NAME="haswell")["vector_bytes"] == host["vector_bytes"]


def test_classify_reads_the_registers_llvm_used():
    from convbench.target import classify

    assert classify("x86_64-unknown-linux-gnu", "vfmadd231ps %zmm0, %zmm1, %zmm2").isa == "avx512"
    avx2 = classify("x86_64-unknown-linux-gnu", "vfmadd231ps (%rsi), %ymm0, %ymm0")
    assert (avx2.isa, avx2.vector_bytes, avx2.registers, avx2.fma) == ("avx2", 32, 16, True)
    assert classify("x86_64-unknown-linux-gnu", "vmulps %ymm0, %ymm1, %ymm1").isa == "avx"
    assert classify("x86_64-unknown-linux-gnu", "mulps %xmm1, %xmm4").vector_bytes == 16
    neon = classify("aarch64-unknown-linux-gnu", "fmla v0.4s, v1.4s, v2.4s")
    assert (neon.isa, neon.vector_bytes, neon.registers, neon.fma) == ("neon", 16, 32, True)


OTHER_WIDTHS = {"avx2": {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "-avx512f"},
                "sse": {"NUMBA_CPU_NAME": "generic"}}


@pytest.mark.skipif(os.environ.get("CONVBENCH_VECTOR_WIDTH_RUN") is not None,
                    reason="this is the run at another width")
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 targets")
@pytest.mark.parametrize("name", sorted(n for n in OTHER_WIDTHS if HOST_AVX512 or n != "avx2"))
def test_vector_kernels_at_another_width(name):
    """These tests again, compiled for AVX2 (32-byte vectors, 16 registers) and for SSE (16
    bytes): both run on an AVX-512 host, so one machine checks every width's code. (On an AVX2
    host the tests themselves are the AVX2 run, 20 s of CI not spent twice.)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
    env.update(OTHER_WIDTHS[name], CONVBENCH_VECTOR_WIDTH_RUN=name)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          __file__, "-k", "not another_width"], capture_output=True,
                         text=True, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert _target(**OTHER_WIDTHS[name])["isa"] == name


@njit
def _mac(x, x_chan, w, w_off, w_chan, w_out, w_im, y, y_off, y_out, c_in, im, k_out):
    mac_channels(x, 0, x_chan, w, w_off, w_chan, w_out, w_im, y, y_off, y_out, c_in, im, k_out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k_out", [1, 3, 8, 15])
@pytest.mark.parametrize("c_in", [1, 6])
def test_spectral_block_sums_x_times_conjugate_w(dtype, k_out, c_in):
    """Every block size of NK_CHOICES (15 = 8 + 4 + 2 + 1), real and imaginary parts at their
    own distances in X, W and Y, W starting inside its array."""
    rng = np.random.default_rng(k_out * 10 + c_in)
    width = TARGET.vector_bytes // np.dtype(dtype).itemsize
    x = rng.standard_normal((c_in, width)) + 1j * rng.standard_normal((c_in, width))
    w = rng.standard_normal((k_out, c_in, width)) + 1j * rng.standard_normal((k_out, c_in, width))
    # X: channel c at c*x_chan, imaginary parts `width` later; W: rows of 3 vectors, the
    # imaginary part two vectors after the real one; Y: blocks of (re, im), then a gap
    x_chan = 2 * width + 5
    x_flat = np.zeros(c_in * x_chan, dtype)
    for c in range(c_in):
        x_flat[c * x_chan:c * x_chan + width] = x[c].real
        x_flat[c * x_chan + width:c * x_chan + 2 * width] = x[c].imag
    w_off, w_chan, w_im = 7, 3 * width, 2 * width
    w_flat = np.zeros(w_off + k_out * c_in * w_chan, dtype)
    for k in range(k_out):
        for c in range(c_in):
            at = w_off + (k * c_in + c) * w_chan
            w_flat[at:at + width], w_flat[at + w_im:at + w_im + width] = w[k, c].real, w[k, c].imag
    y_off, y_out = 2, 2 * width + 1
    y_flat = np.full(y_off + k_out * y_out, np.nan, dtype)
    _mac(x_flat, x_chan, w_flat, w_off, w_chan, c_in * w_chan, w_im, y_flat, y_off, y_out, c_in,
         width, k_out)
    expected = (x[None] * np.conj(w)).sum(axis=1)  # (k_out, lanes)
    got = np.array([y_flat[y_off + k * y_out:y_off + k * y_out + width]
                    + 1j * y_flat[y_off + k * y_out + width:y_off + k * y_out + 2 * width]
                    for k in range(k_out)])
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * c_in)
    gaps = [y_flat[y_off + k * y_out + 2 * width] for k in range(k_out - 1)]
    assert np.isnan(y_flat[:y_off]).all() and np.isnan(gaps).all()  # nothing else written


@njit
def _transpose_block(src, s_off, s_pitch, dst, d_off, d_pitch):
    transpose.block(src, s_off, s_pitch, dst, d_off, d_pitch)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transpose_block_swaps_rows_and_columns(dtype):
    lanes = TARGET.lanes(dtype)
    rng = np.random.default_rng(lanes)
    src = rng.standard_normal((lanes + 2, lanes + 5)).astype(dtype)
    dst = np.full((lanes + 3, lanes + 4), np.nan, dtype)
    _transpose_block(src.reshape(-1), 2 * src.shape[1] + 5, src.shape[1],
                     dst.reshape(-1), 3 * dst.shape[1] + 4, dst.shape[1])
    np.testing.assert_array_equal(dst[3:, 4:], src[2:, 5:].T)
    outside = np.ones(dst.shape, bool)
    outside[3:, 4:] = False
    assert np.isnan(dst[outside]).all()  # nothing written outside the block


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 40, 53), (3, 20, 37), (256, 1, 9)])
def test_transpose_into_transposes_every_matrix_of_a_stack(dtype, shape):
    """Whole blocks and edges, one matrix or a stack (a grouped layer's weights); the
    destination's extra columns are left alone."""
    src = np.random.default_rng(shape[1]).standard_normal(shape).astype(dtype)
    dst = np.full((shape[0], shape[2], shape[1] + 3), np.nan, dtype)
    transpose.transpose_into(src, dst)
    np.testing.assert_array_equal(dst[:, :, :shape[1]], src.transpose(0, 2, 1))
    assert np.isnan(dst[:, :, shape[1]:]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 64, 20, 37), (1, 19, 5, 40), (1, 3, 21, 21),
                                   (1, 40, 17, 16)])
def test_channel_last_staging_pads_and_transposes(dtype, shape):
    """Whole blocks, the last block moved back over its neighbour, and the element-by-element
    copy of layers narrower than a block: every value where it belongs, zeros around."""
    n, c, h, w = shape
    x = np.random.default_rng(c).standard_normal(shape).astype(dtype)
    pt, pl = 1, 2
    xp = np.full((n, h + 3, w + 5, c), np.nan, dtype)
    _stage_rows(x, pt, pl, xp, TARGET.lanes(dtype))
    expected = np.zeros_like(xp)
    expected[:, pt:pt + h, pl:pl + w, :] = x.transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(xp, expected)


@pytest.mark.parametrize("shape, stride, pad", [
    ((2, 3, 70, 70), (2, 2), (1, 1)),
    ((1, 2, 80, 67), (2, 2), (3, 3)),  # odd width, odd padding
    ((1, 1, 66, 130), (2, 2), (2, 1)),
    ((1, 2, 64, 64), (2, 2), (0, 1)),
    ((2, 3, 9, 10), (2, 2), (0, 0)),
    ((1, 2, 11, 13), (3, 2), (2, 1)),
    ((2, 2, 8, 90), (2, 3), (1, 1)),
    ((1, 1, 3, 2), (2, 2), (1, 2)),  # padding wider than the image
])
def test_phase_split_places_every_value_and_zeros_around(shape, stride, pad):
    """The space-to-depth phases against NumPy's: padded image, reshaped and transposed."""
    from convbench.cpu.staging.phases import split_phases

    (n, c, h, w), (sh, sw), (pt, pl) = shape, stride, pad
    x = np.random.default_rng(w).standard_normal(shape).astype(np.float32)
    hs, ws = -(-(h + 2 * pt) // sh), -(-(w + 2 * pl) // sw)
    xs = np.full((n, c * sh * sw, hs, ws), np.nan, np.float32)
    split_phases(x, xs, sh, sw, pt, pl)
    padded = np.zeros((n, c, hs * sh, ws * sw), np.float32)
    padded[:, :, pt:pt + h, pl:pl + w] = x[:, :, :hs * sh - pt, :ws * sw - pl]
    expected = padded.reshape(n, c, hs, sh, ws, sw).transpose(0, 1, 3, 5, 2, 4)
    np.testing.assert_array_equal(xs, expected.reshape(xs.shape))


@pytest.mark.parametrize("make", [workspace.empty, workspace.zeros])
def test_large_workspace_starts_on_a_cache_line(make):
    for count in (workspace.ALIGN_FROM_BYTES // 4, 300_001, 1 << 20):
        arrays = [make((count,), np.float32) for _ in range(4)]  # several, as a call holds
        for arr in arrays:
            assert arr.ctypes.data % workspace.ALIGN_BYTES == 0
            assert arr.shape == (count,) and arr.flags.c_contiguous and arr.flags.writeable
        if make is workspace.zeros:
            assert not any(arr.any() for arr in arrays)
    shaped = make((3, 7, 1001), np.float64)
    assert shaped.shape == (3, 7, 1001) and shaped.dtype == np.float64


@njit
def _lane_pair(x, tw, y, z):
    lane_dft(x, 0, tw, 0, y, 0)
    lane_idft(y, 0, tw, 0, z, 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lane_dft_transforms_across_lanes_and_back(dtype):
    """DFT across a vector's lanes after a lane-wise twiddle, bit-reversed out; the inverse
    takes that order back to natural lanes and removes the twiddle (times the lane count)."""
    lanes = TARGET.lanes(dtype)
    rng = np.random.default_rng(lanes)
    values = rng.standard_normal(lanes) + 1j * rng.standard_normal(lanes)
    twiddle = np.exp(1j * rng.uniform(0, 2 * np.pi, lanes))
    split = lambda z: np.concatenate([z.real, z.imag]).astype(dtype)  # noqa: E731
    y, z = np.zeros(2 * lanes, dtype), np.zeros(2 * lanes, dtype)
    _lane_pair(split(values), split(twiddle), y, z)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    expected = np.fft.fft(values * twiddle)[bit_reversal(lanes)]
    np.testing.assert_allclose(y[:lanes] + 1j * y[lanes:], expected, atol=tol * lanes)
    np.testing.assert_allclose((z[:lanes] + 1j * z[lanes:]) / lanes, values, atol=tol)


@njit
def _butterflies(x, a, b, wr, wi):
    butterfly_dif(x, a, b, wr, wi)
    butterfly_dit(x, 0, 4 * x.shape[0] // 8, wr, wi)


def test_butterflies_in_frequency_and_in_time():
    lanes = TARGET.lanes(np.float64)
    x = np.random.default_rng(3).standard_normal(8 * lanes)
    first = x.copy()
    butterfly_at = lambda arr, at: arr[at:at + lanes] + 1j * arr[at + lanes:at + 2 * lanes]  # noqa: E731
    w = 0.6 - 0.8j
    a0, b0 = butterfly_at(first, 0), butterfly_at(first, 4 * lanes)
    _butterflies(x, 0, 4 * lanes, w.real, w.imag)
    a1, b1 = a0 + b0, (a0 - b0) * w  # the decimation-in-frequency step, then in time:
    np.testing.assert_allclose(butterfly_at(x, 0), a1 + b1 * w, atol=1e-12)
    np.testing.assert_allclose(butterfly_at(x, 4 * lanes), a1 - b1 * w, atol=1e-12)
    np.testing.assert_array_equal(x[2 * lanes:4 * lanes], first[2 * lanes:4 * lanes])


@njit
def _row(x, x_off, pix, offsets, w, w_off, taps, bias, biased, y, y_pix, count):
    row_taps(x, x_off, pix, offsets, w, w_off, taps, bias, 0, biased, y, 0, y_pix, count)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 6, 7, 8, 9, 14, 23])
@pytest.mark.parametrize("biased", [0, 1])
def test_channel_taps_sum_every_tap_per_pixel(dtype, count, biased):
    """Y[p] = bias + sum_t W[t] X[p*pix + offsets[t]], lane by lane: whole blocks of PIXELS
    pixels and a last block of every shorter length, pixels and taps at their own
    distances."""
    lanes = TARGET.lanes(dtype)
    rng = np.random.default_rng(count + 10 * biased)
    taps, pix, y_pix = 5, 3 * lanes, lanes + 2
    offsets = np.array([0, lanes, 7 * lanes, 11 * lanes + 1, 20 * lanes], np.int64)
    x = rng.standard_normal(count * pix + offsets[-1] + lanes + 3).astype(dtype)
    w = rng.standard_normal((taps + 1) * lanes).astype(dtype)
    bias = rng.standard_normal(lanes).astype(dtype)
    y = np.full(count * y_pix + lanes, 7.0, dtype)
    _row(x, 3, pix, offsets, w, lanes, taps, bias, biased, y, y_pix, count)
    for p in range(count):
        want = bias * biased + sum(w[lanes + t * lanes:lanes + (t + 1) * lanes]
                                   * x[3 + p * pix + o:3 + p * pix + o + lanes]
                                   for t, o in enumerate(offsets))
        np.testing.assert_allclose(y[p * y_pix:p * y_pix + lanes], want, rtol=1e-5, atol=1e-5)
        assert (y[p * y_pix + lanes:(p + 1) * y_pix] == 7.0).all()  # nothing between pixels
