"""Device choice shared by training and serving: CUDA where present, unless forced; and the serving precision."""

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
    """Whether ``model`` has a convolution: its forward is then long enough that serving choices pay off."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def resolve_inference_dtype(requested: str, device: torch.device, model: nn.Module) -> torch.dtype:
    """The precision to serve ``model`` in.

    ``auto`` picks bfloat16 for a convolutional model on a CPU with native bf16 (about 2× the images/s of
    the shipped U-Net, within 0.02 dB PSNR once outputs are 8-bit) and float32 everywhere else: autocast
    casts the weights on every call, which costs a small MLP more than its whole float32 forward, and
    CUDA's float32 path is the one tested there.
    """
    if requested == "float32":
        return torch.float32
    if requested == "bfloat16":
        return torch.bfloat16
    if requested != "auto":
        raise ValueError(f"unknown inference dtype {requested!r}; use auto, float32 or bfloat16")
    native = device.type == "cpu" and is_convolutional(model) and cpu_has_native_bf16()
    return torch.bfloat16 if native else torch.float32
