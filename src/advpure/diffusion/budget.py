"""A memory budget for the ``checkpoint`` gradient: keep the autograd graphs of as many solver
steps as the budget holds, recompute only the others (DESIGN.md §4).

``checkpoint`` keeps one state per step and recomputes every step's forward in backward: the
exact gradient at flat memory, one extra forward per step. Most accelerators could hold many
steps' graphs; with a budget, ``run_steps`` measures the graph of the first step it runs (the
bytes autograd saves for it), keeps the graphs of the following steps while the budget lasts
and recomputes the rest. Every step costs the same to recompute, so keeping as many steps as
fit *is* the minimal recomputation; which ones does not matter (the first ones are kept). The
gradient is the same at every budget: a kept step is ``exact``'s, a recomputed one reruns the
same operations. A budget that holds every step is ``exact``; none is plain ``checkpoint``.

The budget is one pool per purification call (``graph_budget``), shared by every ``run_steps``
inside it (the heterogeneous purifier's two stages). It is scoped like ``torch.no_grad``:
``PurifiedClassifier(..., memory_budget="6GB")`` opens it around each purification.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

AUTO_FRACTION = {"cuda": 0.8, "cpu": 0.5}    # "auto": this share of the free memory
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_budget(budget: str | int | float, device: str = "cpu") -> int:
    """Bytes from 6GB, 512MiB, 1.5e9, an int, or "auto" (``AUTO_FRACTION`` of the device's
    free memory: CUDA's ``mem_get_info``, the CPU's MemAvailable)."""
    if isinstance(budget, (int, float)) and not isinstance(budget, bool):
        value = float(budget)
    elif isinstance(budget, str) and budget.strip().lower() == "auto":
        kind = "cuda" if str(device).startswith("cuda") else "cpu"
        return int(AUTO_FRACTION[kind] * free_memory(device))
    else:
        match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", str(budget))
        unit = match.group(2).upper() if match else None
        if match is None or unit not in _UNITS:
            raise ValueError(f"memory_budget: expected bytes such as 6GB, 512MiB, an integer or "
                             f"'auto', found {budget!r}")
        value = float(match.group(1)) * _UNITS[unit]
    if not value >= 0:
        raise ValueError(f"memory_budget: expected a budget >= 0, found {budget!r}")
    return int(value)


def free_memory(device: str = "cpu") -> int:
    """Free bytes on ``device`` (CUDA: ``mem_get_info``; CPU: /proc/meminfo's MemAvailable)."""
    if str(device).startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


class GraphBudget:
    """The bytes of step graphs still to be kept in one purification call, and what it kept."""

    def __init__(self, total: int):
        self.total, self.remaining = total, total
        self.step_bytes: int | None = None       # the first measured step's graph
        self.kept, self.recomputed = 0, 0

    def admits(self) -> bool:
        """Whether one more step's graph fits (the step size must have been measured)."""
        return self.step_bytes is not None and self.remaining >= self.step_bytes

    def keep(self, nbytes: int) -> None:
        self.remaining -= nbytes
        self.kept += 1


_BUDGET: ContextVar[GraphBudget | None] = ContextVar("graph_budget", default=None)


@contextmanager
def graph_budget(total_bytes: int | None) -> Iterator[GraphBudget | None]:
    """Within the block, ``run_steps`` in ``checkpoint`` mode keeps step graphs up to
    ``total_bytes`` (None: no budget, plain checkpoint)."""
    budget = None if total_bytes is None else GraphBudget(int(total_bytes))
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def current_budget() -> GraphBudget | None:
    return _BUDGET.get()


def graph_bytes(run: Callable[[], torch.Tensor], device: torch.device) -> tuple[torch.Tensor, int]:
    """(``run()``, the bytes its autograd graph holds): on CUDA the allocator's growth while the
    output is alive; elsewhere the storages autograd saves for backward, each counted once,
    parameters (which exist anyway) left out."""
    if device.type == "cuda":
        before = torch.cuda.memory_allocated(device)
        out = run()
        return out, max(0, torch.cuda.memory_allocated(device) - before)
    seen: set[int] = set()
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        storage = t.untyped_storage()
        if not isinstance(t, nn.Parameter) and storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    return out, total
