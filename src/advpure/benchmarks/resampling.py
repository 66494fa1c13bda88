"""Time and peak memory of one attack gradient through the heterogeneous purifier: RePaint's
U-step resampling against the paper's single-step resampling (Pei et al., Eq. 11 and
supplement §7: 10 sampling steps, 89 % less time and 87 % less memory at U = 20).

Every configuration runs in its own process under the memory cap (see ``gradients.py``, whose
measurement and isolation this reuses); the mask is computed once, outside the timed gradient.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from .gradients import (
    WORKLOADS,
    build_model,
    measure,
    plot_time_and_memory,
    run_isolated,
    save_report,
    serve,
)

METHODS = ("repaint", "single")
MODES = ("exact", "checkpoint")
JUMPS = (1, 5, 10, 20)
T_LARGE, T_SMALL = 0.2, 0.05
BATCH = {"digits": 64, "unet32": 1}     # the paper's figure: one 32×32 image


def mask_classifier(workload, device: str):
    from ..models import SmallCNN, load_classifier
    from ..training.common import init_weights

    if workload.name == "digits":
        return load_classifier("builtin:digits-cnn").to(device)
    net = init_weights(SmallCNN(in_channels=3), torch.Generator().manual_seed(0))
    return net.eval().requires_grad_(False).to(device)


def worker(spec: dict) -> dict:
    """Measure one (workload, mode, method, U) configuration in this process."""
    from ..purifiers import HeteroPure

    device = spec["device"]
    workload = replace(WORKLOADS[spec["workload"]], batch=spec["batch"])
    torch.set_num_threads(spec["threads"])
    model, classifier = build_model(workload, device), mask_classifier(workload, device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(workload.batch, *workload.shape, generator=g).to(device)
    weights = torch.randn(x.shape, generator=g).to(device)
    purifier = HeteroPure(model, classifier, t_large=T_LARGE, t_small=T_SMALL,
                          dt=T_LARGE / spec["steps"],
                          resampling=spec["method"], resample_jumps=spec["jumps"])
    mask = purifier.mask(x)

    def run_once():
        xi = x.clone().requires_grad_(True)
        out = purifier(xi, torch.Generator().manual_seed(1), gradient=spec["mode"], mask=mask)
        torch.autograd.grad((out * weights).sum(), xi)

    return {**spec, **measure(run_once, device, spec["repeats"])}


def sweep(workloads, jumps, modes, cap_bytes: int, repeats: int, device: str, threads: int,
          steps: int) -> list[dict]:
    """Every configuration in its own process; a (method, mode) that ran out of memory at some
    U is not run for larger U."""
    from tqdm.auto import tqdm

    configs = [(w, m, method, u) for w in workloads for m in modes for method in METHODS
               for u in jumps]
    rows, out_of_memory = [], set()
    for w, m, method, u in tqdm(configs, desc="bench resampling"):
        spec = {"device": device, "threads": threads, "repeats": repeats, "workload": w,
                "batch": BATCH[w], "steps": steps, "mode": m, "method": method, "jumps": u}
        if (w, m, method) in out_of_memory:
            rows.append({**spec, "oom": True, "skipped": True})
            continue
        rows.append(run_isolated(spec, cap_bytes, module="advpure.benchmarks.resampling"))
        if rows[-1].get("oom"):
            out_of_memory.add((w, m, method))
    return rows


def _find(rows, workload, mode, method, jumps):
    return next((r for r in rows if (r["workload"], r["mode"], r["method"], r["jumps"])
                 == (workload, mode, method, jumps)), None)


def _cell(row) -> str:
    if row is None:
        return "–"
    if row.get("oom"):
        return "out of memory" + (" (not run)" if row.get("skipped") else "")
    return f"{row['seconds']:.3g} s, {row['peak_bytes'] / 2**20:.0f} MiB"


def _saving(single, repaint, key: str) -> str:
    if single is None or repaint is None or single.get("oom") or repaint.get("oom"):
        return "–"
    return f"{100 * (1 - single[key] / max(repaint[key], 1e-12)):.0f} %"


def format_table(rows: list[dict], jumps, modes) -> str:
    lines = []
    for w in dict.fromkeys(r["workload"] for r in rows):
        for m in modes:
            lines += [f"### {w} ({WORKLOADS[w].what}), batch {BATCH[w]}, `{m}` gradient", "",
                      "| U | U-step (RePaint) | single-step (Eq. 11) | time saved | memory saved |",
                      "|---|---|---|---|---|"]
            for u in jumps:
                rp, sg = _find(rows, w, m, "repaint", u), _find(rows, w, m, "single", u)
                lines.append(f"| {u} | {_cell(rp)} | {_cell(sg)} | "
                             f"{_saving(sg, rp, 'seconds')} | {_saving(sg, rp, 'peak_bytes')} |")
            lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict], modes, path: Path) -> Path:
    columns = {}
    for w in dict.fromkeys(r["workload"] for r in rows):
        series = []
        for m in modes:
            for method, style in zip(METHODS, ("s--", "o-")):
                ok = [r for r in rows if (r["workload"], r["mode"], r["method"]) == (w, m, method)
                      and not r.get("oom")]
                label = f"{'U-step' if method == 'repaint' else 'single-step'}, {m}"
                series.append((label, style, [r["jumps"] for r in ok],
                               [r["seconds"] for r in ok], [r["peak_bytes"] for r in ok]))
        columns[f"{w}, batch {BATCH[w]}"] = series
    return plot_time_and_memory(columns, "resampling U", path)


def run(out_dir: Path, workloads=("digits", "unet32"), jumps=JUMPS, modes=MODES,
        cap_gb: float = 16.0, repeats: int = 2, device: str = "cpu", threads: int | None = None,
        steps: int = 10) -> str:
    threads = threads or torch.get_num_threads()
    rows = sweep(workloads, jumps, modes, int(cap_gb * 2**30), repeats, device, threads, steps)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = (f"# Resampling: time and peak memory of one attack gradient\n\ndevice {device}, "
              f"{threads} threads, t_l = {T_LARGE}, t_s = {T_SMALL}, {steps} sampling steps "
              f"(dt = t_l/{steps}), memory cap {cap_gb:g} GiB, median of {repeats} timed runs "
              "after a warm-up; memory from one more run\n\n")
    table = format_table(rows, jumps, modes)
    save_report(out_dir, "resampling", rows, header + table)
    plot(rows, modes, out_dir / "resampling.png")
    return header + table


def main() -> None:
    serve(worker)


if __name__ == "__main__":
    main()
