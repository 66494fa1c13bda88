"""Run directories, Markdown tables, image grids and plots."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .experiment import EvalResult, describe


def pct(stat: dict[str, float]) -> str:
    """'93.8 ± 1.2 %' from a {'mean', 'std'} dict of fractions."""
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f} %"


def results_table(results: list[EvalResult]) -> str:
    """A Markdown table: one row per evaluation, accuracies as mean ± std over seeds."""
    lines = ["| defense vs attack | seeds | standard accuracy | robust accuracy |",
             "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {describe(r.config)} | {len(r.per_seed)} | "
                     f"{pct(r.accuracy('standard'))} | {pct(r.accuracy('robust'))} |")
    return "\n".join(lines)


def write_run(result: EvalResult, out_dir: Path) -> Path:
    """Write config.json, results.json and results.md into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(result.config.model_dump_json(indent=2) + "\n")
    (out_dir / "results.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
    cfg = result.config
    (out_dir / "results.md").write_text(
        f"# advpure evaluation\n\n{results_table([result])}\n\n"
        f"Dataset {cfg.dataset} ({cfg.split}), fixed subset of {len(result.subset_indices)} "
        f"images (subset seed {cfg.subset_seed}), classifier `{cfg.classifier}`, seeds "
        f"{', '.join(map(str, cfg.seeds))}. Standard deviation is the sample std over seeds.\n")
    return out_dir


def save_image_grid(rows: dict[str, torch.Tensor], path: Path,
                    captions: dict[str, list[str]] | None = None) -> Path:
    """One row of images per entry (e.g. clean / adversarial / purified), labelled on the left;
    ``captions[row]`` puts a short text above each image of that row."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(1.1 * n + 1, 1.2 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(n):
            img = images[c].detach().cpu().permute(1, 2, 0).squeeze(-1).numpy()
            axes[r, c].imshow(img, cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if captions and label in captions:
                axes[r, c].set_title(captions[label][c], fontsize=8)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_accuracy_vs(xs: list[float], series: dict[str, list[float]], xlabel: str,
                     title: str, path: Path, errors: dict[str, list[float]] | None = None,
                     baselines: dict[str, float] | None = None) -> Path:
    """Accuracy curves (fractions) against a swept parameter, with optional error bars (std over
    seeds) and horizontal reference lines (e.g. the undefended classifier)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, ys in series.items():
        err = None if errors is None else [100 * e for e in errors[label]]
        ax.errorbar(xs, [100 * v for v in ys], yerr=err, marker="o", capsize=3, label=label)
    for (label, value), style in zip((baselines or {}).items(), ("--", ":", "-.")):
        ax.axhline(100 * value, color="grey", linestyle=style, linewidth=1, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
