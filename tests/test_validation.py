"""Every bad input raises ValueError/TypeError naming the argument, before any kernel runs."""
import re

import numpy as np
import pytest
import scipy.signal

import convbench as cb

X = np.ones((1, 2, 6, 6), np.float32)
W = np.ones((3, 2, 3, 3), np.float32)


def raises(exc, *words):
    """pytest.raises asserting the type and that the message names every one of ``words``
    (in any order)."""
    return pytest.raises(exc, match="".join(f"(?=[\\s\\S]*{re.escape(w)})" for w in words))


def test_x_wrong_rank():
    with raises(ValueError, "x", "4-D", "(6, 6)"):
        cb.conv2d(np.ones((6, 6), np.float32), W)


def test_w_wrong_rank():
    with raises(ValueError, "w", "4-D"):
        cb.conv2d(X, np.ones((3, 3), np.float32))


def test_channel_mismatch():
    with raises(ValueError, "channels", "w.shape[1]", "x.shape[1]"):
        cb.conv2d(X, np.ones((3, 5, 3, 3), np.float32))


def test_empty_dimension():
    with raises(ValueError, "x", "C, H, W >= 1"):
        cb.conv2d(np.ones((1, 0, 6, 6), np.float32), np.ones((3, 0, 3, 3), np.float32))


@pytest.mark.parametrize("name", ["stride", "dilation"])
def test_non_positive_stride_or_dilation(name):
    with raises(ValueError, name, ">= 1"):
        cb.conv2d(X, W, **{name: 0})


def test_negative_padding():
    with raises(ValueError, "padding", ">= 0"):
        cb.conv2d(X, W, padding=-1)


def test_unknown_padding_string():
    with raises(ValueError, "padding", "'same'", "'valid'"):
        cb.conv2d(X, W, padding="full")


def test_same_padding_needs_stride_one():
    with raises(ValueError, "padding='same'", "stride"):
        cb.conv2d(X, W, padding="same", stride=2)


def test_stride_wrong_type():
    with raises(TypeError, "stride"):
        cb.conv2d(X, W, stride=1.5)


def test_output_smaller_than_one_pixel():
    with raises(ValueError, "smaller than 1x1"):
        cb.conv2d(X, np.ones((3, 2, 7, 7), np.float32))


def test_dilated_kernel_larger_than_input():
    with raises(ValueError, "smaller than 1x1", "dilation"):
        cb.conv2d(X, W, dilation=3)


def test_unsupported_dtype():
    with raises(TypeError, "x", "int64", "float32, float64"):
        cb.conv2d(np.ones((1, 2, 6, 6), np.int64), W)


def test_dtype_mismatch():
    with raises(TypeError, "w", "float64", "float32"):
        cb.conv2d(X, W.astype(np.float64))


def test_complex_signal_rejected():
    with raises(TypeError, "in1", "complex128"):
        cb.correlate2d(np.ones((4, 4), complex), np.ones((2, 2)))


def test_unknown_algorithm_lists_the_valid_ones():
    with raises(ValueError, "algorithm", "'strassen'", "direct", "fft", "im2col", "winograd"):
        cb.conv2d(X, W, algorithm="strassen")


def test_unsupported_case_names_the_algorithms_that_can():
    """An algorithm that cannot run a case says so and lists those that can."""
    import dataclasses

    from convbench import registry

    fft = registry.get("conv2d", "cpu", "fft")
    limited = dataclasses.replace(fft, supports=lambda spec: spec.stride == (1, 1),
                                  limits="stride 1 only")
    with registry.registered(limited), raises(ValueError, "'fft'", "stride 1 only", "direct"):
        cb.conv2d(X, W, stride=2, algorithm="fft")


def test_unknown_device():
    with raises(ValueError, "device", "cpu", "cuda"):
        cb.conv2d(X, W, device="tpu")


def test_cuda_without_gpu_explains_simulator(monkeypatch):
    from convbench import devices

    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    with raises(ValueError, "no CUDA GPU", "NUMBA_ENABLE_CUDASIM=1"):
        cb.conv2d(X, W, device="cuda")


def test_workspace_over_limit_refused_before_allocating(monkeypatch):
    monkeypatch.setenv("CONVBENCH_MAX_WORKSPACE", "1K")
    with raises(ValueError, "workspace", "CONVBENCH_MAX_WORKSPACE", "'fft'"):
        cb.conv2d(np.ones((4, 8, 64, 64), np.float32), np.ones((8, 8, 9, 9), np.float32),
                  algorithm="fft")


def test_bad_workspace_limit_value(monkeypatch):
    monkeypatch.setenv("CONVBENCH_MAX_WORKSPACE", "lots")
    with raises(ValueError, "CONVBENCH_MAX_WORKSPACE", "'lots'"):
        cb.conv2d(X, W)


def test_signal_wrong_rank():
    with raises(ValueError, "in1", "2-D"):
        cb.correlate2d(np.ones((1, 4, 4)), np.ones((2, 2)))


def test_signal_unknown_mode():
    with raises(ValueError, "mode", "full", "same", "valid"):
        cb.convolve2d(np.ones((4, 4)), np.ones((2, 2)), mode="circular")


def test_signal_valid_needs_one_input_covering_the_other():
    with raises(ValueError, "mode='valid'", "in1", "in2"):
        cb.correlate2d(np.ones((4, 8)), np.ones((6, 2)), mode="valid")


def test_pool_wrong_rank():
    with raises(ValueError, "x", "4-D"):
        cb.max_pool2d(np.ones((6, 6)), 2)


def test_pool_size_non_positive():
    with raises(ValueError, "size", ">= 1"):
        cb.max_pool2d(X, 0)


def test_pool_padding_over_half_window():
    with raises(ValueError, "padding", "half"):
        cb.avg_pool2d(X, 2, padding=2)


def test_pool_window_larger_than_input():
    with raises(ValueError, "smaller than 1x1"):
        cb.max_pool2d(X, 7)


def test_flip_must_be_bool():
    with raises(TypeError, "flip"):
        cb.conv2d(X, W, flip="yes")


@pytest.mark.parametrize("name, valid, equal_but_invalid", [
    ("stride", 1, 1.0), ("stride", 1, True), ("padding", (1, 1), (1, 1.0)),
    ("dilation", 1, True), ("groups", 1, True), ("flip", False, 0)])
def test_a_remembered_call_lets_no_equal_invalid_value_through(name, valid,
                                                                equal_but_invalid):
    # 1.0 and True equal 1 as dictionary keys; validation refuses them however often the
    # valid argument set was seen before
    cb.conv2d(X, W, **{name: valid})
    cb.conv2d(X, W, **{name: valid})
    with raises(TypeError, name):
        cb.conv2d(X, W, **{name: equal_but_invalid})


@pytest.mark.parametrize("options", [dict(size=2.0), dict(size=2, stride=True),
                                     dict(size=2, padding=True)])
def test_a_remembered_pooling_lets_no_equal_invalid_value_through(options):
    valid = {k: int(v) for k, v in options.items()}
    cb.max_pool2d(X, **valid)
    with raises(TypeError, next(iter(k for k, v in options.items() if type(v) is not int))):
        cb.max_pool2d(X, **options)


def test_workspace_limit_holds_for_a_remembered_call(monkeypatch):
    x, w = np.ones((1, 4, 32, 32), np.float32), np.ones((4, 4, 9, 9), np.float32)
    cb.conv2d(x, w, algorithm="fft")
    cb.conv2d(x, w, algorithm="fft")
    monkeypatch.setenv("CONVBENCH_MAX_WORKSPACE", "1K")
    with raises(ValueError, "workspace", "CONVBENCH_MAX_WORKSPACE", "'fft'"):
        cb.conv2d(x, w, algorithm="fft")


def test_non_array_input():
    with raises(TypeError, "x"):
        cb.conv2d(object(), W)


def test_winograd_refuses_what_it_cannot_compute():
    with raises(ValueError, "'winograd'", "3x3 kernels, stride 1", "direct"):
        cb.conv2d(np.ones((1, 2, 9, 9), np.float32), np.ones((3, 2, 5, 5), np.float32),
                  algorithm="winograd")


def test_nan_in_nan_out():
    x = X.copy()
    x[0, 0, 2, 2] = np.nan
    assert np.isnan(cb.conv2d(x, W, algorithm="direct")).any()


def test_explain_of_an_empty_batch_explains(capsys):
    """N = 0 computes nothing, but its choice is explained (the cost model's descriptor took
    log2 of the batch)."""
    from convbench.cli import main

    assert cb.explain((0, 3, 7, 5), (4, 3, 3, 2)).algorithm.name
    assert main(["explain", "--x", "0,3,7,5", "--w", "4,3,3,2"]) == 0
    assert "pick:" in capsys.readouterr().out


@pytest.mark.parametrize("fill", [np.array(1.5), np.array([1.5]), np.float32(1.5), 2])
def test_fillvalue_takes_what_scipy_takes(fill):
    a = np.random.default_rng(0).random((6, 5))
    k = np.random.default_rng(1).random((3, 2))
    np.testing.assert_allclose(cb.convolve2d(a, k, fillvalue=fill),
                               scipy.signal.convolve2d(a, k, fillvalue=fill), atol=1e-12)


def test_fillvalue_of_several_values_is_refused():
    with pytest.raises(ValueError, match="fillvalue must be a number or an array of one"):
        cb.correlate2d(np.ones((4, 4)), np.ones((2, 2)), fillvalue=np.array([1.0, 2.0]))
