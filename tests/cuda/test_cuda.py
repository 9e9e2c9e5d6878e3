"""Every CUDA algorithm against the float64 CPU reference.

In the simulator (CI): tiny irregular shapes, and threads-per-block patched small so that every
grid has several blocks in each dimension (ragged edges, halos across block borders). On a real
GPU the same tests also run at full size with the real block shapes.
"""
import numpy as np
import pytest

import convbench as cb
from convbench import registry
from convbench.devices import simulator_enabled
from convbench.reference import random_inputs, reference
from convbench.spec import conv_spec, pool_spec
from convbench.tolerance import check_close, conv_error_bound, pool_error_bound

cuda = pytest.importorskip("numba.cuda")
if not cuda.is_available():
    pytest.skip("no CUDA device and the simulator is off", allow_module_level=True)

from convbench.cuda import arrays, launch, memory  # noqa: E402
from convbench.cuda import direct as cuda_direct  # noqa: E402
from convbench.cuda import fft as cuda_fft  # noqa: E402

SIM = simulator_enabled()
CONV = [a for a in registry.algorithms("conv2d", "cuda") if not a.is_peer]
POOL = registry.algorithms("max_pool2d", "cuda") + registry.algorithms("avg_pool2d", "cuda")
POOL = [a for a in POOL if not a.is_peer]

TINY = [  # (x shape, w shape, kwargs): odd sizes, stride, padding, dilation, flip, groups, bias
    ((1, 2, 7, 9), (5, 2, 3, 2), {}),
    ((2, 1, 6, 5), (3, 1, 2, 3), {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2)}),
    ((1, 3, 5, 6), (2, 3, 3, 3), {"flip": True, "padding": 1, "stride": 2}),
    ((1, 1, 4, 4), (1, 1, 4, 4), {"dtype": "float64"}),  # kernel as large as the input
    ((1, 4, 6, 5), (4, 2, 3, 3), {"groups": 2, "padding": 1, "bias": True}),
    ((2, 3, 7, 6), (4, 3, 3, 3), {"padding": (1, 2, 0, 1), "flip": True, "bias": True}),
    ((2, 3, 7, 6), (6, 1, 3, 2), {"groups": 3, "padding": (1, 0, 1, 1), "stride": (2, 1),
                                  "bias": True, "flip": True}),  # depthwise, multiplier 2
]
FULL = [((8, 16, 64, 64), (16, 16, 9, 9), {}), ((4, 8, 57, 61), (12, 8, 5, 3), {"padding": 2}),
        ((32, 3, 32, 32), (4, 3, 5, 5), {}),
        ((8, 64, 56, 56), (64, 1, 3, 3), {"groups": 64, "padding": 1, "bias": True})]


# Blocks of a few threads, so tiny shapes still span several blocks per grid dimension; FFT
# transforms pass by pass: the simulator crawls through the line kernel's barriers (its waiting
# threads get the GIL back every 5 ms); the line kernel has its own test below, and the check
# command's cases run it.
SMALL = launch.Geometry(direct_tile=4, direct_v1_block=(4, 2), gemm_threads=2,
                        gemm_register_tile=2, gemm_depth=4, unfold_block=(4, 2), fft_threads=8,
                        fft_block=(4, 2), fft_max_line=1, fft_line_threads=4, pool_block=(4, 2),
                        igemm_threads=(2, 2), igemm_register_tile=(2, 2), igemm_depth=4)


@pytest.fixture
def small_blocks():
    """The small geometry in the simulator; the real one on a GPU."""
    with launch.use(SMALL if SIM else launch.DEFAULT):
        yield


def _spec(x_shape, w_shape, kwargs):
    kwargs = dict(kwargs)
    return conv_spec(x_shape, w_shape, dtype=kwargs.pop("dtype", "float32"), **kwargs)


def _conv_case(x_shape, w_shape, kwargs, seed=0):
    spec = _spec(x_shape, w_shape, kwargs)
    x, w, b = random_inputs(spec, seed)
    return spec, x, w, b


@pytest.mark.parametrize("algo,case", [(a, c) for c in TINY + ([] if SIM else FULL)
                                       for a in CONV if a.supports(_spec(*c))], ids=str)
def test_conv_matches_reference(algo, case, small_blocks):
    spec, x, w, b = _conv_case(*case)
    got = algo.call(x, w, spec, b)
    assert isinstance(got, np.ndarray) and got.shape == spec.out_shape
    ok, ratio = check_close(got, reference(spec, x, w, b),
                            conv_error_bound(x, w, spec, algo.error_model, b))
    assert ok, f"{algo.name} on {spec.label()}: error/bound {ratio:.3g}"


def test_every_cuda_algorithm_is_tested_on_some_case():
    assert all(any(a.supports(_spec(*c)) for c in TINY) for a in CONV)


@pytest.mark.parametrize("algo", POOL, ids=lambda a: a.op)
@pytest.mark.parametrize("size,stride,padding", [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 1))])
def test_pool_matches_reference(algo, size, stride, padding, small_blocks):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 7, 6) if SIM else (32, 64, 56, 56)).astype(np.float32)
    spec = pool_spec(algo.op.split("_")[0], x.shape, size, stride=stride, padding=padding)
    ok, ratio = check_close(algo.run(x, spec), reference(spec, x), pool_error_bound(x, spec))
    assert ok, f"{algo.op}: error/bound {ratio:.3g}"


def test_v2_falls_back_to_v1_when_the_tile_does_not_fit():
    spec = conv_spec((1, 1, 40, 40), (1, 1, 30, 30))
    assert not cuda_direct.v2_fits(spec)
    assert cuda_direct.v2_fits(conv_spec((1, 1, 40, 40), (1, 1, 5, 5)))


def test_device_arrays_in_give_device_arrays_out(small_blocks):
    spec, x, w, _ = _conv_case((1, 2, 6, 5), (2, 2, 3, 3), {})
    dx, dw = cuda.to_device(x), cuda.to_device(w)
    y = cb.conv2d(dx, dw, device="cuda", algorithm="direct")
    assert arrays.is_device_array(y)
    np.testing.assert_allclose(y.copy_to_host(), cb.conv2d(x, w, algorithm="direct"),
                               rtol=1e-5, atol=1e-5)
    host = cb.conv2d(x, w, device="cuda", algorithm="direct")
    assert isinstance(host, np.ndarray)


def test_device_array_on_cpu_is_refused():
    spec, x, w, _ = _conv_case((1, 2, 6, 5), (2, 2, 3, 3), {})
    with pytest.raises(TypeError, match="device='cuda'"):
        cb.conv2d(cuda.to_device(x), w)


@pytest.mark.parametrize("algo", CONV, ids=lambda a: a.name)
def test_declared_device_workspace_matches_measured(algo, small_blocks):
    """Measured peak device bytes (EMM plugin on a GPU, allocation helper in the simulator)
    minus the output equals the declared workspace within 10%."""
    case = next(c for c in [((1, 2, 7, 6), (3, 2, 3, 3), {"padding": 1}),
                            ((1, 3, 7, 6), (3, 1, 3, 3), {"padding": 1, "groups": 3})]
                if algo.supports(_spec(*c)))
    spec, x, w, _ = _conv_case(*case)
    dx, dw = cuda.to_device(x), cuda.to_device(w)
    algo.run(dx, dw, spec)  # compile first
    cuda.synchronize()
    before = memory.TRACKER.live
    memory.TRACKER.reset_peak()
    out = algo.run(dx, dw, spec)
    cuda.synchronize()
    measured = memory.TRACKER.peak - before - out.nbytes
    declared = algo.workspace_bytes(spec)
    assert abs(measured - declared) <= 0.10 * max(declared, 1), (declared, measured)


@pytest.mark.parametrize("max_line", [1024, 8], ids=["one-launch-lines", "pass-per-launch"])
@pytest.mark.parametrize("sign", [-1, 1])
def test_stockham_fft_matches_numpy(max_line, sign):
    """Both transform paths (whole lines in shared memory; one launch per pass, here for the
    16-point rows when lines over 8 points take it) against NumPy, both directions."""
    geometry = launch.Geometry(fft_threads=8 if SIM else 256, fft_max_line=max_line,
                               fft_line_threads=4 if SIM else 256)  # several butterflies each
    rng = np.random.default_rng(2)
    a = (rng.standard_normal((3, 8, 16)) + 1j * rng.standard_normal((3, 8, 16))).astype(np.complex128)
    buf, scratch = cuda.to_device(a), cuda.device_array(a.size, a.dtype)
    with launch.use(geometry):
        cuda_fft.fft2(buf, scratch, sign)
    expected = np.fft.fft2(a) if sign < 0 else np.fft.ifft2(a) * a.shape[1] * a.shape[2]
    np.testing.assert_allclose(buf.copy_to_host(), expected, rtol=1e-10, atol=1e-10)


def test_check_command_verifies_every_device(tmp_path, capsys):
    from convbench.bench.check import run_check

    status = run_check(["cpu", "cuda"], tmp_path)
    out = capsys.readouterr().out
    assert status == 0, [line for line in out.splitlines() if line.startswith("FAIL")]
    assert "All results match" in out and "FAIL" not in out
    assert " cuda conv2d     fft " in out and " cpu  conv2d     fft_tiled " in out


@pytest.mark.skipif(SIM, reason="the simulator has no External Memory Management hook; "
                    "its allocations are counted by device_empty (tested above)")
def test_emm_plugin_counts_every_device_allocation():
    """In a fresh process (the plugin must precede every allocation): live bytes follow
    allocations and frees, the peak remembers the high-water mark, and a freed block is
    handed out again for the next allocation of its size."""
    import subprocess
    import sys

    code = (
        "from convbench.cuda import memory; assert memory.install()\n"
        "from numba import cuda; import numpy as np\n"
        "a = cuda.device_array(1 << 20, np.float32); b = cuda.device_array(1 << 18, np.float32)\n"
        "assert memory.TRACKER.live >= (1 << 22) + (1 << 20), memory.TRACKER.live\n"
        "pa = a.device_ctypes_pointer.value\n"
        "del a; import gc; gc.collect(); cuda.current_context().deallocations.clear()\n"
        "assert memory.TRACKER.live < (1 << 22), memory.TRACKER.live\n"
        "assert memory.TRACKER.peak >= (1 << 22) + (1 << 20)\n"
        "c = cuda.device_array(1 << 20, np.float32)  # same size: the cached block again\n"
        "assert c.device_ctypes_pointer.value == pa\n"
        "assert memory.TRACKER.live >= (1 << 22) + (1 << 20), memory.TRACKER.live\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cuda_calibration_fits_every_cuda_algorithm(monkeypatch, tmp_path, small_blocks):
    """`calibrate --device cuda` times and fits each CUDA algorithm (tiny layers here), and
    auto then predicts every CUDA candidate instead of falling back to the rule of thumb."""
    from convbench import auto, costmodel
    from convbench.bench import calibrate as cal

    # single-channel 3x3 layers suit every CUDA algorithm (depthwise and Winograd too); few
    # and small, since the simulator runs each thread in Python: the fit's minimum is lowered
    # to them (what is tested is that every algorithm is timed, fitted and then predicted)
    tiny = [conv_spec((1, c, h, h), (k, c, kh, kh)) for c, h, k, kh in
            [(1, 5, 1, 3), (1, 6, 2, 3), (1, 7, 1, 3), (1, 4, 3, 3), (1, 6, 1, 3)]]
    monkeypatch.setattr(cal, "MIN_LAYERS", len(tiny))
    monkeypatch.setattr(cal, "random_layers", lambda count, seed, max_flops: tiny[:count])
    monkeypatch.setattr(cal, "ROUNDS", 1)  # the simulator is slow; no timing is judged here
    monkeypatch.setattr(cal, "SLOWEST_S", 60.0)
    # one call per timed round: sizing the loop would run each layer once more, in Python
    monkeypatch.setattr(cal.timing, "loops_for", lambda fn, seconds, repeat: (1, 0.0))
    monkeypatch.setattr(costmodel, "calibration_path", lambda: tmp_path / "cost_model.json")
    doc = cal.calibrate(count=len(tiny), devices=("cuda",), say=lambda *a: None)
    names = {a.name for a in CONV}
    assert set(doc["constants"]) == {f"cuda/conv2d/{n}" for n in names}
    choice = auto.choose(tiny[0], "cuda")
    assert all(c.predicted_s is not None for c in choice.candidates), choice
    assert "fastest predicted" in choice.reason
    assert "cpu/conv2d/direct" in auto.model().constants  # the shipped CPU constants stay


def test_fp32_peak_is_lanes_times_two_times_clock():
    from convbench.bench.check import format_table, fp32_peak_gflops

    # an H100 SXM: 132 SMs of 128 FP32 lanes at 1.98 GHz is about 67 TFLOP/s
    assert fp32_peak_gflops(132, 1_980_000, (9, 0)) == pytest.approx(66_908, rel=1e-3)
    assert fp32_peak_gflops(108, 1_410_000, (8, 0)) == pytest.approx(19_492, rel=1e-3)  # A100
    assert fp32_peak_gflops(10, 1_000_000, (99, 0)) == 0  # unknown: no fraction reported
    table = format_table([{"layer": "vgg", "algorithm": "implicit_gemm", "median_ms": 1.0,
                           "gflops": 20_000.0, "fraction_of_fp32_peak": 0.3}])
    assert "fraction_of_fp32_peak" in table.splitlines()[0] and "0.3" in table


def test_cold_and_warm_repeats_time_the_same_call(small_blocks):
    """On a GPU the cold mode overwrites 2x the L2 (a memset) before each evented call; in the
    simulator both fall back to host time. Either way each returns a positive per-call time."""
    from convbench import timing

    spec, x, w, _ = _conv_case((1, 2, 6, 5), (2, 2, 3, 3), {})
    dx, dw = cuda.to_device(x), cuda.to_device(w)
    fn = lambda: cb.conv2d(dx, dw, device="cuda", algorithm="direct")  # noqa: E731
    assert timing.repeat_for("cuda", "warm")(fn, 2) > 0
    assert timing.repeat_for("cuda", "cold")(fn, 2) > 0
    if not SIM:
        assert timing.l2_flush_bytes() >= 2 * (1 << 20)
