"""The prepared form cb.Conv2d: the same results as conv2d, the weight work done once per
input shape, and the same handling of odd inputs."""
import numpy as np
import pytest

import convbench as cb
from convbench import registry

PREPARING = [a for a in cb.algorithms("conv2d", "cpu") if a.prepare is not None]


def test_some_algorithms_prepare_their_weights():
    assert {"fft", "fft_tiled", "winograd"} <= {a.name for a in PREPARING}


CASES = [((5, 4, 3, 3), 1), ((8, 1, 3, 3), 4)]  # (w shape, groups): full, depthwise


@pytest.mark.parametrize("algorithm,wshape,groups", [
    (a, ws, g) for ws, g in CASES for a in ["auto"] + [
        al.name for al in cb.algorithms("conv2d", "cpu") if not al.is_peer
        and al.supports(cb.conv_spec((2, 4, 13, 11), ws, padding=1, groups=g, bias=True))]])
def test_prepared_layer_matches_conv2d(algorithm, wshape, groups, rng):
    x = rng.standard_normal((2, 4, 13, 11)).astype(np.float32)
    w = rng.standard_normal(wshape).astype(np.float32)
    b = rng.standard_normal(wshape[0]).astype(np.float32)
    layer = cb.Conv2d(w, b, padding=1, groups=groups, algorithm=algorithm)
    for batch in (x, x[:1] * 2):  # two input shapes, two plans
        np.testing.assert_allclose(layer(batch), cb.conv2d(batch, w, b, padding=1, groups=groups,
                                                           algorithm=algorithm),
                                   rtol=1e-4, atol=1e-4)
    assert len(layer._plans) == 2


def test_the_weights_are_prepared_once_per_input_shape(rng):
    calls = []
    fft = registry.get("conv2d", "cpu", "fft")

    def counting(w, spec):
        calls.append(spec)
        return fft.prepare(w, spec)

    import dataclasses

    with registry.registered(dataclasses.replace(fft, prepare=counting)):
        layer = cb.Conv2d(rng.standard_normal((3, 2, 7, 7)), algorithm="fft")
        x = rng.standard_normal((1, 2, 20, 20))
        first = layer(x)
        for _ in range(3):
            np.testing.assert_array_equal(layer(x), first)
    assert len(calls) == 1


def test_prepared_auto_still_steers_nonfinite_inputs(rng):
    x = rng.standard_normal((1, 1, 256, 256)).astype(np.float32)
    w = rng.standard_normal((1, 1, 31, 31)).astype(np.float32)
    layer = cb.Conv2d(w)
    layer(x)
    assert layer.plan(x.shape)[1].transform_growth is not None  # an FFT algorithm was chosen
    x[0, 0, 100, 100] = np.nan
    assert np.isnan(layer(x)).sum() == 31 * 31  # the NaN's own window, as direct summation gives


def test_bad_layers_and_inputs_are_refused(rng):
    with pytest.raises(ValueError, match="4-D"):
        cb.Conv2d(np.ones((3, 3)))
    with pytest.raises(ValueError, match="stride"):
        cb.Conv2d(np.ones((2, 2, 3, 3)), stride=0)
    layer = cb.Conv2d(np.ones((2, 2, 3, 3), np.float32))
    with pytest.raises(TypeError, match="dtype"):
        layer(np.ones((1, 2, 5, 5)))
    with pytest.raises(ValueError, match="channels"):
        layer(np.ones((1, 3, 5, 5), np.float32))
    assert layer(np.ones((0, 2, 5, 5), np.float32)).shape == (0, 2, 3, 3)
