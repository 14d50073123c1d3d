"""Device facts shared by training and serving: CUDA where present unless forced, native bf16, convolutions."""

from __future__ import annotations

import torch
from torch import nn


def resolve_device(requested: str | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; asking for CUDA where there is none is an error."""
    requested = (requested or "auto").lower()
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {requested!r} was asked for but CUDA is not available here; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
    elif device.type != "cpu":
        raise RuntimeError(f"unsupported device {requested!r}; use auto, cpu or cuda")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions and matmuls in hardware here (AVX-512-BF16 or AMX).

    Elsewhere bf16 is emulated and slower than float32, so it is only worth asking for where this holds.
    """
    try:  # a private helper, but the one torch itself uses to choose bf16 kernels
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` → ``bfloat16``: the spelling of ``DAE_INFERENCE_DTYPE`` and of ``/models``."""
    return str(dtype).removeprefix("torch.")


def is_convolutional(model: nn.Module) -> bool:
    """Whether ``model`` has a convolution: channels-last memory and bf16 pay off for it, and its forward is long."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def channels_last_if_convolutional(model: nn.Module) -> nn.Module:
    """The model with channels-last weights if it has convolutions (in place; the same values in another layout).

    Channels-last weights are what let oneDNN and cuDNN pick their NHWC convolution kernels, the fast ones.
    """
    return model.to(memory_format=torch.channels_last) if is_convolutional(model) else model
