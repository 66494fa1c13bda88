"""The two DiffAttack checks of docs/results/digits-breakers.md.

    python docs/results/digits_breakers_diffattack.py paired RUN_DIR [RUN_DIR ...]
        advpure's DiffAttack (CW) against the PGD+EOT it extends, paired over the images of
        each `advpure table` run directory: points, images lower / higher, two-sided exact
        sign test.
    python docs/results/digits_breakers_diffattack.py signs
        on DiffPure (digits, 64 images, one draw, a random start in the ε-ball): how many pixel
        signs of ∇(CW + λ·L_dev) differ from those of ∇CW, for λ = 1, 100, 10⁴.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from scipy.stats import binomtest

import advpure
from advpure.attacks.diffattack import DeviationProbe
from advpure.attacks.losses import cw_margin
from advpure.reports.report import load_run


def paired(run_dirs: list[str]) -> None:
    for run_dir in run_dirs:
        result = load_run(Path(run_dir))
        pgd = {("cw" if "(cw" in k else "ce"): k for k in result.attacks if k.startswith("pgd")}
        diffattack = next(k for k in result.attacks
                          if k.startswith("diffattack") and "(cw" in k and "authors" not in k)
        for loss, reference in pgd.items():
            for kind in ("single_draw", "all_draws"):
                a, b = result.per_image(diffattack, kind), result.per_image(reference, kind)
                lower = sum(p < q for p, q in zip(a, b))
                higher = sum(p > q for p, q in zip(a, b))
                p = binomtest(lower, lower + higher).pvalue if lower + higher else 1.0
                print(f"{run_dir}: DiffAttack (CW) − PGD+EOT ({loss.upper()}), {kind}: "
                      f"{100 * (sum(a) - sum(b)) / len(a):+.1f} points, {lower} images lower / "
                      f"{higher} higher, two-sided sign test p = {p:.2g}")


def signs() -> None:
    dm = advpure.load_diffusion("builtin:digits-unet")
    clf = advpure.load_classifier("builtin:digits-cnn")
    x, y = advpure.data.load("digits", "test")
    x, y = x[:64], y[:64]
    defense = advpure.PurifiedClassifier(advpure.purifiers.DiffPure(dm, t_star=0.1, dt=1e-2),
                                         clf, generator=torch.Generator().manual_seed(0))
    start = x + 0.4 * torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) - 0.2
    start = start.clamp(0, 1).requires_grad_(True)
    logits, deviation = DeviationProbe(defense, x)(start)
    (g_cw,) = torch.autograd.grad(cw_margin(logits, y).sum(), start, retain_graph=True)
    (g_dev,) = torch.autograd.grad(deviation.sum(), start)
    print(f"median |∂CW/∂x| {g_cw.abs().median():.3g}, "
          f"median |∂L_dev/∂x| {g_dev.abs().median():.3g}")
    for weight in (1, 100, 10_000):
        flipped = (torch.sign(g_cw + weight * g_dev) != torch.sign(g_cw)).float().mean()
        print(f"λ = {weight:g}: {100 * flipped:.2f} % of the pixel signs differ from CW's")


if __name__ == "__main__":
    if sys.argv[1:2] == ["paired"]:
        paired(sys.argv[2:])
    elif sys.argv[1:2] == ["signs"]:
        signs()
    else:
        sys.exit(__doc__)
