"""``advpure bench gpu``: the numbers a robustness evaluation on an accelerator lives by.

On one CUDA device, for each workload (the full-size CIFAR-10 NCSN++ of DiffPure, 107 M
parameters, random weights, with a WideResNet-28-10; the digits models; the small CIFAR-10 UNet
with a ResNet-18), DiffPure's reverse SDE from t* = 0.1 with dt = 1e-3 (100 steps):

- purification throughput (images/s, no gradient);
- one attack gradient (cross-entropy through purifier and classifier): ``exact``,
  ``checkpoint`` and ``checkpoint`` with memory budgets of 25 / 50 / 100 % of the graphs exact
  keeps, in fp32 and bf16 — seconds and peak memory, "out of memory" where it does not fit;
- EOT-20: one batched gradient of 20 copies against 20 sequential ones (speed-up per attack
  iteration);
- the projected wall time of DiffPure's AutoAttack-rand protocol (APGD-CE and APGD-DLR, 100
  iterations each, EOT 20) on 512 images: 2 × 100 × 20 gradients per image, at the fastest
  measured per-image gradient of the NCSN++ workload (an upper bound: AutoAttack stops early
  on images it has broken).

``quick`` shrinks everything (2 steps, 2 images, no NCSN++) so that the code path can be tested
on a CPU; the command refuses to run without CUDA.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..accelerate import accelerated
from ..defense import PurifiedClassifier
from ..diffusion.budget import POLICIES

T_STAR, DT = 0.1, 1e-3
EOT = 20
PROTOCOL_IMAGES, PROTOCOL_GRADIENTS = 512, 2 * 100 * EOT     # AutoAttack rand per image
BUDGETS = (0.25, 0.5, 1.0)


@dataclass
class Workload:
    name: str
    batch: int
    shape: tuple[int, int, int]

    def models(self, device: str) -> tuple[nn.Module, nn.Module]:
        """(eps-model, classifier) with fixed random (or shipped) weights, on ``device``."""
        from ..models import SmallCNN, SmallUNet, load_classifier, load_diffusion
        from ..models.adapters import ScoreSDEEps
        from ..models.public import _ncsnpp_deep
        from ..models.resnet_cifar import ResNet18
        from ..models.wideresnet import WideResNet
        from ..training.common import init_weights

        torch.manual_seed(0)
        if self.name == "ncsnpp":
            eps, clf = ScoreSDEEps(_ncsnpp_deep()), WideResNet(28, 10)
        elif self.name == "digits":
            eps, clf = load_diffusion("builtin:digits-unet"), load_classifier("builtin:digits-cnn")
        elif self.name == "cifar-small":
            eps = init_weights(SmallUNet(in_channels=3, base=64, mults=(1, 2, 2, 2)),
                               torch.Generator().manual_seed(0))
            clf = ResNet18()
        else:                                   # "tiny": the quick CPU check
            eps = SmallUNet(in_channels=1, base=8, mults=(1, 2))
            clf = SmallCNN(in_channels=1, num_classes=10, width=4)
        return (eps.eval().requires_grad_(False).to(device),
                clf.eval().requires_grad_(False).to(device))


WORKLOADS = (Workload("ncsnpp", 8, (3, 32, 32)), Workload("digits", 64, (1, 8, 8)),
             Workload("cifar-small", 16, (3, 32, 32)))
QUICK = (Workload("tiny", 2, (1, 8, 8)),)


class Timer:
    def __init__(self, device: str):
        self.device = device

    def __call__(self, fn, repeats: int = 2) -> dict:
        """Median seconds of ``repeats`` runs after a warm-up, and the peak memory of the last
        (CUDA), or {"oom": True}."""
        cuda = self.device.startswith("cuda")
        try:
            fn()
            times = []
            for _ in range(repeats):
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                fn()
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            return {"oom": True}
        peak = torch.cuda.max_memory_allocated() if cuda else None
        return {"seconds": sorted(times)[len(times) // 2], "peak_bytes": peak}


def _gradient_fn(eps, clf, x, y, gradient: str, budget: int | None, dt: float):
    from ..purifiers import DiffPure

    defended = PurifiedClassifier(DiffPure(eps, t_star=T_STAR, dt=dt), clf,
                                  torch.Generator().manual_seed(0), gradient=gradient,
                                  memory_budget=budget)

    def run():
        xi = x.detach().requires_grad_(True)
        loss = nn.functional.cross_entropy(defended(xi), y)
        torch.autograd.grad(loss, xi)
        return defended.last_budget
    run.defended = defended
    return run


def measure_workload(w: Workload, device: str, dt: float, repeats: int) -> dict:
    """Throughput, the gradient table, and EOT batched vs sequential for one workload."""
    from ..purifiers import DiffPure

    timer = Timer(device)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(w.batch, *w.shape, generator=g).to(device)
    y = torch.randint(0, 10, (w.batch,), generator=g).to(device)
    result = {"workload": w.name, "batch": w.batch, "steps": round(T_STAR / dt)}
    eps32, clf32 = w.models(device)
    purifier = DiffPure(eps32, t_star=T_STAR, dt=dt)

    def purify():
        with torch.no_grad():
            clf32(purifier(x, torch.Generator().manual_seed(0)))
    t = timer(purify, repeats)
    result["images_per_second"] = None if t.get("oom") else w.batch / t["seconds"]
    rows = []
    for precision in ("fp32", "bf16"):
        eps, clf = (accelerated(m, precision=precision) for m in (eps32, clf32))
        probe = _gradient_fn(eps, clf, x, y, "checkpoint", 2**62, dt)()
        settings = [("exact", None), ("checkpoint", None)] + \
            [(f"checkpoint {100 * f:g} %", int(f * probe.exact_bytes)) for f in BUDGETS]
        for label, budget in settings:
            mode = "exact" if label == "exact" else "checkpoint"
            run = _gradient_fn(eps, clf, x, y, mode, budget, dt)
            row = {"precision": precision, "mode": label, **timer(run, repeats)}
            if budget is not None and not row.get("oom"):
                row["policies"] = run.defended.last_budget.used
            rows.append(row)
    result["gradients"] = rows
    result["eot"] = eot_speedup(eps32, clf32, x[:1], y[:1], dt, timer, repeats)
    return result


def eot_speedup(eps, clf, x, y, dt: float, timer: Timer, repeats: int) -> dict:
    """One EOT-20 gradient of one image: 20 copies as one batch against 20 calls."""
    batched = _gradient_fn(eps, clf, x.repeat(EOT, 1, 1, 1), y.repeat(EOT), "exact", None, dt)
    single = _gradient_fn(eps, clf, x, y, "exact", None, dt)
    t_batched = timer(batched, repeats)
    t_sequential = timer(lambda: [single() for _ in range(EOT)], repeats)
    if t_batched.get("oom") or t_sequential.get("oom"):
        return {"oom": True}
    return {"batched_seconds": t_batched["seconds"], "sequential_seconds": t_sequential["seconds"],
            "speedup": t_sequential["seconds"] / t_batched["seconds"]}


def projection(result: dict) -> dict | None:
    """The AutoAttack-rand protocol's wall time from the fastest fp32/bf16 gradient per image."""
    ok = [r for r in result["gradients"] if not r.get("oom")]
    if not ok:
        return None
    best = min(ok, key=lambda r: r["seconds"])
    per_image = best["seconds"] / result["batch"]
    hours = PROTOCOL_IMAGES * PROTOCOL_GRADIENTS * per_image / 3600
    return {"from": f"{best['precision']} {best['mode']}", "seconds_per_image_gradient": per_image,
            "hours": hours}


def report(results: list[dict], device_name: str) -> str:
    lines = [f"# GPU benchmark: {device_name}", "",
             f"DiffPure reverse SDE, t* = {T_STAR}, one attack gradient = cross-entropy through "
             "the purifier and the classifier; median of the timed runs after a warm-up.", ""]
    for r in results:
        lines += [f"## {r['workload']} (batch {r['batch']}, {r['steps']} steps)", "",
                  f"purification: {r['images_per_second']:.1f} images/s" if r["images_per_second"]
                  else "purification: out of memory", "",
                  "| precision | gradient | seconds | ÷ exact's | peak GiB | steps: whole graph / "
                  "selective / input only |", "|---|---|---|---|---|---|"]
        exact = {g["precision"]: g for g in r["gradients"] if g["mode"] == "exact"}
        for g in r["gradients"]:
            if g.get("oom"):
                lines.append(f"| {g['precision']} | {g['mode']} | out of memory | – | – | – |")
                continue
            peak = "–" if g["peak_bytes"] is None else f"{g['peak_bytes'] / 2**30:.2f}"
            ref = exact.get(g["precision"], {})
            ratio = "–" if ref.get("oom") or not ref else f"{g['seconds'] / ref['seconds']:.2f}"
            policies = "/".join(str(g["policies"][p]) for p in POLICIES) \
                if "policies" in g else "–"
            lines.append(f"| {g['precision']} | {g['mode']} | {g['seconds']:.3f} | {ratio} | "
                         f"{peak} | {policies} |")
        ratio = _bf16_ratio(r["gradients"])
        eot = r["eot"]
        lines += ["", f"bf16 / fp32 speed-up of the exact gradient: {ratio}",
                  "EOT-20, one image: " + ("out of memory" if eot.get("oom") else
                                           f"batched {eot['batched_seconds']:.3f} s, sequential "
                                           f"{eot['sequential_seconds']:.3f} s, speed-up "
                                           f"{eot['speedup']:.1f}×")]
        proj = projection(r)
        if proj:
            lines.append(f"projected AutoAttack rand (EOT 20, 100 iterations × 2 losses) on "
                         f"{PROTOCOL_IMAGES} images: {proj['hours']:.1f} h ({proj['from']}, "
                         f"{proj['seconds_per_image_gradient'] * 1e3:.1f} ms per image gradient)")
        lines.append("")
    return "\n".join(lines)


def _bf16_ratio(rows: list[dict]) -> str:
    by = {(g["precision"], g["mode"]): g for g in rows}
    fp32, bf16 = by.get(("fp32", "exact")), by.get(("bf16", "exact"))
    if not fp32 or not bf16 or fp32.get("oom") or bf16.get("oom"):
        return "–"
    return f"{fp32['seconds'] / bf16['seconds']:.2f}×"


def run(out_dir: Path, device: str = "cuda", quick: bool = False, repeats: int = 2) -> str:
    """Measure every workload (``QUICK`` on a CPU for tests) and write gpu.md and gpu.json."""
    workloads, dt = (QUICK, T_STAR / 2) if quick else (WORKLOADS, DT)
    results = []
    for w in workloads:
        results.append(measure_workload(w, device, dt, repeats))
        results[-1]["projection"] = projection(results[-1])
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else device
    text = report(results, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu.md").write_text(text)
    (out_dir / "gpu.json").write_text(json.dumps({"device": name, "results": results},
                                                 indent=2) + "\n")
    return text
