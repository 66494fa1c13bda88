"""Attention-mask visualisations of the heterogeneous purifier (Pei et al., Fig. 5): per image
the input, every block's attention map, the mask and the purified image. ``advpure masks``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .. import data
from ..attacks import pgd
from ..attention import attention_maps, default_blocks
from ..models import load_classifier, load_diffusion
from ..purifiers import HeteroPure, HeteroSettings
from ..reports.plots import figure


@dataclass(frozen=True)
class MaskSettings:
    dataset: str = "digits"
    data_root: str | None = None
    n: int = 8                          # images of the fixed test subset
    subset_seed: int = 0
    classifier: str = "builtin:digits-cnn"
    diffusion: str = "builtin:digits-unet"
    t_large: float = HeteroSettings.default("t_large")
    t_small: float = HeteroSettings.default("t_small")
    tau: float = HeteroSettings.default("tau")
    mask_convention: str = "paper"      # paper | authors-code (advpure.attention)
    dt: float = 1e-2
    eps: float = 0.0                    # > 0: PGD-20 on the bare classifier first (ℓ∞)
    seed: int = 0                       # purification noise


def mask_panels(purifier: HeteroPure, x: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    """The panels of ``x`` (N×C×H×W in [0, 1]): "image", "maps" (blocks × N × H × W), "mask",
    "purified" (with noise seed ``seed``)."""
    maps = attention_maps(purifier.classifier, x, purifier.mask_blocks,
                          normalisation=purifier.mask_normalisation,
                          convention=purifier.mask_convention)
    mask = purifier.mask(x)
    with torch.no_grad():
        purified = purifier(x, torch.Generator().manual_seed(seed), mask=mask)
    return {"image": x, "maps": maps, "mask": mask, "purified": purified}


def mask_figure(purifier: HeteroPure, x: torch.Tensor, path: Path, seed: int = 0,
                titles: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Save the figure of ``x`` to ``path`` (nothing else is written); returns its panels."""
    panels = mask_panels(purifier, x, seed)
    plot_masks(panels, purifier, path, titles)
    return panels


def plot_masks(panels: dict[str, torch.Tensor], purifier: HeteroPure, path: Path,
          titles: list[str] | None) -> None:
    blocks = purifier.mask_blocks or default_blocks(purifier.classifier)
    columns = ["input", *[f"AM: {b}" for b in blocks], f"mask (τ = {purifier.tau:g})", "purified"]
    n = panels["image"].shape[0]
    with figure(path, n, len(columns), (1.6 * len(columns), 1.6 * n + 0.4)) as (fig, axes):
        for i in range(n):
            row = [_show(panels["image"][i]), *[(m[i], "viridis") for m in panels["maps"]],
                   (panels["mask"][i, 0], "gray"), _show(panels["purified"][i])]
            for ax, (image, cmap) in zip(axes[i], row):
                ax.imshow(image.cpu().numpy(), cmap=cmap, vmin=0.0, vmax=1.0)
                ax.set_xticks([])
                ax.set_yticks([])
            if titles:
                axes[i, 0].set_ylabel(titles[i], fontsize=7)
        for ax, title in zip(axes[0], columns):
            ax.set_title(title, fontsize=7)
        fig.suptitle(f"t_l = {purifier.t_large:g} inside the mask, t_s = {purifier.t_small:g} "
                     f"outside, {purifier.mask_normalisation} maps, "
                     f"{purifier.mask_convention} mask convention", fontsize=8)


def _show(image: torch.Tensor) -> tuple[torch.Tensor, str | None]:
    """C×H×W -> an imshow array and colour map (grey for one channel)."""
    if image.shape[0] == 1:
        return image[0], "gray"
    return image.permute(1, 2, 0), None


def run_masks(settings: MaskSettings, path: Path) -> tuple[Path, float]:
    """The figure for the first ``n`` images of the fixed test subset (adversarial if eps > 0),
    and the fraction of their pixels the mask covers."""
    s = settings
    x, y = data.load(s.dataset, "test", root=s.data_root)
    x, y, _ = data.fixed_subset(x, y, s.n, s.subset_seed)
    classifier = load_classifier(s.classifier)
    purifier = HeteroPure(load_diffusion(s.diffusion), classifier, t_large=s.t_large,
                          t_small=s.t_small, tau=s.tau, dt=s.dt,
                          mask_convention=s.mask_convention)
    if s.eps > 0:
        x = pgd(classifier, x, y, eps=s.eps, generator=torch.Generator().manual_seed(s.seed))
    panels = mask_panels(purifier, x, s.seed)
    with torch.no_grad():
        before, after = (classifier(panels[k]).argmax(dim=1) for k in ("image", "purified"))
    titles = [f"y={int(t)}: {int(b)} → {int(a)}" for t, b, a in zip(y, before, after)]
    plot_masks(panels, purifier, path, titles)
    return path, float(panels["mask"].mean())
