"""Time and peak memory of the solver gradient modes against the number of reverse steps.

Each configuration runs in its own process so that its peak memory is its own. The parent
watches the child's resident memory and stops it at the cap, reporting "out of memory"; a mode
that ran out at N steps is not run for larger N. ``budgets`` adds ``checkpoint`` runs with a
memory budget of that fraction of what ``exact`` keeps (N × one step's graph, measured by
``diffusion/budget.py`` in the same process), and reports the policy each step took (whole
graph, selective graph, input only). Every gradient is compared with ``exact``'s on the same
noise, in the same process, and its time with exact's timed alternately in that process (the
ratio is free of the drift between processes; the peak is the configuration's own). Memory is the peak above the memory in use just
before the gradient (CPU: the resident set sampled every millisecond; CUDA:
``max_memory_allocated``), taken on a run after the timed ones. Time is the median of
``repeats`` runs after one warm-up run.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..diffusion import graph_budget
from ..diffusion.budget import POLICIES
from ..reports.plots import figure

MODES = ("exact", "checkpoint", "adjoint")
STEPS = (10, 20, 50, 100, 200)
T_STAR = 0.1


@dataclass(frozen=True)
class Workload:
    name: str
    batch: int
    shape: tuple[int, int, int]
    what: str


WORKLOADS = {
    "digits": Workload("digits", 64, (1, 8, 8), "builtin:digits-unet (0.57 M parameters)"),
    "unet32": Workload("unet32", 4, (3, 32, 32), "SmallUNet 3×32×32, base 64, mults 1-2-2-2"),
}


def build_model(workload: Workload, device: str):
    from ..models import SmallUNet, load_diffusion
    from ..training.common import init_weights

    if workload.name == "digits":
        return load_diffusion("builtin:digits-unet").to(device)
    model = init_weights(SmallUNet(in_channels=3, base=64, mults=(1, 2, 2, 2)),
                         torch.Generator().manual_seed(0))
    return model.eval().requires_grad_(False).to(device)


def current_memory(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.memory_allocated()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_freed_memory(device: str) -> None:
    """CPU: make glibc hand large freed buffers back at once (a fixed 64 KiB mmap threshold)
    and trim what it holds, so that the resident set follows the memory in use."""
    if device.startswith("cuda"):
        return
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 65536)      # M_MMAP_THRESHOLD
    libc.malloc_trim(0)


class PeakSampler:
    """Peak of ``current_memory`` while the block runs (CPU: a thread samples every ~1 ms)."""

    def __init__(self, device: str):
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self) -> PeakSampler:
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        else:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, current_memory(self.device))
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        if self.device.startswith("cuda"):
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, current_memory(self.device))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def worker(spec: dict) -> dict:
    """Measure one (workload, mode, steps[, budget]) configuration in this process, and compare
    its gradient with ``exact``'s on the same noise."""
    from ..purifiers import DiffPure

    device, workload = spec["device"], WORKLOADS[spec["workload"]]
    torch.set_num_threads(spec["threads"])
    model = build_model(workload, device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(spec.get("batch") or workload.batch, *workload.shape, generator=g).to(device)
    weights = torch.randn(x.shape, generator=g).to(device)

    if spec["mode"] == "bare":          # one network forward+backward on the same batch
        def run_once():
            xi = (2 * x - 1).requires_grad_(True)
            t = torch.full((len(x),), T_STAR, device=device)
            torch.autograd.grad((model(xi, t) * weights).sum(), xi)
        return {**spec, **measure(run_once, device, spec["repeats"])}
    purifier = DiffPure(model, t_star=T_STAR, dt=T_STAR / spec["steps"])

    def gradient(budget: int | None = None, mode: str = spec["mode"]):
        xi = x.clone().requires_grad_(True)
        with graph_budget(budget) as used:
            out = purifier(xi, torch.Generator().manual_seed(1), gradient=mode)
            (grad,) = torch.autograd.grad((out * weights).sum(), xi)
        return grad, used

    total, row = None, dict(spec)
    if spec.get("budget") is not None:
        total = int(spec["budget"] * gradient(2**62)[1].exact_bytes)   # exact's graphs
        row.update(budget_bytes=total, policies=gradient(total)[1].used)
    if spec["mode"] == "exact":
        return {**row, **measure(gradient, device, spec["repeats"])}
    row.update(measure(lambda: gradient(total), device, spec["repeats"],
                       reference=lambda: gradient(mode="exact")))
    return {**row, **difference(gradient(total)[0], gradient(mode="exact")[0])}


def difference(grad: torch.Tensor, exact: torch.Tensor) -> dict:
    """How far a gradient is from exact's: bit for bit, or the largest absolute difference."""
    return {"bitwise": bool(torch.equal(grad, exact)),
            "max_abs_diff": float((grad - exact).abs().max())}


def measure(run_once, device: str, repeats: int, reference=None) -> dict:
    """{"seconds": median of ``repeats`` timed runs after a warm-up, "peak_bytes": the peak
    above the memory in use before one more run}. With a ``reference`` (exact's gradient), its
    runs alternate with these and "exact_seconds" is their median: a ratio to exact's time
    taken side by side, free of the drift between processes."""
    runs = [run_once] if reference is None else [run_once, reference]
    for run in runs:
        run()                                    # warm-up: lazy initialisations
    times = {run: [] for run in runs}
    for _ in range(repeats):
        for run in runs:
            times[run].append(timed(run, device))
    release_freed_memory(device)
    before = current_memory(device)
    with PeakSampler(device) as sampler:
        run_once()
        sync(device)
    result = {"seconds": statistics.median(times[run_once]),
              "peak_bytes": max(0, sampler.peak - before)}
    if reference is not None:
        result["exact_seconds"] = statistics.median(times[reference])
    return result


def timed(run_once, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    run_once()
    sync(device)
    return time.perf_counter() - start


def rss_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_isolated(spec: dict, cap_bytes: int, module: str = "advpure.benchmarks.gradients") -> dict:
    """Run ``module``'s worker on ``spec`` in a child process (``python -m module SPEC``),
    stopping it if its memory passes the cap."""
    cmd = [sys.executable, "-m", module, json.dumps(spec)]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while child.poll() is None:
        if not spec["device"].startswith("cuda") and rss_of(child.pid) > cap_bytes:
            child.kill()
            child.wait()
            return {**spec, "oom": True}
        time.sleep(0.05)
    out, err = child.communicate()
    if child.returncode != 0:
        if "out of memory" in err.lower():
            return {**spec, "oom": True}
        raise RuntimeError(f"benchmark worker failed for {spec}:\n{err[-2000:]}")
    return json.loads(out.strip().splitlines()[-1])


def sweep(workloads, steps, modes, cap_bytes: int, repeats: int, device: str,
          threads: int, budgets=(), batch: int | None = None) -> list[dict]:
    """Every (workload, mode, steps) in its own process, plus the bare network pass and the
    checkpoint runs at each budget fraction."""
    from tqdm.auto import tqdm

    configs = [(w, m, n, None) for w in workloads for m in modes for n in steps]
    configs += [(w, "checkpoint", n, f) for w in workloads for n in steps for f in budgets]
    rows, out_of_memory = [], set()
    base = {"device": device, "threads": threads, "repeats": repeats, "batch": batch}
    for w in workloads:
        rows.append(run_isolated({**base, "workload": w, "mode": "bare", "steps": 1}, cap_bytes))
    for w, m, n, f in tqdm(configs, desc="bench gradients"):
        spec = {**base, "workload": w, "mode": m, "steps": n}
        if f is not None:
            spec["budget"] = f
        if (w, m, f) in out_of_memory:
            rows.append({**spec, "oom": True, "skipped": True})
            continue
        rows.append(run_isolated(spec, cap_bytes))
        if rows[-1].get("oom"):
            out_of_memory.add((w, m, f))
    return rows


def find(rows, workload, mode, steps=None, budget=None):
    for r in rows:
        if r["workload"] == workload and r["mode"] == mode and \
                (steps is None or r["steps"] == steps) and r.get("budget") == budget:
            return r
    return None


def cell(row, exact) -> str:
    """'1.03× (511 MiB)' against exact's time measured side by side in the same process
    ('2.07 s (852 MiB)' for exact itself), with the steps each policy took under a budget."""
    if row is None:
        return "–"
    if row.get("oom"):
        return "out of memory" + (" (not run)" if row.get("skipped") else "")
    mib = f"{row['peak_bytes'] / 2**20:.0f} MiB"
    if "exact_seconds" in row:
        text = f"{row['seconds'] / row['exact_seconds']:.2f}× ({mib})"
    elif row is exact or exact is None or exact.get("oom"):
        text = f"{row['seconds']:.3g} s ({mib})"
    else:
        text = f"{row['seconds'] / exact['seconds']:.2f}× ({mib})"
    if "policies" in row:
        text += " " + "/".join(str(row["policies"][p]) for p in POLICIES)
    return text


def agreement(rows) -> str:
    """How the row's gradients compare with exact's: 'bit for bit' or the largest |Δ|."""
    compared = [r for r in rows if r is not None and "bitwise" in r]
    if not compared:
        return "–"
    if all(r["bitwise"] for r in compared):
        return "bit for bit"
    return f"max abs diff {max(r['max_abs_diff'] for r in compared):.1e}"


def format_table(rows: list[dict], steps, modes) -> str:
    """Per workload and N: time ÷ exact's and peak memory of every mode and budget."""
    lines = []
    for w in dict.fromkeys(r["workload"] for r in rows):
        bare = find(rows, w, "bare")
        bare_text = "out of memory" if bare.get("oom") else f"{bare['seconds'] * 1e3:.1f} ms"
        batch = bare.get("batch") or WORKLOADS[w].batch
        fractions = sorted({r["budget"] for r in rows if r["workload"] == w and "budget" in r})
        columns = [(m, None) for m in modes] + [("checkpoint", f) for f in fractions]
        names = [m if f is None else f"budget {100 * f:g} %" for m, f in columns]
        lines += [f"### {w}: {WORKLOADS[w].what}, batch {batch}; one network "
                  f"forward+backward {bare_text}", "",
                  "Time ÷ exact's, timed alternately with exact in the same process (exact: "
                  "seconds), peak memory; under a budget, the steps that kept their whole "
                  "graph / a selective graph / their input only.", "",
                  "| N | " + " | ".join(names) + " | gradients against exact's |",
                  "|---|" + "---|" * (len(columns) + 1)]
        for n in steps:
            found = [find(rows, w, m, n, f) for m, f in columns]
            exact = find(rows, w, "exact", n)
            lines.append(f"| {n} | " + " | ".join(cell(r, exact) for r in found)
                         + f" | {agreement(found)} |")
        lines.append("")
    return "\n".join(lines)


Series = tuple[str, str, list, list, list]     # label, style, x values, seconds, bytes


def plot_time_and_memory(columns: dict[str, list[Series]], xlabel: str, path: Path) -> Path:
    """Seconds (top) and peak MiB (bottom) against ``xlabel``, one column per title."""
    with figure(path, 2, len(columns), (5 * len(columns), 7)) as (fig, axes):
        for c, (title, series) in enumerate(columns.items()):
            for label, style, xs, seconds, peak_bytes in series:
                axes[0, c].plot(xs, seconds, style, label=label)
                axes[1, c].plot(xs, [b / 2**20 for b in peak_bytes], style, label=label)
            axes[0, c].set_title(title, fontsize=9)
            axes[0, c].set_ylabel("seconds per gradient")
            axes[1, c].set_ylabel("peak memory (MiB)")
            for ax in axes[:, c]:
                ax.set_xlabel(xlabel)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7)
    return path


def plot(rows: list[dict], modes, path: Path) -> Path:
    columns = {}
    for w in dict.fromkeys(r["workload"] for r in rows):
        series = []
        for m in modes:
            ok = [r for r in rows if r["workload"] == w and r["mode"] == m
                  and not r.get("oom") and "budget" not in r]
            series.append((m, "o-", [r["steps"] for r in ok], [r["seconds"] for r in ok],
                           [r["peak_bytes"] for r in ok]))
        columns[f"{w}, batch {WORKLOADS[w].batch}"] = series
    return plot_time_and_memory(columns, "reverse steps N", path)


def run(out_dir: Path, workloads=tuple(WORKLOADS), steps=STEPS, modes=MODES, cap_gb: float = 16.0,
        repeats: int = 2, device: str = "cpu", threads: int | None = None, budgets=(),
        batch: int | None = None) -> str:
    threads = threads or torch.get_num_threads()
    rows = sweep(workloads, steps, modes, int(cap_gb * 2**30), repeats, device, threads,
                 budgets, batch)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = format_table(rows, steps, modes)
    header = (f"# Gradient modes: time and peak memory\n\ndevice {device}, {threads} threads, "
              f"t* = {T_STAR}, dt = t*/N, memory cap {cap_gb:g} GiB, median of {repeats} "
              "timed runs after a warm-up; memory from one more run\n\n")
    save_report(out_dir, "gradients", rows, header + table)
    plot(rows, modes, out_dir / "gradients.png")
    return header + table


def save_report(out_dir: Path, stem: str, rows: list[dict], text: str) -> None:
    """``stem``.json (the measured rows) and ``stem``.md (the report) in ``out_dir``."""
    (out_dir / f"{stem}.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text(text)


def serve(measure_one) -> None:
    """The child-process entry point: measure the JSON spec in argv[1], print the row."""
    print(json.dumps(measure_one(json.loads(sys.argv[1]))))


def main() -> None:
    serve(worker)


if __name__ == "__main__":
    main()
