"""Denoising-autoencoder architectures, built by name from one registry.

Every model maps a float tensor N×1×H×W in [0, 1] to a tensor of the same shape in [0, 1]:
``denoised = model(noisy)``. Adding an architecture is one builder function plus ``@register_model``.
Each model class records ``input_size``: ``(28, 28)`` for fixed-size models, ``None`` for any size.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ModelBuilder = Callable[..., nn.Module]
MODEL_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Add a builder to the registry under ``name`` (decorator)."""

    def wrap(builder: ModelBuilder) -> ModelBuilder:
        if name in MODEL_REGISTRY:
            raise ValueError(f"architecture {name!r} is already registered")
        MODEL_REGISTRY[name] = builder
        return builder

    return wrap


def list_models() -> list[str]:
    return sorted(MODEL_REGISTRY)


def model_arguments(name: str) -> dict[str, Any]:
    """The keyword arguments the builder of ``name`` takes, with their defaults (the one place they live)."""
    if name not in MODEL_REGISTRY:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(list_models())}")
    parameters = inspect.signature(MODEL_REGISTRY[name]).parameters.values()
    return {p.name: p.default for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_model_arguments(name: str, arguments: Mapping[str, Any]) -> None:
    """Refuse arguments the builder does not take, naming those it does (not a TypeError from deep inside)."""
    valid = model_arguments(name)
    takes_any = any(p.kind == p.VAR_KEYWORD for p in inspect.signature(MODEL_REGISTRY[name]).parameters.values())
    unknown = sorted(set(arguments) - set(valid))
    if unknown and not takes_any:
        raise ValueError(
            f"architecture {name!r} takes no argument {', '.join(map(repr, unknown))}; "
            f"its arguments: {', '.join(valid) or 'none'}"
        )


def create_model(name: str, **hyperparameters: Any) -> nn.Module:
    """Build the architecture ``name`` with the given hyper-parameters.

    A model that does not record its ``hyperparameters`` gets the builder's arguments (defaults filled
    in), so that its card can rebuild it.
    """
    check_model_arguments(name, hyperparameters)
    model = MODEL_REGISTRY[name](**hyperparameters)
    if not hasattr(model, "hyperparameters"):
        # nn.Module's annotations allow only tensors and modules as attributes; a plain dict is fine at run time.
        model.hyperparameters = {**model_arguments(name), **hyperparameters}  # type: ignore[assignment]
    return model


class MLPAutoencoder(nn.Module):
    """The reference model: 784→256→128→64→128→256→784, ReLU on every hidden layer, Sigmoid out."""

    def __init__(self, hidden: tuple[int, ...] = (256, 128, 64), image_size: int = 28) -> None:
        super().__init__()
        self.input_size: tuple[int, int] | None = (image_size, image_size)
        self.hyperparameters = {"hidden": list(hidden), "image_size": image_size}
        widths = [image_size * image_size, *hidden]
        encoder: list[nn.Module] = []
        for n_in, n_out in pairwise(widths):
            encoder += [nn.Linear(n_in, n_out), nn.ReLU()]
        decoder: list[nn.Module] = []
        rev = widths[::-1]
        for n_in, n_out in pairwise(rev):
            decoder += [nn.Linear(n_in, n_out), nn.ReLU()]
        decoder[-1] = nn.Sigmoid()  # the output layer is a sigmoid, not a ReLU
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The latent code (N×64 for the reference widths)."""
        return self.encoder(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x)).view_as(x)


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """conv-ReLU-conv added to its input. The second convolution starts at zero, so a new block is the identity:
    a trained model grown by blocks computes what it computed before (``dae-train --init-from``), and training
    starts from its figures rather than from noise."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        last = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True), last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UNetDenoiser(nn.Module):
    """A fully convolutional encoder-decoder with skip connections, for 1-channel images of any size.

    ``depth`` max-pool levels, doubling the width at each; the decoder upsamples with transposed
    convolutions and concatenates the encoder features of the same scale. The skips carry the fine
    detail a bottleneck loses, which is why this beats a plain stack of convolutions at the same
    noise. Inputs whose sides are not multiples of 2**depth are padded by reflection and cropped back.
    ``blocks`` residual blocks after each decoder level add depth where the output is formed (none by default).
    """

    def __init__(self, channels: int = 24, depth: int = 2, blocks: int = 0) -> None:
        super().__init__()
        self.input_size: tuple[int, int] | None = None
        self.hyperparameters = {"channels": channels, "depth": depth}
        widths = [channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(
            _conv_block(c_in, c_out) for c_in, c_out in zip([1, *widths[:-2]], widths[:-1], strict=True)
        )
        self.bottleneck = _conv_block(widths[-2], widths[-1])
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.up = nn.ModuleList(_conv_block(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        # Empty when blocks is 0: no parameters, so the models and checkpoints from before blocks are unchanged.
        self.refine = nn.ModuleList(
            nn.Sequential(*(ResidualBlock(widths[i]) for _ in range(blocks))) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], 1, 1)
        self.multiple = 2**depth

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The head's output, unclamped, at the input's size."""
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % self.multiple, -w % self.multiple
        if pad_h or pad_w:
            # reflect needs the pad smaller than the side; replicate covers the tiny images
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for upsample, block, refine, skip in zip(self.upsample, self.up, self.refine, reversed(skips), strict=True):
            x = refine(block(torch.cat([upsample(x), skip], dim=1)))
        return self.head(x)[..., :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.features(x)
        # A linear head, clamped only outside training: a sigmoid head here saturated at 0 on MNIST's
        # black background within a few dozen steps and the whole network stopped learning.
        return out if self.training else out.clamp(0.0, 1.0)


class ResidualUNet(UNetDenoiser):
    """The U-Net for photos: it predicts the noise and subtracts it, ``denoised = noisy − f(noisy)``.

    The same encoder-decoder (no batch normalisation: its batch statistics would differ between 64×64
    training patches and whole photos), ``depth`` poolings so ``depth + 1`` levels. Learning the residual
    is the DnCNN observation: the noise is a simpler function of the noisy image than the clean photo is.
    The head starts at zero, so an untrained model is the identity and training starts from the noisy PSNR.
    """

    def __init__(self, channels: int = 32, depth: int = 2, blocks: int = 0) -> None:
        super().__init__(channels, depth, blocks)
        if blocks:  # recorded only when used: the cards from before blocks rebuild as they are
            self.hyperparameters["blocks"] = blocks
        nn.init.zeros_(self.head.weight)
        if self.head.bias is not None:
            nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # An image is in [0, 1]: noise that pushed values past it (the papers' unclipped Gaussian noise) is
        # clipped first, as in every image the service receives and every patch training draws. Without it,
        # values the model never saw cost it 10 dB at σ 50 on Set12 (15.4 against 25.3 dB).
        x = x.clamp(0.0, 1.0)
        out = x - self.features(x)
        return out if self.training else out.clamp(0.0, 1.0)


@register_model("mlp")
def mlp(hidden: tuple[int, ...] | list[int] = (256, 128, 64), image_size: int = 28) -> nn.Module:
    return MLPAutoencoder(tuple(hidden), image_size)


@register_model("conv")
def conv(channels: int = 24, depth: int = 2) -> nn.Module:
    return UNetDenoiser(channels, depth)


@register_model("unet-res")
def unet_res(channels: int = 32, depth: int = 2, blocks: int = 0) -> nn.Module:
    return ResidualUNet(channels, depth, blocks)


class LevelAwareUNet(UNetDenoiser):
    """The U-Net told the noise level, as FFDNet is: a second input channel holds the level at every pixel.

    Input N×2×H×W (the noisy image, then the level map), output N×1×H×W. It is the study's control for
    blindness: the same network as ``conv`` with the one thing a blind model must guess given to it. It
    cannot serve a plain image (nothing says its level), so it is trained and scored by ``training.study``.
    """

    def __init__(self, channels: int = 24, depth: int = 2) -> None:
        super().__init__(channels, depth)
        self.input_channels = 2
        self.down[0] = _conv_block(2, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 2:
            raise ValueError(
                f"conv-level takes the image and its noise-level map (2 channels), got {x.shape[1]}; train it with "
                "`python -m training.study.level_aware` (dae-train's options), which feeds it the level"
            )
        return super().forward(x)


@register_model("conv-level")
def conv_level(channels: int = 24, depth: int = 2) -> nn.Module:
    return LevelAwareUNet(channels, depth)
