"""A memory budget for the ``checkpoint`` gradient: for every solver step, the policy that
keeps the budget at the least recomputation (DESIGN.md §4).

``checkpoint`` keeps one state per step and recomputes every step's forward in backward: the
exact gradient at flat memory, one extra forward per step. Most machines could hold more. A
budget chooses, step by step, among three policies (``POLICIES``):

- ``graph``: the step's whole autograd graph, as ``exact`` keeps it — no recomputation;
- ``selective``: the graph without what backward never reads or recomputes in one
  elementwise pass (``selective.py``): 37 % of the bytes on the UNets measured, at 3–10 %
  of a step's time;
- ``input``: the step's input only (``samplers.RecomputedStep``): no graph, one forward
  recomputed in backward (0.4–0.5 of a step here).

The bytes of each policy are measured, not assumed: the first step is run as ``graph`` and
the first step that needs it as ``selective``, under ``graph_bytes``; a measured step is
kept. Per byte a selective step saves the most recomputation, so the plan (``choose``) runs
every remaining step selectively when the budget holds that, spends what is left on whole
graphs (the first steps), and otherwise keeps as many selective steps as fit and
recomputes the rest from their inputs. A budget that holds every step's graph is ``exact``;
none is plain ``checkpoint``. The gradient is the same at every budget (exact's, bit for
bit where steps read only the state).

The budget is one pool per purification call (``graph_budget``), shared by every ``run_steps``
inside it; each plans its own steps with what the earlier ones left (the heterogeneous
purifier's second stage gets what its first did not use). It is scoped like
``torch.no_grad``: ``PurifiedClassifier(..., memory_budget="6GB")`` opens it around each
purification.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

from .selective import saved_tensors

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


POLICIES = ("graph", "selective", "input")


class GraphBudget:
    """The bytes still to keep in one purification call, each policy's measured bytes per
    step, and how many steps ran under each policy."""

    def __init__(self, total: int):
        self.total, self.remaining = total, total
        self.step_bytes: dict[str, int] = {}      # policy -> one measured step's graph
        self.used: dict[str, int] = dict.fromkeys(POLICIES, 0)

    def choose(self, steps_left: int) -> str:
        """The policy of the next of ``steps_left`` steps (this one included): whole graphs
        while every later step can still be selective, then selective steps while they fit,
        then inputs only. A policy not yet measured is measured on this step."""
        graph, selective = self.step_bytes.get("graph"), self.step_bytes.get("selective")
        if self.total <= 0:
            return "input"
        if graph is None or self.remaining >= steps_left * graph:
            return "graph"
        if selective is None:
            return "selective" if self.remaining > 0 else "input"
        if self.remaining - graph >= (steps_left - 1) * selective:
            return "graph"
        return "selective" if self.remaining >= selective else "input"

    def keep(self, policy: str, nbytes: int) -> None:
        self.remaining -= nbytes
        self.used[policy] += 1

    @property
    def steps(self) -> int:
        return sum(self.used.values())

    @property
    def exact_bytes(self) -> int:
        """What ``exact`` would keep: every step's whole graph (0 before one was measured)."""
        return self.step_bytes.get("graph", 0) * self.steps

    def describe(self) -> str:
        """'5 graph + 15 selective + 0 input': the policy each step used."""
        return " + ".join(f"{self.used[p]} {p}" for p in POLICIES)


_BUDGET: ContextVar[GraphBudget | None] = ContextVar("graph_budget", default=None)


@contextmanager
def graph_budget(total_bytes: int | None) -> Iterator[GraphBudget | None]:
    """Within the block, ``run_steps`` in ``checkpoint`` mode keeps what each step needs for
    backward up to ``total_bytes``, choosing a policy per step (None: no budget, plain
    checkpoint)."""
    budget = None if total_bytes is None else GraphBudget(int(total_bytes))
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


def current_budget() -> GraphBudget | None:
    return _BUDGET.get()


def graph_bytes(run: Callable[[], torch.Tensor], device: torch.device,
                selective: bool = False) -> tuple[torch.Tensor, int]:
    """(``run()``, the bytes its autograd graph holds): on CUDA the allocator's growth while the
    output is alive; elsewhere the storages autograd saves for backward, each counted once,
    parameters (which exist anyway) left out. ``selective``: run under a selective graph."""
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    with saved_tensors(selective) as saved:
        out = run()
    if device.type == "cuda":
        return out, max(0, torch.cuda.memory_allocated(device) - before)
    return out, saved.nbytes
