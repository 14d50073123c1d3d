"""The noise a request asks for, pinned down (type, level, seed), and ``/corrupt``'s whole path. No HTTP here."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from models.corruptions import NOISES, corrupt, make_generator
from service.encoding import encode_picture
from service.images import load_picture, open_upload, run_sized

MAX_SEED = 2**32 - 1  # numpy's seed range, and exact in JavaScript
DIGIT_SIZE = (28, 28)  # (height, width) of the images the digit models were trained on


@dataclass(frozen=True)
class NoiseRequest:
    """The noise a request asks for: its seed chosen (a random one, reported, when none was given), its level
    perhaps left to the image (``for_image``)."""

    type: str
    level: float | None
    seed: int

    @classmethod
    def choose(cls, noise: str, level: float | None, seed: int | None) -> NoiseRequest:
        return cls(noise, level, random.randrange(2**31) if seed is None else seed)

    @classmethod
    def for_batch(
        cls, count: int, noise: str | None, level: float | None, seed: int | None
    ) -> list[NoiseRequest | None]:
        """One request per image of a batch request: with a seed, image i uses seed + i (reproducible, yet no two
        images share a noise pattern); without one, each draws its own."""
        if noise is None:
            return [None] * count
        if seed is None:
            return [cls.choose(noise, level, None) for _ in range(count)]
        return [cls.choose(noise, level, (seed + i) % (MAX_SEED + 1)) for i in range(count)]

    def for_image(self, width: int, height: int) -> NoiseSpec:
        """Pinned for an image of this size: a level left out is the noise's reference default for a 28×28 digit
        and its photo level for any other image (Gaussian 0.1 rather than 0.3: σ 76/255 is past what the photo
        model was trained on, and a first try at it would show the model at its worst)."""
        if self.level is not None:
            return NoiseSpec(self.type, self.level, self.seed)
        noise = NOISES[self.type]
        level = noise.default_level if (height, width) == DIGIT_SIZE else noise.photo_level
        return NoiseSpec(self.type, level, self.seed)


@dataclass(frozen=True)
class NoiseSpec:
    """A corruption fully pinned down: the same spec on the same image gives the same bytes."""

    type: str
    level: float
    seed: int

    def apply(self, clean: np.ndarray) -> np.ndarray:
        """Corrupt an H×W plane or C×H×W planes on the CPU, from a CPU generator: the same seed gives the same
        noise on any machine. The planes of a colour image are one image to the noise (``mixed`` draws one
        type and level for all three), each pixel of each plane drawn on its own."""
        x = torch.from_numpy(np.ascontiguousarray(clean))
        batch = x[None, None] if x.dim() == 2 else x[None]
        return corrupt(batch, self.type, self.level, make_generator(self.seed)).reshape(x.shape).numpy()


async def corrupt_upload(data: bytes, noise: NoiseRequest, max_pixels: int) -> tuple[bytes, NoiseSpec]:
    """/corrupt: the upload with the noise applied, as a PNG of the upload's own size and kind (grey or colour,
    alpha and 16 bits kept), and the noise as applied."""
    image = await open_upload(data, max_pixels)
    width, height = image.size
    spec = noise.for_image(width, height)

    def work() -> bytes:
        picture = load_picture(image)
        return encode_picture(spec.apply(picture.planes), picture)

    return await run_sized(width * height, work), spec
