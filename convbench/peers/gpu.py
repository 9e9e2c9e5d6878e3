"""GPU peers: cuDNN through PyTorch and a cuFFT FFT convolution through CuPy, registered only
where the package imports and sees a GPU (the simulator has neither)."""
from __future__ import annotations

import contextlib
import importlib.util

import numpy as np

from ..arith import sampled
from ..devices import simulator_enabled
from ..registry import Algorithm, register
from ..spec import ConvSpec, PoolSpec
from .layout import dilated_kernel, padded


def _torch_cuda():
    if simulator_enabled() or importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch if torch.cuda.is_available() else None


def _as_torch(torch, a):
    """Zero-copy view of a device array, or an upload of a host array."""
    if hasattr(a, "__cuda_array_interface__"):
        return torch.as_tensor(a, device="cuda")
    return torch.from_numpy(np.ascontiguousarray(a)).cuda()


def _back(a_in, t):
    """Device result for device input (through __cuda_array_interface__), host otherwise."""
    if hasattr(a_in, "__cuda_array_interface__"):
        from numba import cuda

        return cuda.as_cuda_array(t.contiguous())
    return t.cpu().numpy()


@contextlib.contextmanager
def _fp32_only(torch):
    """TF32 off for the peer's own call only (true float32, as ours), the user's flags restored
    after."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _register_torch(torch) -> None:
    from .torch_peer import conv_tensors, pool_tensor

    def conv(x, w, spec: ConvSpec, b=None):
        tb = None if b is None else _as_torch(torch, b)
        with _fp32_only(torch):
            return _back(x, conv_tensors(_as_torch(torch, x), _as_torch(torch, w), spec, tb))

    def pool(x, spec: PoolSpec):
        return _back(x, pool_tensor(_as_torch(torch, x), spec))

    register(Algorithm("cudnn", "conv2d", "cuda", conv, is_peer=True, compiles=False, library="torch",
                       error_model="fft", bound_by="blas", memory_visible=False, fused_bias=True,
                       description=f"torch {torch.__version__} F.conv2d (cuDNN, no TF32)"))
    for op in ("max_pool2d", "avg_pool2d"):
        register(Algorithm("torch", op, "cuda", pool, is_peer=True, compiles=False, library="torch",
                           bound_by="memory", memory_visible=False,
                           description=f"torch {torch.__version__} F.{op}"))


def _register_cupy() -> None:
    if simulator_enabled() or importlib.util.find_spec("cupy") is None:
        return
    import cupy

    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return
    except Exception:
        return

    def cufft_conv(x, w, spec: ConvSpec):
        """rfft2 of padded planes and kernels (cuFFT), einsum over channels, irfft2, crop."""
        cx = padded(cupy.asarray(x), spec, cupy)
        cw = dilated_kernel(cupy.asarray(w), spec, cupy)
        hp, wp = spec.padded_size
        xf = cupy.fft.rfft2(cx, s=(hp, wp))
        wf = cupy.fft.rfft2(cw, s=(hp, wp))
        y = cupy.fft.irfft2(cupy.einsum("ncpq,kcpq->nkpq", xf, wf.conj()), s=(hp, wp))
        (sh, sw), (ho, wo) = spec.stride, spec.out_size
        y = cupy.ascontiguousarray(y[:, :, sampled(0, ho, sh), sampled(0, wo, sw)])
        y = y.astype(spec.dtype, copy=False)
        if hasattr(x, "__cuda_array_interface__"):
            from numba import cuda

            return cuda.as_cuda_array(y)
        return cupy.asnumpy(y)

    register(Algorithm("cufft", "conv2d", "cuda", cufft_conv, is_peer=True, compiles=False, library="cupy",
                       supports=lambda spec: spec.groups == 1, limits="groups = 1 only",
                       error_model="fft", bound_by="fft", memory_visible=False, family="fft",
                       description=f"CuPy {cupy.__version__} cuFFT rfft2 + einsum"))


_torch = _torch_cuda()
if _torch is not None:
    _register_torch(_torch)
_register_cupy()
