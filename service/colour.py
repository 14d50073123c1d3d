"""Colour photos through a grey photo model: two estimates of the picture, merged in an opponent colour space.

The photo model denoises one grey plane at a time. Denoising R, G and B on their own throws away what
colour photos have most of: the three channels share their edges while their noise is independent. So a
colour photo is denoised twice, as its R, G, B planes and as its opponent planes (luma, the mean of the
three, and two chroma differences; colour BM3D works in the same space), and the two are merged there:
chroma from the opponent planes (smooth, where the model removes far more noise than on R, G or B), luma
as the mean of the opponent luma and the luma of the denoised R, G, B (two estimates whose errors are
largely independent). Except where the photo's noise was cut off by its range: a user's photo is 8-bit, so
strong noise on a dark or saturated colour is clipped at 0 or 255, and in the opponent planes that clipped
noise is a kind the model never met (on R, G, B alone it has: it trained on clipped planes). There the
merge leans on the R, G, B estimate, by the share of clipped pixels around each pixel.

Not for impulse noise. Salt-and-pepper or masking drawn on one channel lands on all three opponent planes
as a noise the model never met, and its answer there is far worse than on R, G, B alone (salt-and-pepper
at 0.05 on the photos below: 46.0 dB on the planes alone, 25.8 merged). So the R, G, B planes go first,
and where their answer shows impulses, it is the answer: pixels at 0 or 1 in a channel that the model
moved by more than ``IMPULSE_JUMP``, on more than ``IMPULSE_SHARE`` of the picture. Clipped Gaussian noise
up to σ 55/255 makes at most 0.02 % such pixels on those photos; salt-and-pepper at 0.01 or masking at
0.02, the sparsest measured, at least 0.34 %.

Chosen with ``photo-blind`` on colour photos not used for the report (scikit-image's motorcycle and ihc, a
retina crop, matplotlib's Grace Hopper and the test fixture's coffee crop; Gaussian noise, 8-bit PNG), mean
RGB PSNR against denoising the planes alone: +1.0, +1.4, +1.0, +0.9 and +0.7 dB at σ 2, 5, 15, 25 and 50
/255, and better on every one of the five photos at every one of those σ, for twice the forwards. A photo
with no noise comes back at 50.1 dB instead of 51.6, both far past what an eye can tell
(docs/benchmarks.md, "Photos: colour").
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# Orthogonal rows, so noise that is independent across R, G, B stays independent across the opponent planes;
# each row maps [0, 1] into a range of width 1, which the offsets move onto [0, 1], the range the model knows.
_OPPONENT = np.array([[1 / 3, 1 / 3, 1 / 3], [1 / 2, 0, -1 / 2], [1 / 4, -1 / 2, 1 / 4]], dtype=np.float32)
_FROM_OPPONENT = np.linalg.inv(_OPPONENT).astype(np.float32)
_OFFSET = np.array([0.0, 0.5, 0.5], dtype=np.float32)[:, None, None]
CLIPPED_WINDOW = 9  # the side of the square over which the share of clipped pixels is counted
IMPULSE_JUMP = 0.6  # about 3σ of the strongest Gaussian noise the photo model is trained for (55/255)
IMPULSE_SHARE = 0.001


# In place where a new array would be the same numbers: a colour photo's planes are 12 bytes a pixel, and a
# 12-megapixel photo's temporaries were most of what the service held for it.
def to_opponent(rgb: np.ndarray) -> np.ndarray:
    """3×H×W RGB planes in [0, 1] → luma and two chroma planes, each in [0, 1] (grey has chroma 0.5)."""
    opponent = np.tensordot(_OPPONENT, rgb, axes=1)
    opponent += _OFFSET
    return opponent


def from_opponent(opponent: np.ndarray) -> np.ndarray:
    """The inverse of ``to_opponent``, clipped to [0, 1]."""
    return _from_opponent_overwriting(opponent.copy())


def _from_opponent_overwriting(opponent: np.ndarray) -> np.ndarray:
    opponent -= _OFFSET
    rgb = np.tensordot(_FROM_OPPONENT, opponent, axes=1)
    return np.clip(rgb, 0.0, 1.0, out=rgb)


def at_range_ends(rgb: np.ndarray) -> np.ndarray:
    """Where a channel is at 0 or 1: clipped noise, or an impulse."""
    return (rgb <= 0.0) | (rgb >= 1.0)


def has_impulses(noisy_rgb: np.ndarray, denoised_rgb: np.ndarray) -> bool:
    """Whether the model's answer on the R, G, B planes shows impulse noise (see the module's docstring)."""
    impulses = sum(  # plane by plane: a colour photo's temporaries are large
        int(np.count_nonzero(at_range_ends(noisy) & (np.abs(noisy - denoised) > IMPULSE_JUMP)))
        for noisy, denoised in zip(noisy_rgb, denoised_rgb, strict=True)
    )
    return impulses / noisy_rgb.size > IMPULSE_SHARE


def clipped_share(rgb: np.ndarray) -> np.ndarray:
    """H×W: the share of pixels around each one (a ``CLIPPED_WINDOW`` square) with a channel at 0 or 1."""
    clipped = torch.from_numpy(at_range_ends(rgb).any(axis=0).astype(np.float32))
    share = F.avg_pool2d(clipped[None, None], CLIPPED_WINDOW, 1, CLIPPED_WINDOW // 2, count_include_pad=False)
    return share[0, 0].numpy()


def merge_colour_estimates(
    noisy_rgb: np.ndarray, noisy_opponent: np.ndarray, denoised_rgb: np.ndarray, denoised_opponent: np.ndarray
) -> np.ndarray:
    """One RGB picture from the two estimates of ``noisy_rgb`` (``noisy_opponent`` is its ``to_opponent``; see
    the module's docstring). A chroma plane that came in constant, as in a grey photo saved as RGB, has no
    noise to remove and is kept as it came: the model's tiny error on a flat plane would tint the whole picture."""
    from_rgb = to_opponent(denoised_rgb)
    merged = denoised_opponent.copy()
    merged[0] = (from_rgb[0] + denoised_opponent[0]) / 2
    from_rgb -= merged
    from_rgb *= clipped_share(noisy_rgb)
    merged += from_rgb
    for plane in (1, 2):
        if np.ptp(noisy_opponent[plane]) == 0:
            merged[plane] = noisy_opponent[plane]
    return _from_opponent_overwriting(merged)
