"""Where each training step's clean batch comes from: one class per kind of data set.

Both keep the train images on the device as uint8 and hand the loop float N×1×H×W batches in [0, 1],
``steps`` of them per epoch, drawn from generators seeded by (seed, epoch, rank): a run is reproducible
from its seed and ``--resume`` picks up an epoch exactly where it would have been.

* ``WholeImageBatches`` (MNIST-style sets of equal-size images): each epoch is one pass over the train
  images in a seeded random order, every rank taking its own stride of the same permutation.
* ``PatchBatches`` (photo sets): each step draws random square crops of random train images, each crop
  under a random one of the 8 symmetries of the square, a chosen share of them with their contrast
  stretched until parts clip to pure black or white; an epoch is a fixed number of steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Protocol

import torch

from models.corruptions import make_generator
from training.evaluate import to_float_batch

PATCH_SEED_OFFSET = 1 << 40  # keeps the crop generators' seeds apart from the noise generators'


class Batches(Protocol):
    steps: int

    def epoch(self, epoch: int) -> Iterator[torch.Tensor]: ...


class WholeImageBatches:
    """Whole images (N×H×W uint8 on the device), one pass per epoch in a seeded order, sharded over ranks."""

    def __init__(self, images: torch.Tensor, batch: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.images, self.batch, self.seed, self.rank, self.world_size = images, batch, seed, rank, world_size
        self.n = len(images) - len(images) % world_size  # equal shards keep ranks in step
        self.steps = -(-self.n // world_size // batch)

    def epoch(self, epoch: int) -> Iterator[torch.Tensor]:
        # The permutation is the same on every rank (same seed); each takes its own stride of it.
        perm = torch.randperm(len(self.images), generator=make_generator(self.seed * 1000 + epoch))[: self.n]
        shard = perm[self.rank :: self.world_size].to(self.images.device)
        for idx in shard.split(self.batch):
            yield to_float_batch(self.images[idx])


class PatchBatches:
    """Random ``patch_size``² crops of train images that may differ in size, ``batch`` per step.

    Each crop picks an image uniformly, a top-left corner uniformly among those where the crop fits,
    and one of the 8 symmetries of the square: a transpose, then a flip of the rows and one of the
    columns, each with even odds (together: the rotations by 0, 90, 180 and 270°, each with or without a
    mirror). The images are stored flat, one after another, so a whole batch of crops is one gather.

    ``saturate`` is the share of crops whose contrast is stretched about a random grey level by a random
    gain (``stretch_contrast``). train400 has almost no pure black: a model trained on it with masking noise
    (dropped pixels are 0) took the black background of a clean photo for missing pixels and painted it
    grey (scikit-image's astronaut came back at 23.9 dB). Stretched crops show it black and white regions
    that are real.
    """

    def __init__(
        self,
        images: Sequence[torch.Tensor],
        patch_size: int,
        batch: int,
        steps: int,
        seed: int,
        rank: int = 0,
        device: torch.device | str = "cpu",
        saturate: float = 0.0,
    ) -> None:
        if patch_size < 1:
            raise ValueError(f"--patch-size must be 1 or more, not {patch_size}")
        small = [tuple(im.shape) for im in images if min(im.shape) < patch_size]
        if small:
            raise ValueError(
                f"--patch-size {patch_size} does not fit {len(small)} of the {len(images)} train images "
                f"(the smallest is {min(small, key=lambda s: s[0] * s[1])})"
            )
        self.patch_size, self.batch, self.steps, self.seed, self.rank = patch_size, batch, steps, seed, rank
        self.saturate = saturate
        self.device = torch.device(device)
        self.count = len(images)
        self.pixels = torch.cat([im.reshape(-1) for im in images]).to(self.device)
        sizes = torch.tensor([tuple(im.shape) for im in images], dtype=torch.long)
        areas = sizes[:, 0] * sizes[:, 1]
        self.starts = (torch.cumsum(areas, 0) - areas).to(self.device)
        self.sizes = sizes.to(self.device)
        self.offsets = torch.arange(patch_size, device=self.device)

    @staticmethod
    def default_steps(images: Sequence[torch.Tensor], patch_size: int, batch: int) -> int:
        """Steps for about one pass worth of patches: the train pixels over the pixels of one step."""
        pixels = sum(im.numel() for im in images)
        return max(1, math.ceil(pixels / patch_size**2 / batch))

    def crops(self, generator: torch.Generator) -> torch.Tensor:
        """One batch of augmented crops, B×p×p uint8."""
        b, p, device = self.batch, self.patch_size, self.device
        which = torch.randint(self.count, (b,), generator=generator, device=device)
        room = self.sizes[which] - p + 1  # B×2: the corners where the crop fits
        corner = (torch.rand((b, 2), generator=generator, device=device) * room).long().minimum(room - 1)
        symmetry = torch.randint(8, (b, 1, 1), generator=generator, device=device)
        transpose, flip_rows, flip_cols = ((symmetry & bit).bool() for bit in (1, 2, 4))
        i, j = self.offsets.view(1, p, 1), self.offsets.view(1, 1, p)
        # Output pixel (i, j) reads the crop at (r, c): the symmetry is applied to the indices, not the pixels.
        r, c = torch.where(transpose, j, i), torch.where(transpose, i, j)
        r, c = torch.where(flip_rows, p - 1 - r, r), torch.where(flip_cols, p - 1 - c, c)
        rows, cols = corner[:, 0].view(b, 1, 1) + r, corner[:, 1].view(b, 1, 1) + c
        width = self.sizes[which, 1].view(b, 1, 1)
        return self.pixels[self.starts[which].view(b, 1, 1) + rows * width + cols]

    def epoch(self, epoch: int) -> Iterator[torch.Tensor]:
        generator = make_generator((self.seed * 1000 + epoch) * 64 + self.rank + PATCH_SEED_OFFSET, self.device)
        for _ in range(self.steps):
            batch = to_float_batch(self.crops(generator))
            # Only when asked: stretching draws from the generator, and a recipe without it keeps its crops.
            yield stretch_contrast(batch, self.saturate, generator) if self.saturate else batch


MAX_GAIN = 4.0  # the steepest stretch: a quarter of the grey range maps onto all of it


def stretch_contrast(batch: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """``share`` of the N×1×H×W images in [0, 1] stretched about a grey level c (uniform in [0, 1]) by a gain g
    (uniform in [1, ``MAX_GAIN``]): ``clamp(c + g (x − c), 0, 1)``, which turns their darkest and brightest
    parts into pure black and white regions; the others as they are."""
    n, device = batch.shape[0], batch.device
    chosen = torch.rand((n, 1, 1, 1), generator=generator, device=device) < share
    centre = torch.rand((n, 1, 1, 1), generator=generator, device=device, dtype=batch.dtype)
    gain = 1 + (MAX_GAIN - 1) * torch.rand((n, 1, 1, 1), generator=generator, device=device, dtype=batch.dtype)
    stretched = (centre + gain * (batch - centre)).clamp(0.0, 1.0)
    return torch.where(chosen, stretched, batch)


def size_groups(images: Sequence[torch.Tensor], max_pixels: int = 1 << 20) -> Iterator[torch.Tensor]:
    """Images of possibly different sizes as N×H×W stacks of one size each, about ``max_pixels`` at most.

    Groups follow the order in which each size first appears, images within a group their given order.
    """
    by_size: dict[tuple[int, ...], list[torch.Tensor]] = {}
    for image in images:
        by_size.setdefault(tuple(image.shape), []).append(image)
    for (h, w), group in by_size.items():
        per_chunk = max(1, max_pixels // (h * w))
        for start in range(0, len(group), per_chunk):
            yield torch.stack(group[start : start + per_chunk])
