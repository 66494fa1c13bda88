"""Pieces shared by the training loops: minibatches, EMA, resumable state."""
from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn


def minibatches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless shuffled index batches over range(n), one fresh permutation per epoch."""
    while True:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i:i + batch_size]


class EMA:
    """Exponential moving average of a model's weights: θ_ema ← d·θ_ema + (1 − d)·θ."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p, 1.0 - self.decay)


@torch.no_grad()
def init_weights(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Redraw every conv/linear weight and bias from U(−1/√fan_in, 1/√fan_in) with ``generator``.

    This is PyTorch's default initialization in distribution, made reproducible without
    touching the global random state.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            bound = module.weight[0].numel() ** -0.5
            module.weight.uniform_(-bound, bound, generator=generator)
            if module.bias is not None:
                module.bias.uniform_(-bound, bound, generator=generator)
    return model


class Resume:
    """Periodic training state at ``path`` so that an interrupted run, started again with the
    same command, continues where it stopped and ends with the same weights.

    The state (model, EMA, optimizer, scheduler, generator, step, loss history) is written with
    ``torch.save`` — readable with ``weights_only=True`` — at the first epoch boundary after every
    ``every`` steps: there the shuffling generator is about to draw the next epoch's order, so a
    fresh minibatch iterator continues the same sequence. A state written by another training
    configuration (anything but the step count) is an error, never silently continued; a run
    may be continued to more steps. ``path`` None disables all of it; the caller deletes the
    file once the final checkpoint is written.
    """

    def __init__(self, path: str | Path | None, every: int, config: dict[str, Any],
                 steps_per_epoch: int):
        self.path = None if path is None else Path(path)
        plain = {k: v for k, v in config.items() if k != "steps"}
        self.config = json.loads(json.dumps(plain))            # plain JSON types, comparable
        self.every = max(1, -(-every // steps_per_epoch)) * steps_per_epoch   # whole epochs
        self.last_saved = 0

    def restore(self, parts: dict[str, Any], generator: torch.Generator) -> tuple[int, list]:
        """Load the saved state into ``parts`` (name -> object with load_state_dict) and the
        generator; returns (the step to continue from, the history so far)."""
        if self.path is None or not self.path.is_file():
            return 0, []
        state = torch.load(self.path, weights_only=True, map_location="cpu")
        if state["config"] != self.config:
            raise ValueError(f"resume state {self.path} was written by another training "
                             f"configuration ({state['config']}); expected {self.config}: "
                             "delete it or choose another output")
        for name, part in parts.items():
            part.load_state_dict(state[name])
        generator.set_state(state["generator"])
        self.last_saved = state["step"]
        return state["step"], state["history"]

    def save_if_due(self, step: int, parts: dict[str, Any], generator: torch.Generator,
                    history: list) -> None:
        """Save after ``step`` steps when ``every`` steps have passed since the last save."""
        if self.path is None or step - self.last_saved < self.every or step % self.every:
            return
        state = {name: part.state_dict() for name, part in parts.items()}
        state |= {"generator": generator.get_state(), "step": step, "history": history,
                  "config": self.config}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, self.path.with_suffix(".tmp"))
        self.path.with_suffix(".tmp").replace(self.path)          # never a half-written state
        self.last_saved = step
