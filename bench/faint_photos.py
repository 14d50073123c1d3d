"""Photo models on nearly clean photos: faint Gaussian noise and JPEG compression, against the noisy input.

The panel ``dae-eval`` scores (σ 15 / 25 / 50) says nothing of the photos people send most: faint noise or
none. For each image of a folder this adds Gaussian noise of σ 1, 2, 3, 5 and 10 /255 in the papers'
protocol (unclipped, seeded per image) and, apart, saves it as a quality-90 JPEG with Pillow and no noise;
the panel's noises come after them, to show what a model gave up for the faint ones. It prints the mean PSNR
in and out and the mean and worst gain over the input, for one or more checkpoints on the very same inputs.
Choose between models on held-out train400 images, never on a test set. Figures are in docs/benchmarks.md
("Photos: quality", "Nearly clean photos").

    python -m bench.faint_photos --folder ../shared/data/natural/set12 checkpoints/photo-blind
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.checkpoint import load_checkpoint
from models.corruptions import corrupt, make_generator
from models.metrics import psnr_per_image
from training.photos import image_files, read_gray

SIGMAS = (1, 2, 3, 5, 10, 15, 25, 50)  # in 8-bit units: σ/255
JPEG_QUALITY = 90


def as_jpeg(clean: torch.Tensor, quality: int = JPEG_QUALITY) -> torch.Tensor:
    """An H×W image in [0, 1] after a round trip through an 8-bit JPEG of that quality."""
    buffer = io.BytesIO()
    Image.fromarray((clean * 255).round().byte().numpy()).save(buffer, "JPEG", quality=quality)
    with Image.open(buffer) as image:
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255)


def faint_inputs(clean: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """The inputs one clean H×W image gets: σ/255 Gaussian (not clipped, one draw for every σ), a JPEG, and
    the panel's salt & pepper and masking."""
    draw = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
    inputs = {f"gaussian@{sigma}/255": clean + sigma / 255 * draw for sigma in SIGMAS}
    inputs[f"jpeg q{JPEG_QUALITY}"] = as_jpeg(clean)
    for noise, level in (("salt_pepper", 0.2), ("masking", 0.3)):
        inputs[f"{noise}@{level}"] = corrupt(clean[None, None], noise, level, make_generator(seed))[0, 0]
    return inputs


def gains(model: torch.nn.Module, files: list[Path]) -> dict[str, np.ndarray]:
    """Per input kind, rows of (PSNR in, PSNR out) over the images, the output clamped to [0, 1]."""
    rows: dict[str, list[tuple[float, float]]] = {}
    for index, path in enumerate(files):
        clean = read_gray(path).float()[None, None] / 255
        for kind, noisy in faint_inputs(clean[0, 0], seed=1000 + index).items():
            with torch.inference_mode():
                out = model(noisy[None, None]).clamp(0, 1)
            rows.setdefault(kind, []).append(
                (float(psnr_per_image(noisy[None, None].clamp(0, 1), clean)), float(psnr_per_image(out, clean)))
            )
    return {kind: np.array(pairs) for kind, pairs in rows.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint stems, e.g. checkpoints/photo-blind")
    parser.add_argument("--folder", required=True, help="a folder of photos (read as 8-bit grey)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images, by name")
    args = parser.parse_args(argv)
    files = image_files(Path(args.folder))[: args.limit]
    print(f"{len(files)} images in {args.folder}; gain = PSNR out - PSNR in, dB")
    print(f"{'checkpoint':28s} {'input':17s} {'PSNR in':>8s} {'out':>7s} {'gain':>7s} {'worst':>7s}")
    for stem in args.checkpoints:
        model, _ = load_checkpoint(stem)
        for kind, rows in gains(model.eval(), files).items():
            gain = rows[:, 1] - rows[:, 0]
            print(
                f"{stem:28s} {kind:17s} {rows[:, 0].mean():8.2f} {rows[:, 1].mean():7.2f} "
                f"{gain.mean():+7.2f} {gain.min():+7.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
