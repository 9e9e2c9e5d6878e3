"""The pieces of the FFT algorithms (``fft``, ``fft_tiled``): transform sizes and cost features
(``sizes``), the spectra's transforms, layout and products (``spectra``), convbench's own 2-D
real FFT for power-of-two sizes (``real_fft2``) and its vector butterflies and lane DFTs
(``lane_ops``)."""
