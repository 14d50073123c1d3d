"""Device choice shared by training and serving: CUDA where present, unless forced."""

from __future__ import annotations

import torch


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
