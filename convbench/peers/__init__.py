"""Well-known baselines registered as peers (``is_peer=True``): SciPy, NumPy and PyTorch on
the CPU (``cpu.py``), cuDNN and CuPy's cuFFT on the GPU (``gpu.py``). The registry imports them
only when a caller asks for peers or names one, and each registers only where its package
imports."""

# scipy.signal.choose_conv_method's answers, as the names of the peers that run them
SCIPY_METHODS = {"direct": "scipy_direct", "fft": "scipy_fft"}
