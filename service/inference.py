"""One forward pass over a group of same-shaped images, on the model's device, failing only what must fail.

Runs where ``service.placement`` put the model: the event loop, an inference thread or the child process.
On CUDA the batch is staged in pinned host memory and copied both ways without blocking, so the copy
overlaps the launch of the forward. With a bfloat16 ``dtype`` the forward runs under autocast (``service.placement``
says when). A forward that raises is retried on each half of the group, down to
single images: a CUDA out-of-memory error then costs smaller batches rather than every request, and an
input that makes the model raise fails alone while the rest of its batch is answered.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from service.errors import InferenceFailed, ServiceError, TooLarge

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """The model's output for one image and its reconstruction error (model input vs output)."""

    output: np.ndarray  # H×W float32 in [0, 1]
    reconstruction_mse: float


Outcome = Prediction | ServiceError


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's failure (a RuntimeError saying so)."""
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def pinned_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of ``tensor`` in page-locked host memory, the only kind a copy to or from a GPU need not wait for.

    From a GPU tensor the copy is queued on the current stream: synchronize it before reading the result.
    """
    pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    return pinned.copy_(tensor, non_blocking=tensor.is_cuda)


class Runner(Protocol):
    """What a batcher calls: ``InferenceRunner`` here, or ``ProcessRunner`` in the inference process."""

    name: str

    def run(self, inputs: list[np.ndarray]) -> list[Outcome]: ...


class InferenceRunner:
    """Runs ``model`` on stacked inputs; call ``run`` from an inference thread."""

    def __init__(self, name: str, model: nn.Module, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.name = name
        self.model = model
        self.device = device
        self.dtype = dtype  # the forward's compute precision (autocast); inputs and outputs stay float32
        self._cuda = device.type == "cuda"

    def run(self, inputs: list[np.ndarray], threads: int | None = None) -> list[Outcome]:
        """One outcome per input (all the same H×W), in order; never raises for a model's fault. ``threads``:
        the forward's intra-op threads, set around it (None: the calling thread's own setting)."""
        # Only a call that asks for threads reads and sets them: this is the MLP's hot path at batch 1.
        if threads is None or threads == (before := torch.get_num_threads()):
            return self._run(inputs)
        torch.set_num_threads(threads)  # the calling thread's setting: a few microseconds either way
        try:
            return self._run(inputs)
        finally:
            torch.set_num_threads(before)

    def _run(self, inputs: list[np.ndarray]) -> list[Outcome]:
        try:
            return self._forward(inputs)
        except Exception as exc:
            return self._retry_in_halves(inputs, exc)

    def _forward(self, inputs: list[np.ndarray]) -> list[Outcome]:
        batch = inputs[0][None, None] if len(inputs) == 1 else np.stack(inputs)[:, None]  # N×1×H×W float32
        with torch.inference_mode():
            host = torch.from_numpy(batch)
            x = pinned_copy(host).to(self.device, non_blocking=True) if self._cuda else host
            with self._precision():
                y = self.model(x).float()
            if self._cuda:
                out = pinned_copy(y)
                torch.cuda.current_stream(self.device).synchronize()  # the copy above must land first
            else:
                out = y
        outputs = out.numpy()[:, 0]
        # The error on the host, where both images are: as four torch ops it cost a third of the MLP's forward
        # at batch 1, and np.mean's wrapper a tenth; one einsum costs a few microseconds.
        difference = (outputs - batch[:, 0]).reshape(len(inputs), -1)
        errors = (np.einsum("ij,ij->i", difference, difference) / difference.shape[1]).tolist()
        return [Prediction(outputs[i], errors[i]) for i in range(len(inputs))]

    def _precision(self) -> contextlib.AbstractContextManager[object]:
        # No autocast context at all in float32: even disabled, entering one costs a few microseconds,
        # which for the MLP is a tenth of its forward.
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _retry_in_halves(self, inputs: list[np.ndarray], exc: Exception) -> list[Outcome]:
        oom = is_out_of_memory(exc)
        if oom and self._cuda:
            torch.cuda.empty_cache()  # hand back what the failed attempt cached before the smaller tries
        if len(inputs) == 1:
            height, width = inputs[0].shape
            if oom:
                return [
                    TooLarge(
                        f"a {width}×{height} image does not fit in {self.device}'s memory for model "
                        f"{self.name!r}: send a smaller image"
                    )
                ]
            log.exception("model %s failed on a %dx%d input", self.name, width, height, exc_info=exc)
            return [InferenceFailed(f"model {self.name!r} failed on this image ({type(exc).__name__}: {exc})")]
        log.warning("model %s: a batch of %d raised %s; retrying in halves", self.name, len(inputs), type(exc).__name__)
        middle = len(inputs) // 2
        return self.run(inputs[:middle]) + self.run(inputs[middle:])
