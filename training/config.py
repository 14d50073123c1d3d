"""What one training run is: ``TrainConfig``, plain data; ``dae-train``'s options are built from its fields
(``training.cli``), and ``training.train.train`` runs it."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from typing import Any

from models.architectures import list_models
from models.corruptions import DEFAULT_LEVELS, FAINT_SIGMA, NOISE_TYPES, PHOTO_GAUSSIAN_SHARE
from training.data import DATASETS
from training.photos import PHOTO_DATASETS

PRECISIONS = ("auto", "float32", "bfloat16")  # --precision: the spellings of DAE_INFERENCE_DTYPE
LOSSES = ("mse", "log-mse")


@dataclass
class TrainConfig:
    """One training run. ``dae-train``'s options are made from these fields: defaults, help and choices live here.

    ``metadata`` holds the help, the choices (a callable is asked when the parser is built, so every
    registered architecture is one), and ``flag``, ``required`` or ``cli: False`` where the option differs.
    """

    dataset: str = field(
        default="mnist",
        metadata={
            "help": f"the data set: {', '.join(DATASETS)} (IDX files), {', '.join(PHOTO_DATASETS)} (photos, "
            "under --data-root) or the path of a folder of images (PNG, JPEG, …; read as 8-bit grayscale)"
        },
    )
    data_root: str = field(default="data", metadata={"help": "folder holding the data sets"})
    arch: str = field(default="mlp", metadata={"help": "architecture, by registered name", "choices": list_models})
    arch_args: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "an argument of the architecture's builder, e.g. channels=32 (VALUE is read as JSON where it "
            "parses, else as a string); repeat for more; the others keep the builder's defaults",
            "flag": "--arch-arg",
        },
    )
    noise: str = field(default="gaussian", metadata={"help": "the corruption trained on", "choices": NOISE_TYPES})
    level: float | None = field(default=None, metadata={"help": "noise level (default: the noise's reference default)"})
    epochs: int = field(default=10, metadata={"help": "passes over the train images (see --steps-per-epoch)"})
    batch_size: int = field(default=128, metadata={"help": "images per optimizer step, over all processes"})
    patch_size: int | None = field(
        default=None, metadata={"help": "train on random square crops of this side (photo data sets)"}
    )
    saturate: float = field(
        default=0.0,
        metadata={
            "help": "fraction of the patches whose contrast is stretched until parts clip to pure black or white "
            "(photo data sets): teaches a model that masking noise drops pixels to 0 that a black region is not "
            "missing pixels"
        },
    )
    gaussian_share: float | None = field(
        default=None,
        metadata={
            "help": "with --noise mixed_photo: the fraction of patches given Gaussian noise, the rest split evenly "
            f"between salt & pepper and masking (default {PHOTO_GAUSSIAN_SHARE}; validation keeps the default)"
        },
    )
    faint_share: float | None = field(
        default=None,
        metadata={
            "help": "with --noise mixed_photo: the fraction of the Gaussian patches whose σ is drawn up to "
            f"{round(FAINT_SIGMA * 255)}/255 rather than up to --level, so that a nearly clean photo keeps its texture "
            "(default none; validation keeps the default)"
        },
    )
    steps_per_epoch: int | None = field(
        default=None,
        metadata={
            "help": "steps per epoch for patch training; default: one pass worth of patches over the train images"
        },
    )
    loss: str = field(
        default="mse",
        metadata={
            "help": "mse: the batch's mean squared error ‖x − f(x̃)‖²; log-mse: the mean over the batch of each image's "
            "10·log10(MSE + 1e-5), minus its PSNR, so that a faint-noise patch's small error weighs as much as a "
            "heavy one's (mean PSNR is what dae-eval reports)",
            "choices": LOSSES,
        },
    )
    lr: float = field(default=1e-3, metadata={"help": "Adam's learning rate"})
    schedule: str = field(
        default="constant",
        metadata={"help": "cosine decays the learning rate to zero over the run", "choices": ("constant", "cosine")},
    )
    val_images: int = field(
        default=5000,
        metadata={
            "help": "train images held out for validation PSNR and best-epoch selection "
            "(0: train on all, keep the last)"
        },
    )
    seed: int = field(default=0, metadata={"help": "seeds the initial weights, the batch order and the noise"})
    out: str = field(
        default="checkpoints/model",
        metadata={"help": "checkpoint path (stem; .safetensors and .json are written)", "required": True},
    )
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    precision: str = field(
        default="auto",
        metadata={
            "help": "the forward's compute precision under autocast (weights and optimizer stay float32); auto: "
            "bfloat16 on CUDA, float32 on a CPU; bfloat16 on a CPU with native bf16 (AMX, AVX-512-BF16) trains a "
            "U-Net 3-4x faster",
            "choices": PRECISIONS,
        },
    )
    resume: bool = field(default=False, metadata={"help": "continue an interrupted run from its saved state"})
    cuda_graphs: bool = field(
        default=False,
        metadata={
            "help": "replay each training step as one captured CUDA graph (CUDA, one process): a small model's "
            "eager steps are bound by kernel launches (training.graphed)"
        },
    )
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "start from this checkpoint's weights (fine-tuning; a fresh optimizer and schedule); "
            "--arch and --arch-arg must describe the same model, or the same grown by unet-res blocks"
        },
    )
    limit: int | None = field(default=None, metadata={"help": "use only the first N train images (smoke runs)"})
    log_every: int = field(default=25, metadata={"help": "steps between progress-bar updates"})
    # The command line recorded in the card: the one given, not an option of its own.
    command: str = field(default_factory=lambda: shlex.join(["dae-train", *sys.argv[1:]]), metadata={"cli": False})

    @property
    def noise_level(self) -> float:
        """The level trained at: the one given, else the noise's reference default."""
        return DEFAULT_LEVELS[self.noise] if self.level is None else self.level
