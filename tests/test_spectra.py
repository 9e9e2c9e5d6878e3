"""The FFT algorithms' spectra against NumPy's FFT, with pocketfft's transforms and with
convbench's own (``line_fft``, power-of-two sizes, frequencies in its own order): packed image
spectra (tiles as further planes, the padding frequencies zero), kernel spectra from their two
factors (dilation, rotation for true convolution), and the inverse of packed products."""
import numpy as np
import pytest

from convbench.cpu.fourier import spectra
from convbench.spec import conv_spec


def _complex(packed: np.ndarray, lay: spectra.Layout) -> np.ndarray:
    """Packed (vectors, qh, A, T, B, 2, lanes) as complex (A, B, T, pitch, qh)."""
    values = packed[..., 0, :] + 1j * packed[..., 1, :]  # (vectors, qh, A, T, B, lanes)
    planes = values.transpose(2, 4, 3, 0, 5, 1)  # (A, B, T, vectors, lanes, qh)
    return planes.reshape(planes.shape[:3] + (lay.pitch, lay.qh))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows,cols,p,q,native", [
    (5, 7, 9, 12, False), (20, 300, 24, 320, False), (64, 64, 64, 64, True),
    (20, 50, 32, 64, True), (100, 30, 128, 32, True)])
def test_image_spectra_are_the_zero_extended_2d_fft(dtype, rows, cols, p, q, native):
    lay = spectra.layout(p, q, dtype)
    assert lay.native == native
    planes = np.random.default_rng(rows).standard_normal((2, 3, 2, rows, cols)).astype(dtype)
    packed = spectra.image_spectra(planes, lay)
    expected = np.fft.rfft2(planes.astype(np.float64), s=(p, q))[:, :, :, lay.order()]
    tol = 1e-4 if dtype == np.float32 else 1e-10
    got = _complex(packed, lay)
    np.testing.assert_allclose(got[:, :, :, :p], expected, atol=tol * np.abs(expected).max())
    assert not got[:, :, :, p:].any()  # the padding frequencies (if any) are zeros


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("p,q", [(21, 18), (32, 16)])
def test_kernel_spectra_factors_multiply_to_the_staged_kernels_fft(flip, dilation, p, q):
    spec = conv_spec((1, 3, 20, 20), (5, 3, 4, 3), flip=flip, dilation=dilation,
                     dtype="float64")
    lay = spectra.layout(p, q, spec.dtype)
    w = np.random.default_rng(dilation).standard_normal(spec.w_shape)
    ws = spectra.kernel_spectra(w, spec, lay, store=True)
    kcp = spectra.padded_kernels(spec)
    assert kcp % 6 == 0 and ws.full.shape == (lay.blocks, lay.qh, kcp, lay.block_cols)
    staged = np.zeros((spec.k, spec.c, p, q))
    taps = w[:, :, ::-1, ::-1] if flip else w
    staged[:, :, ::dilation, ::dilation][:, :, :spec.kh, :spec.kw] = taps
    expected = np.fft.rfft2(staged).reshape(spec.k * spec.c, p, lay.qh)[:, lay.order()]
    full = ws.full.reshape(lay.blocks, lay.qh, kcp, lay.group, 2, lay.lanes)
    values = full[..., 0, :] + 1j * full[..., 1, :]  # (blocks, qh, KCp, group, lanes)
    got = values.transpose(2, 0, 3, 4, 1).reshape(kcp, lay.pitch, lay.qh)
    np.testing.assert_allclose(got[:spec.k * spec.c, :p], expected, atol=1e-10)
    assert not got[spec.k * spec.c:].any()  # the padding kernels are zero


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p,q", [(10, 14), (64, 32), (16, 128)])
def test_output_planes_invert_packed_spectra(dtype, p, q):
    lay = spectra.layout(p, q, dtype)
    planes = np.random.default_rng(5).standard_normal((2, 3, 2, p, q)).astype(dtype)
    packed = spectra.image_spectra(planes, lay)  # (N=2, C=3 as products' K, tiles=2)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(spectra.output_planes(packed, lay), planes, atol=tol)
