"""How much of an image a pooled map keeps: the pooling experiment's third axis.

The image is Grace Hopper's portrait from matplotlib's bundled sample data (a real photograph,
so neighbouring pixels are correlated as in feature maps; random noise would make every pool
look equally lossy). Each pooled value is spread back over its window (overlapping windows
average), and the figure is the fraction of the image's variance this reconstruction explains:
1.0 keeps everything, 0.0 keeps no more than the mean.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..reference import pool_reference
from ..spec import PoolSpec, pool_spec


@lru_cache(maxsize=1)
def sample_image() -> np.ndarray:
    """Grace Hopper, grey, float64 in [0, 1], 600x512."""
    import matplotlib.cbook
    import matplotlib.pyplot as plt

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        rgb = plt.imread(f, format="jpg")
    return rgb[..., :3].astype(np.float64).mean(axis=2) / 255.0


def information_kept(spec: PoolSpec) -> float:
    """Fraction of the sample image's variance explained by its pooled map spread back."""
    img = sample_image()
    h, w = img.shape
    image_spec = pool_spec(spec.kind, (1, 1, h, w), spec.size, stride=spec.stride,
                           padding=spec.pad, count_include_pad=spec.count_include_pad,
                           dtype="float64")
    pooled = pool_reference(img[None, None], image_spec)[0, 0]
    ph, pw = spec.pad
    total = np.zeros((h + 2 * ph, w + 2 * pw))
    count = np.zeros_like(total)
    (sh, sw), (kh, kw) = spec.stride, spec.size
    ho, wo = pooled.shape
    for i in range(kh):  # each window offset adds every pooled value to one pixel of its window
        for j in range(kw):
            total[i:i + (ho - 1) * sh + 1:sh, j:j + (wo - 1) * sw + 1:sw] += pooled
            count[i:i + (ho - 1) * sh + 1:sh, j:j + (wo - 1) * sw + 1:sw] += 1
    total, count = total[ph:ph + h, pw:pw + w], count[ph:ph + h, pw:pw + w]
    recon = np.where(count > 0, total / np.maximum(count, 1), img.mean())
    return float(1.0 - ((img - recon) ** 2).sum() / ((img - img.mean()) ** 2).sum())
