"""The hand-vectorised building blocks of the CPU kernels, emitted as vector LLVM IR through
Numba intrinsics: the vector target's IR plumbing (``ir``), the register-blocked GEMM block
(``microkernel``), the FFT algorithms' spectral multiply-accumulate (``spectral_mac``),
Winograd's tile transforms (``winograd_tiles``) and in-register block transposes
(``transpose``)."""
