"""Photo models on nearly clean photos: faint Gaussian noise and JPEG compression, against the noisy input.

The panel ``dae-eval`` scores (σ 15 / 25 / 50) says nothing of the photos people send most: faint noise or
none. For each image of a folder this adds Gaussian noise of σ 1, 2, 3, 5 and 10 /255 as ``dae-eval`` does
(``training.photo_eval.noisy_photo``: unclipped, the same seed, so its rows are ``dae-eval``'s) and, apart,
saves it as a quality-90 JPEG with Pillow and no noise; ``dae-eval``'s panel comes after them, to show what a
model gave up for the faint ones. It prints the mean PSNR
in and out and the mean and worst gain over the input, for one or more checkpoints on the very same inputs.
Choose between models on held-out train400 images, never on a test set. Figures are in docs/benchmarks.md
("Photos: quality", "Nearly clean photos").

    python -m bench.faint_photos --folder ../shared/data/natural/set12 checkpoints/photo-blind
"""

from __future__ import annotations

import argparse
import io

import numpy as np
import torch
from PIL import Image

from models.checkpoint import load_checkpoint
from models.metrics import psnr_per_image
from training.evaluate import EVAL_SEED, to_float_batch
from training.photo_eval import PHOTO_PANEL, load_test_photos, noisy_photo, photo_key

FAINT_SIGMAS = (1, 2, 3, 5, 10)  # in 8-bit units: σ/255
JPEG_QUALITY = 90


def as_jpeg(clean: torch.Tensor, quality: int = JPEG_QUALITY) -> torch.Tensor:
    """A 1×1×H×W image in [0, 1] after a round trip through an 8-bit JPEG of that quality."""
    buffer = io.BytesIO()
    Image.fromarray((clean[0, 0] * 255).round().byte().numpy()).save(buffer, "JPEG", quality=quality)
    with Image.open(buffer) as image:
        return to_float_batch(torch.from_numpy(np.array(image))[None])  # a copy: torch wants a writable array


def faint_inputs(image: torch.Tensor, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clean image (1×1×H×W) of one H×W uint8 photo and its inputs by kind: faint Gaussian, a JPEG, and
    ``dae-eval``'s panel, each noise drawn as ``dae-eval`` draws it for image ``index``."""
    clean = to_float_batch(image[None])
    inputs = {f"jpeg q{JPEG_QUALITY}": as_jpeg(clean)}
    for noise, level in [("gaussian", sigma / 255) for sigma in FAINT_SIGMAS] + list(PHOTO_PANEL):
        inputs[photo_key(noise, level)] = noisy_photo(image, noise, level, EVAL_SEED, index)[1]
    return clean, inputs


def gains(model: torch.nn.Module, images: list[torch.Tensor]) -> dict[str, np.ndarray]:
    """Per input kind, rows of (PSNR in, PSNR out) over the images, both clamped to [0, 1]."""
    rows: dict[str, list[tuple[float, float]]] = {}
    for index, image in enumerate(images):
        clean, inputs = faint_inputs(image, index)
        for kind, noisy in inputs.items():
            with torch.inference_mode():
                out = model(noisy).clamp(0, 1)
            rows.setdefault(kind, []).append(
                (float(psnr_per_image(noisy.clamp(0, 1), clean)), float(psnr_per_image(out, clean)))
            )
    return {kind: np.array(pairs) for kind, pairs in rows.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint stems, e.g. checkpoints/photo-blind")
    parser.add_argument("--folder", required=True, help="a folder of photos (read as 8-bit grey)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images, by name")
    args = parser.parse_args(argv)
    photos = load_test_photos(args.folder, ".", args.limit)
    print(f"{len(photos.images)} images in {photos.folder}; gain = PSNR out - PSNR in, dB")
    print(f"{'checkpoint':28s} {'input':17s} {'PSNR in':>8s} {'out':>7s} {'gain':>7s} {'worst':>7s}")
    for stem in args.checkpoints:
        model, _ = load_checkpoint(stem)
        for kind, rows in gains(model.eval(), photos.images).items():
            gain = rows[:, 1] - rows[:, 0]
            print(
                f"{stem:28s} {kind:17s} {rows[:, 0].mean():8.2f} {rows[:, 1].mean():7.2f} "
                f"{gain.mean():+7.2f} {gain.min():+7.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
