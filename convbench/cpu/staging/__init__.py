"""Input staged into the layout a kernel reads: one zero-padded row (``rows``), and a strided
layer's space-to-depth phases (``phases``)."""
