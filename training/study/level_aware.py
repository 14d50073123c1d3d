"""Training the noise-level-aware U-Net (``conv-level``): ``mixed`` noise, with each image's level as input.

``dae-train`` cannot train it: its loop hands a model the noisy image alone, and ``mixed`` draws each image's
level inside the corruption. This loop draws the type and level itself (the same distribution as ``mixed``:
a specialist type, level uniform in [0, ``level``]) and feeds the level map as the second channel. Everything
else is ``dae-train``'s: its train/validation split, batches, Adam, schedule, best-epoch choice and card, so
the checkpoint loads and caches like every other model of the study. One process; on a GPU if there is one.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict

import torch
import torch.nn.functional as F

from models.checkpoint import ModelCard, save_checkpoint
from models.corruptions import make_generator, mixed_noise_with_levels
from models.device import dtype_name, resolve_device
from models.metrics import psnr_per_image
from training.config import TrainConfig
from training.distributed import DistInfo
from training.evaluate import to_float_batch
from training.train import (
    build_model,
    device_name,
    load_train_images,
    lr_at,
    make_batches,
    make_optimizer,
    training_dtype,
)


def with_level(noisy: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """The model's input: the noisy image, then a map holding each image's level at every pixel."""
    return torch.cat([noisy, levels.view(-1, 1, 1, 1).expand_as(noisy)], dim=1)


@torch.inference_mode()
def validation_psnr(model: torch.nn.Module, val_images: torch.Tensor, cfg: TrainConfig) -> float:
    generator = make_generator(cfg.seed + 99, val_images.device)  # fixed: every epoch sees the same noise
    total = 0.0
    for chunk in val_images.split(1000):
        clean = to_float_batch(chunk)
        noisy, levels = mixed_noise_with_levels(clean, cfg.noise_level, generator)
        total += psnr_per_image(model(with_level(noisy, levels)).float(), clean).sum().item()
    return total / len(val_images)


def train_level_aware(cfg: TrainConfig) -> ModelCard:
    """Train ``conv-level`` on ``cfg`` (whose noise must be ``mixed``) and write the best epoch's checkpoint."""
    if cfg.noise != "mixed" or cfg.arch != "conv-level":
        raise ValueError(f"the level-aware model trains on mixed noise as conv-level, not {cfg.noise}/{cfg.arch}")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    train_images, val_images = load_train_images(cfg, device)
    assert isinstance(train_images, torch.Tensor) and isinstance(val_images, torch.Tensor)  # digits, not photos
    batches = make_batches(cfg, train_images, DistInfo(), device)
    model = build_model(cfg).to(device)
    optimizer = make_optimizer(model, cfg.lr)
    best, best_epoch, history = -math.inf, 0, []
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    dtype = training_dtype(cfg.precision, device)
    started = time.perf_counter()
    for epoch in range(cfg.epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, epoch)
        generator = make_generator((cfg.seed * 1000 + epoch) * 64, device)  # dae-train's per-epoch stream
        model.train()
        running = torch.zeros((), device=device)  # summed on the device: no host sync per step
        for clean in batches.epoch(epoch):
            noisy, levels = mixed_noise_with_levels(clean, cfg.noise_level, generator)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):  # --precision
                out = model(with_level(noisy, levels))
            loss = F.mse_loss(out.float(), clean)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.detach()
        model.eval()
        val = validation_psnr(model, val_images, cfg) if len(val_images) else math.inf
        history.append({"epoch": epoch + 1, "train_loss": running.item() / batches.steps,
                        "val_psnr_db": val if math.isfinite(val) else None})  # fmt: skip
        print(f"conv-level epoch {epoch + 1}/{cfg.epochs}: val PSNR {val:.2f} dB", flush=True)
        if val >= best:
            best, best_epoch = val, epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return save_checkpoint(
        model, cfg.out, architecture=cfg.arch, dataset=cfg.dataset, noise=cfg.noise, noise_level=cfg.noise_level,
        epochs=cfg.epochs, best_epoch=best_epoch, seed=cfg.seed,
        training={
            "command": cfg.command,
            "config": {**{k: v for k, v in asdict(cfg).items() if k != "command"}, "level": cfg.noise_level},
            "device": device_name(device), "precision": dtype_name(dtype), "world_size": 1,
            "wall_time_s": round(time.perf_counter() - started, 1),
            "train_images": len(train_images), "steps_per_epoch": batches.steps, "val_images": len(val_images),
            "val_psnr_db": round(best, 3) if math.isfinite(best) else None, "history": history,
        },
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m training.study.level_aware`` with ``dae-train``'s options: what a conv-level card records."""
    import shlex
    import sys

    from training.cli import train_config

    argv = sys.argv[1:] if argv is None else argv
    cfg = train_config(argv)
    cfg.command = shlex.join(["python", "-m", "training.study.level_aware", *argv])
    train_level_aware(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
