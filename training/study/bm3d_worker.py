"""BM3D on a chunk of images, in a module that imports only numpy and bm3d.

Worker processes are spawned (not forked: the parent holds torch's thread pools), so each one imports
the module of the function it runs; keeping that module free of torch makes a worker start in a second.
"""

from __future__ import annotations

import numpy as np


def bm3d_chunk(args: tuple[np.ndarray, float]) -> np.ndarray:
    """Denoise each image of ``(images N×H×W, σ)`` with BM3D given the noise σ."""
    import bm3d

    images, sigma = args
    profile = bm3d.BM3DProfile()
    profile.num_threads = 1  # the pool gives the parallelism; BM3D's own threads cost more than they save here
    return np.stack([bm3d.bm3d(image, sigma_psd=sigma, profile=profile) for image in images])
