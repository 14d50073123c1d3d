"""The training loop: one process or ``torchrun`` data-parallel, on whatever device is present.

The whole train split lives on the device as uint8; each step gathers a batch there (whole images by
index, or random crops of photos: ``training.batches``), corrupts it there, and takes one optimizer step
on ‖x − f(x̃)‖². Nothing syncs with the host per step except every ``log_every`` steps for the progress
bar. The epoch with the best validation PSNR (on a fixed held-out slice of the train images) is the one
written.
"""

from __future__ import annotations

import math
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from models.architectures import create_model
from models.checkpoint import ModelCard, checkpoint_paths, is_photo_dataset, save_checkpoint
from models.corruptions import (
    PHOTO_GAUSSIAN_SHARE,
    add_mixed_photo_noise,
    corrupt,
    make_generator,
    validate_level,
)
from models.device import channels_last_if_convolutional, dtype_name, is_convolutional, resolve_device
from models.metrics import mse_per_image, psnr_per_image
from training.batches import Batches, PatchBatches, WholeImageBatches, size_groups
from training.config import LOSSES, PRECISIONS, TrainConfig
from training.data import holdout_split, load_split
from training.distributed import DistInfo, gather_digests, init_distributed
from training.evaluate import to_float_batch
from training.graphed import GraphedStep
from training.init_from import initialise_from
from training.photos import PHOTO_VAL_FRACTION, load_photos
from training.resume import Progress, load_training_state, save_training_state

# log-mse's floor: an image's error counts down to 50 dB and no further, so that a patch with next to no noise,
# whose error the model can hardly lower, does not take over the batch's gradient (its weight is 1/(MSE + floor)).
LOG_MSE_FLOOR = 1e-5
# The validation noise, the same for every run whatever its --seed (99 was seed 0's), so that validation figures
# compare across runs and fine-tuning stages: each stage of photo-blind has its own seed.
VALIDATION_NOISE_SEED = 99

# A train split: one N×H×W uint8 tensor (MNIST-style), or a list of H×W ones that may differ in size (photos).
Images = torch.Tensor | list[torch.Tensor]


def build_model(cfg: TrainConfig) -> nn.Module:
    return create_model(cfg.arch, **cfg.arch_args)


def make_optimizer(model: nn.Module, lr: float, capturable: bool = False) -> torch.optim.Optimizer:
    # Fused Adam runs the whole update in a few kernels (CUDA, and CPU since torch 2.4). Capturable keeps its
    # step count on the device, which a CUDA graph needs.
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True, capturable=capturable)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=lr, foreach=True)


def training_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The autocast precision of the forward: ``auto`` keeps a CPU in float32, whose results every card so far
    records (bf16 there is opt-in: 3-4x faster on AMX for a U-Net, measured, but not the shipped recipes' numerics).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, precision)


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    return cfg.lr


def load_train_images(cfg: TrainConfig, device: torch.device) -> tuple[Images, Images]:
    """(train, held-out validation) images on ``device``: whole images both, photos as lists of them."""
    if not is_photo_dataset(cfg.dataset):
        images, _ = load_split(cfg.dataset, "train", cfg.data_root)
        if cfg.limit:
            images = images[: cfg.limit]
        train_idx, val_idx = holdout_split(len(images), max_val=cfg.val_images)
        return images[train_idx].to(device), images[val_idx].to(device)
    photos = load_photos(cfg.dataset, cfg.data_root)
    if cfg.limit:
        photos = photos[: cfg.limit]
    train_idx, val_idx = holdout_split(len(photos), PHOTO_VAL_FRACTION, max_val=cfg.val_images)
    return [photos[i].to(device) for i in train_idx], [photos[i].to(device) for i in val_idx]


def make_batches(cfg: TrainConfig, train_images: Images, info: DistInfo, device: torch.device) -> Batches:
    """The clean batches of every step: crops for ``--patch-size``, else whole images (which must share a size)."""
    per_rank_batch = max(1, cfg.batch_size // info.world_size)
    if cfg.patch_size is None:
        if not isinstance(train_images, torch.Tensor):
            raise ValueError(f"--dataset {cfg.dataset} is a photo data set: give --patch-size (e.g. 64)")
        if cfg.saturate:
            raise ValueError("--saturate stretches the contrast of patches: give --patch-size too, or leave it out")
        return WholeImageBatches(train_images, per_rank_batch, cfg.seed, info.rank, info.world_size)
    if not 0.0 <= cfg.saturate <= 1.0:
        raise ValueError(f"--saturate is a fraction of the patches, in [0, 1], not {cfg.saturate}")
    if cfg.steps_per_epoch is not None and cfg.steps_per_epoch < 1:
        raise ValueError(f"--steps-per-epoch must be 1 or more, not {cfg.steps_per_epoch}")
    images = list(train_images)
    steps = cfg.steps_per_epoch or PatchBatches.default_steps(images, cfg.patch_size, per_rank_batch * info.world_size)
    return PatchBatches(images, cfg.patch_size, per_rank_batch, steps, cfg.seed, info.rank, device, cfg.saturate)


@torch.inference_mode()
def validation_psnr(model: nn.Module, val_images: Images, cfg: TrainConfig) -> float:
    """Mean PSNR on the held-out slice, under the training noise drawn with ``VALIDATION_NOISE_SEED``.

    Photos of different sizes are denoised a group of one size at a time.
    """
    device = val_images.device if isinstance(val_images, torch.Tensor) else val_images[0].device
    generator = make_generator(VALIDATION_NOISE_SEED, device)
    channels_last = is_convolutional(model)
    total = torch.zeros((), device=device)
    chunks = val_images.split(1000) if isinstance(val_images, torch.Tensor) else size_groups(val_images)
    for chunk in chunks:
        clean = to_float_batch(chunk)
        # The noise as registered, whatever --gaussian-share: validation figures compare across runs and stages.
        noisy = corrupt(clean, cfg.noise, cfg.noise_level, generator)
        total += psnr_per_image(model(prepare(noisy, channels_last)).float(), clean).sum()
    return total.item() / len(val_images)


def add_training_noise(clean: torch.Tensor, cfg: TrainConfig, generator: torch.Generator | None) -> torch.Tensor:
    """The training noise (``--noise`` at ``--level``, with ``--gaussian-share`` and ``--faint-share`` for
    ``mixed_photo``)."""
    if cfg.gaussian_share is not None or cfg.faint_share is not None:
        gaussian_share = PHOTO_GAUSSIAN_SHARE if cfg.gaussian_share is None else cfg.gaussian_share
        return add_mixed_photo_noise(
            clean, cfg.noise_level, generator, gaussian_share=gaussian_share, faint_share=cfg.faint_share or 0.0
        )
    return corrupt(clean, cfg.noise, cfg.noise_level, generator)


def training_loss(out: torch.Tensor, clean: torch.Tensor, loss: str) -> torch.Tensor:
    """``--loss``: the batch's MSE, or the mean of each image's 10·log10(MSE + ``LOG_MSE_FLOOR``)."""
    if loss == "mse":
        return F.mse_loss(out, clean)
    if loss == "log-mse":
        return 10 * torch.log10(mse_per_image(out, clean) + LOG_MSE_FLOOR).mean()
    raise ValueError(f"--loss must be one of {', '.join(LOSSES)}, not {loss!r}")


def prepare(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    # channels-last pays for convolutions (oneDNN and cuDNN both prefer NHWC); MLPs just flatten.
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train(cfg: TrainConfig) -> ModelCard | None:
    """Train and write the best epoch's checkpoint; returns its card on rank 0."""
    if cfg.noise != "none":
        validate_level(cfg.noise_level)
    if cfg.val_images < 0:
        raise ValueError(f"--val-images must be 0 or more, not {cfg.val_images}")
    if cfg.loss not in LOSSES:
        raise ValueError(f"--loss must be one of {', '.join(LOSSES)}, not {cfg.loss!r}")
    for flag, share in (("--gaussian-share", cfg.gaussian_share), ("--faint-share", cfg.faint_share)):
        if share is None:
            continue
        if cfg.noise != "mixed_photo":
            raise ValueError(f"{flag} shares out mixed_photo noise; --noise {cfg.noise} has no share")
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{flag} is a fraction of the patches, in [0, 1], not {share}")
    info = init_distributed(cfg.device)
    device = resolve_device(cfg.device, info.local_rank)
    if cfg.cuda_graphs and (device.type != "cuda" or info.world_size > 1):
        raise ValueError(f"--cuda-graphs needs a CUDA device and one process, not {device} × {info.world_size}")
    torch.manual_seed(cfg.seed)
    train_images, val_images = load_train_images(cfg, device)
    batches = make_batches(cfg, train_images, info, device)

    model = channels_last_if_convolutional(build_model(cfg).to(device))
    channels_last = is_convolutional(model)  # decided by what the model is, not by its name
    init_record = initialise_from(model, cfg.init_from) if cfg.init_from else None
    optimizer = make_optimizer(model, cfg.lr, capturable=cfg.cuda_graphs)
    state_path = Path(cfg.out + ".resume")
    state_path.parent.mkdir(parents=True, exist_ok=True)
    progress = Progress(best_state={k: v.detach().clone() for k, v in model.state_dict().items()})
    if cfg.resume:
        progress = load_training_state(state_path, model, optimizer)
    best, best_state, history = progress.best, progress.best_state, progress.history
    ddp_model: nn.Module = model
    if info.world_size > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    dtype = training_dtype(cfg.precision, device)
    use_bf16 = dtype == torch.bfloat16

    def train_step(clean: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        noisy = prepare(add_training_noise(clean, cfg, generator), channels_last)
        # No cast cache: a CUDA graph must not keep the capture's casts (each weight is cast once a step anyway).
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16, cache_enabled=False):
            out = ddp_model(noisy)
        loss = training_loss(out.float(), clean, cfg.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    graphed = GraphedStep(train_step, model, optimizer) if cfg.cuda_graphs else None
    steps = batches.steps
    started = time.perf_counter() - progress.elapsed_s  # a resumed run's time includes its earlier processes
    for epoch in range(progress.epoch, cfg.epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, epoch)
        noise_seed = (cfg.seed * 1000 + epoch) * 64 + info.rank
        noise_gen = make_generator(noise_seed, device)
        if graphed is not None:
            torch.cuda.manual_seed(noise_seed)  # a graph draws from the default generator, the graph-safe one
        model.train()
        running = torch.zeros((), device=device)
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not info.is_main, unit="step")
        tick, seen = time.perf_counter(), 0
        for step, clean in enumerate(batches.epoch(epoch)):
            running += graphed(clean) if graphed is not None else train_step(clean, noise_gen)
            seen += len(clean) * info.world_size
            if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
                rate = seen / (time.perf_counter() - tick)
                bar.set_postfix(loss=f"{running.item() / (step + 1):.4f}", img_s=f"{rate:,.0f}")
                bar.update(step + 1 - bar.n)
        bar.close()
        train_loss = running.item() / steps  # waits for the device, so the time below is the epoch's work
        train_s = round(time.perf_counter() - tick, 3)
        model.eval()
        # With no held-out slice every epoch counts as the best so far: the last one is written.
        val = validation_psnr(model, val_images, cfg) if len(val_images) else math.inf
        history.append(
            {"epoch": epoch + 1, "train_loss": train_loss, "val_psnr_db": finite_or_none(val), "train_s": train_s}
        )
        if info.is_main:
            shown = f"val PSNR {val:.2f} dB" if math.isfinite(val) else "no validation"
            print(f"epoch {epoch + 1}: train loss {history[-1]['train_loss']:.5f}, {shown}", flush=True)
        if val >= best["psnr"]:
            best = {"psnr": val, "epoch": epoch + 1}
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if info.is_main:
            elapsed = time.perf_counter() - started
            save_training_state(state_path, model, optimizer, Progress(epoch + 1, best, best_state, history, elapsed))
    wall = time.perf_counter() - started

    digests = gather_digests(best_state, info)
    card = None
    if info.is_main:
        model.load_state_dict(best_state)
        card = save_checkpoint(
            model,
            cfg.out,
            architecture=cfg.arch,
            dataset=cfg.dataset,
            noise=cfg.noise,
            noise_level=cfg.noise_level if cfg.noise != "none" else 0.0,
            epochs=cfg.epochs,
            best_epoch=int(best["epoch"]),
            seed=cfg.seed,
            training={
                "command": cfg.command,
                "config": {**{k: v for k, v in asdict(cfg).items() if k != "command"}, "level": cfg.noise_level},
                "device": device_name(device),
                "precision": dtype_name(dtype),
                "world_size": info.world_size,
                "rank_weight_digests": digests,
                "wall_time_s": round(wall, 1),
                "train_images": len(train_images),
                "steps_per_epoch": steps,
                "val_images": len(val_images),
                "val_psnr_db": finite_or_none(round(float(best["psnr"]), 3)),
                "history": history,
                **({"init_from": init_record} if init_record else {}),
            },
        )
        for p in (state_path.with_suffix(".resume.safetensors"), state_path.with_suffix(".resume.meta")):
            p.unlink(missing_ok=True)
        weights = checkpoint_paths(cfg.out)[0]
        print(f"wrote {weights} (epoch {best['epoch']}, val PSNR {best['psnr']:.2f} dB, {wall:.0f} s)")
    if info.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return card


def finite_or_none(value: float) -> float | None:
    """JSON has no infinity: an epoch with no validation figure records null."""
    return value if math.isfinite(value) else None


def torch_threads() -> str:
    """``1 thread``, ``2 threads``: torch's intra-op threads, as cards and the report state them."""
    threads = torch.get_num_threads()
    return f"{threads} thread{'s' * (threads != 1)}"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch_threads()})"
