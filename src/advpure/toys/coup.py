"""COUP's 1-D toy (§5.3.2, Fig. 3b): how often the guided reverse SDE flips a label.

Data ½N(−0.5, 1) + ½N(0.5, 1), labelled y = 0 / 1 by component; the reverse VP-SDE uses the
exact score of the diffused mixture. The guidance classifier is deliberately noisy:

    p(y=1|x) = p1(x) / (p0(x) + p1(x) + c·n(x)),   n(x) = sin(100x)/100,   p(y=0|x) = 1 − p(y=1|x)

clipped to [1e-6, 1 − 1e-6] (for large c the denominator can change sign far from 0). COUP runs
from x(t*) = 0.2 (label 1) to 0; a flip is x(0) < 0 (``flip_final``) or x < 0 at any step
(``flip_ever``). Every (λ, c) uses the same Brownian paths (common random numbers), so the
curves differ by the guidance only.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..diffusion import BatchNoise, VPSchedule, reverse_sde
from ..diffusion.analytic import GaussianMixtureEps, mixture_posterior_below
from ..guidance import ConfidenceGuidance, GuidedEps
from ..reports.plots import figure

TOY_MEANS = torch.tensor([-0.5, 0.5], dtype=torch.float64)   # class 0, class 1; unit variance
TOY_T_STAR, TOY_START = 0.1, 0.2
PROB_CLIP = 1e-6


class NoisyMixtureClassifier(nn.Module):
    """The toy's noisy classifier; returns log p(y|x) as logits (their softmax is p itself)."""

    def __init__(self, noise_level: float):
        super().__init__()
        self.noise_level = float(noise_level)      # c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, 0]
        density = [torch.exp(-(x - m) ** 2 / 2.0) / math.sqrt(2.0 * math.pi) for m in TOY_MEANS]
        wiggle = self.noise_level * torch.sin(100.0 * x) / 100.0
        p1 = (density[1] / (density[0] + density[1] + wiggle)).clamp(PROB_CLIP, 1.0 - PROB_CLIP)
        return torch.stack([torch.log1p(-p1), torch.log(p1)], dim=1)


def flip_probabilities(scale: float, noise_level: float, *, runs: int, dt: float,
                       seed: int = 0, schedule: VPSchedule | None = None) -> dict[str, float]:
    """(flip_final, flip_ever) of COUP with λ = ``scale`` and classifier noise c, over ``runs``."""
    schedule = VPSchedule() if schedule is None else schedule
    model = GaussianMixtureEps(TOY_MEANS, 1.0, schedule)
    if scale != 0:
        guidance = ConfidenceGuidance(NoisyMixtureClassifier(noise_level), second_order=False)
        model = GuidedEps(model, guidance, schedule, scale)
    x = torch.full((runs, 1), TOY_START, dtype=torch.float64)
    ever = torch.zeros(runs, dtype=torch.bool)

    def track(i: int, t: float, x_t: torch.Tensor) -> None:
        ever.logical_or_(x_t[:, 0] < 0)

    with torch.no_grad():                 # a simulation: nothing is differentiated afterwards
        x0 = reverse_sde(model, x, schedule, t_start=TOY_T_STAR, dt=dt,
                         noise=BatchNoise(torch.Generator().manual_seed(seed)), callback=track)
    return {"flip_final": float((x0[:, 0] < 0).double().mean()),
            "flip_ever": float(ever.double().mean())}


def closed_form_flip() -> float:
    """P(x0 < 0 | x(t*) = 0.2) of the exact posterior: the λ = 0, c = 0 limit as dt → 0."""
    return mixture_posterior_below(TOY_START, TOY_T_STAR, TOY_MEANS, 1.0, VPSchedule())


def run_toy(lambdas: list[float], noise_levels: list[float], *, runs: int = 100_000,
            dt: float = 1e-3, seed: int = 0, progress: bool = True) -> list[dict]:
    """Records {"lambda", "c", "runs", "flip_final", "flip_ever"} for every (λ, c)."""
    grid = [(c, lam) for c in noise_levels for lam in lambdas]
    records = []
    for c, lam in tqdm(grid, desc="COUP toy", disable=not progress):
        flips = flip_probabilities(lam, c, runs=runs, dt=dt, seed=seed)
        records.append({"lambda": lam, "c": c, "runs": runs, **flips})
    return records


def toy_table(records: list[dict]) -> str:
    """Markdown: one row per (c, λ), with the Monte-Carlo standard error of flip_final."""
    lines = ["| c | λ | P(flip) final | P(flip) at any step |", "|---|---|---|---|"]
    for r in records:
        se = math.sqrt(r["flip_final"] * (1.0 - r["flip_final"]) / r["runs"])
        lines.append(f"| {r['c']:g} | {r['lambda']:g} | {r['flip_final']:.4f} ± {se:.4f} | "
                     f"{r['flip_ever']:.4f} |")
    return "\n".join(lines)


def plot_toy(records: list[dict], path: Path) -> Path:
    """Flip probability against λ, one colour per noise level c (COUP Fig. 3b)."""
    with figure(path, size=(6, 4)) as (fig, axes):
        ax = axes[0, 0]
        for i, c in enumerate(sorted({r["c"] for r in records})):
            rows = sorted((r for r in records if r["c"] == c), key=lambda r: r["lambda"])
            lams = [r["lambda"] for r in rows]
            ax.plot(lams, [r["flip_final"] for r in rows], "o-", color=f"C{i}",
                    label=f"c = {c:g}")
            ax.plot(lams, [r["flip_ever"] for r in rows], "--", color=f"C{i}", alpha=0.6)
        ax.axhline(closed_form_flip(), color="gray", lw=0.8, ls=":",
                   label="exact posterior (λ = 0, c = 0)")
        ax.set_xlabel("guidance weight λ")
        ax.set_ylabel("label-flip probability")
        ax.set_title("COUP toy: solid x(0) < 0, dashed x < 0 at any step", fontsize=9)
        ax.legend(fontsize=8)
    return path


def write_toy(records: list[dict], out_dir: Path, json_path: Path | None = None) -> Path:
    """out_dir/toy.md (table), out_dir/flips.png (plot) and, if asked, the records as JSON."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_toy(records, out_dir / "flips.png")
    (out_dir / "toy.md").write_text(
        "# COUP toy: label-flip probability (COUP §5.3.2, Fig. 3b)\n\n"
        f"From x(t*) = {TOY_START} at t* = {TOY_T_STAR}; exact posterior P(x0 < 0) = "
        f"{closed_form_flip():.4f}.\n\n{toy_table(records)}\n\n![flip probability](flips.png)\n")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(records, indent=2) + "\n")
    return out_dir
