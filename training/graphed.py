"""The training step captured once as a CUDA graph and replayed (``dae-train --cuda-graphs``).

Why: a small model's step on a GPU is launch-bound. The reference MLP's step is some forty kernels of a few
microseconds each; eager, the GPU waits on Python and on every launch. A replay launches the whole step at once.

The same numerics as the eager step: the same function, the same ops in the same order on the same tensors.
Two things differ, as CUDA graphs require: the noise comes from the device's default generator (the one
graph-safe generator; seeded per epoch by the loop), and Adam runs ``capturable`` (its step count on the
device). A batch of another shape (an epoch's last, smaller one) runs eagerly through the same function.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Step = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]  # (clean batch, noise generator) → loss

WARM_UP_STEPS = 3  # CUDA graphs' rule: run the step a few times on a side stream before capturing it


class GraphedStep:
    """Runs ``step`` on a batch: by replaying its CUDA graph when the batch has the captured shape and the
    learning rate is the captured one (a float baked into the fused Adam kernel), else capturing it anew, or
    eagerly for a batch of another shape. ``replays`` counts what ran from the graph. A replay's loss is the
    graph's own tensor, overwritten by the next replay: add it up before then (the loop does, at once)."""

    def __init__(self, step: Step, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.step, self.model, self.optimizer = step, model, optimizer
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_clean = torch.empty(0)
        self.static_loss = torch.empty(0)
        self.captured_lr: float | None = None
        self.replays = 0

    def __call__(self, clean: torch.Tensor) -> torch.Tensor:
        if self.graph is not None and clean.shape != self.static_clean.shape:
            return self.step(clean, None)
        if self.graph is None or self.optimizer.param_groups[0]["lr"] != self.captured_lr:
            self.capture(clean)
        assert self.graph is not None
        self.static_clean.copy_(clean)
        self.graph.replay()
        self.replays += 1
        return self.static_loss

    def capture(self, example: torch.Tensor) -> None:
        if self.graph is None:  # the first capture; later ones (a new learning rate) find everything made
            self.warm_up(example)
        self.optimizer.zero_grad(set_to_none=True)  # the gradients are then allocated in the graph's own pool
        self.static_clean = example.clone()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_loss = self.step(self.static_clean, None)
        self.captured_lr = float(self.optimizer.param_groups[0]["lr"])

    def warm_up(self, example: torch.Tensor) -> None:
        """Run the step on a side stream, which creates Adam's state and the libraries' workspaces before the
        capture, then put the weights and Adam's state back as they were: the warm-up steps must not count."""
        weights = {k: v.clone() for k, v in self.model.state_dict().items()}
        before = {
            p: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for p, s in self.optimizer.state.items()
        }
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARM_UP_STEPS):
                self.step(example, None)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for key, value in self.model.state_dict().items():
                value.copy_(weights[key])
            for param, state in self.optimizer.state.items():
                for key, value in state.items():
                    if not torch.is_tensor(value):
                        continue
                    if param in before:
                        value.copy_(before[param][key])
                    else:  # a fresh Adam's state: zeros, what its lazy first step would have made
                        value.zero_()
