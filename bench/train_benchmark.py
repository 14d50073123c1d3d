"""The reference job (reference MLP, Gaussian 0.3, batch 128, Adam 1e-3, 10 epochs) two ways, side by side.

Both train on all 60,000 train images and keep the last epoch (``dae-train --val-images 0``): the
reference loop holds nothing out and selects nothing, so holding out 5,000 would be a different job.
Each runs as a whole process, timed from launch to exit (Python start, torch import and data loading
included): the reference tutorial's loop (``bench/reference_loop.py``) and ``dae-train``. Both models are
then scored with the same evaluator (full MNIST test split, noise seed 1234).

    python -m bench.train_benchmark --data-root ../shared/data        (make bench-train)
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import device_description, write_section
from models.checkpoint import load_checkpoint
from training.data import SPLIT_FILES, find_idx_file, load_split
from training.evaluate import evaluate

REPO = Path(__file__).resolve().parents[1]


def torchvision_layout(data_root: Path, into: Path) -> Path:
    """torchvision's MNIST reads uncompressed files from ``MNIST/raw``: lay a copy out there."""
    raw = into / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for names in SPLIT_FILES.values():
        for name in names:
            src = find_idx_file(data_root, "mnist", name)
            if src is None:
                raise SystemExit(f"missing {name} under {data_root}")
            opener = gzip.open if src.suffix == ".gz" else open
            with opener(src, "rb") as f, open(raw / name, "wb") as g:
                shutil.copyfileobj(f, g)
    return into


def run_process(cmd: list[str]) -> float:
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    data_root = Path(args.data_root).resolve()
    work = Path(tempfile.mkdtemp(prefix="dae-bench-"))
    tv_root = torchvision_layout(data_root, work / "tv")

    reference_s = run_process(
        [sys.executable, "bench/reference_loop.py", "--data-root", str(tv_root), "--out", str(work / "reference"),
         "--epochs", str(args.epochs)]
    )  # fmt: skip
    dae_cmd = ["dae-train", "--dataset", "mnist", "--data-root", str(data_root), "--arch", "mlp", "--noise", "gaussian",
               "--level", "0.3", "--epochs", str(args.epochs), "--batch-size", "128", "--lr", "1e-3", "--seed", "0",
               "--val-images", "0",
               "--device", args.device, "--out", str(work / "dae")]  # fmt: skip
    dae_s = run_process([str(Path(sys.executable).parent / "dae-train"), *dae_cmd[1:]])

    test_images, _ = load_split("mnist", "test", data_root)
    rows = []
    for name, seconds, n_images in (
        ("reference loop (torchvision + DataLoader)", reference_s, 60000 * args.epochs),
        ("dae-train", dae_s, None),
    ):
        model, card = load_checkpoint(work / ("reference" if name.startswith("ref") else "dae"))
        n_images = n_images or card.training["train_images"] * args.epochs
        psnr = evaluate(model, test_images, "gaussian", 0.3)["psnr_db"]
        rows.append((name, seconds, n_images / seconds, psnr))
    ratio = rows[0][1] / rows[1][1]

    device = device_description(args.device)
    lines = [
        f"Device: {device}. Reference job: reference MLP, Gaussian σ 0.3, batch 128, Adam 1e-3, {args.epochs} epochs.",
        "Whole process, launch to exit; images/s = training images × epochs / process seconds;",
        "test PSNR on the full MNIST test split, noise seed 1234, same evaluator for both.",
        "",
        "| loop | process s | images/s | test PSNR dB |",
        "| --- | ---: | ---: | ---: |",
        *[f"| {n} | {s:.1f} | {r:,.0f} | {q:.2f} |" for n, s, r, q in rows],
        "",
        f"`dae-train` is **{ratio:.2f}×** faster than the reference loop, whole process against whole process.",
        "",
        f"Command: `python -m bench.train_benchmark --data-root {args.data_root}` (or `make bench-train`).",
        f"dae-train command: `{' '.join(dae_cmd)}`.",
    ]
    print("\n".join(lines))
    write_section(f"Training: the reference job ({device.split(',')[0]})", "\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
