"""Run directories, Markdown/JSON/CSV tables in the papers' shape, image grids and plots.

Everything here is computed from an ``EvalResult``, which ``load_run`` rebuilds from a run's
record store alone (``advpure report RUN_DIR``).
"""
from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import torch

from ..evaluation.config import EvalConfig
from ..evaluation.experiment import describe
from ..evaluation.results import EvalResult
from ..evaluation.store import STORE_NAME, RecordStore
from .plots import figure


def pct(stat: dict[str, float]) -> str:
    """'93.8 ± 1.2 %' from a {'mean', 'std'} dict of fractions; '93.8 %' for one seed."""
    if stat.get("seeds", 2) == 1:
        return f"{100 * stat['mean']:.1f} %"
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f} %"


def seeds_and_draws(cfg: EvalConfig) -> str:
    """'seeds 0, 1, 2; 1 purification draw' — never readable as four seeds."""
    draws = f"{cfg.draws} purification draw{'s' if cfg.draws > 1 else ''}"
    return f"seed{'s' if len(cfg.seeds) > 1 else ''} {', '.join(map(str, cfg.seeds))}; {draws}"


def ci(stat: dict[str, float]) -> str:
    """'[88.1, 97.0]' from a dict with 'ci_low', 'ci_high' fractions."""
    return f"[{100 * stat['ci_low']:.1f}, {100 * stat['ci_high']:.1f}]"


def results_table(results: list[EvalResult]) -> str:
    """A Markdown table: one row per evaluation, accuracies as mean ± std over seeds; the
    robust column (the per-image worst case over the run's attacks) only where attacks ran."""
    attacked = any(r.attacks for r in results)
    lines = ["| defense vs attack | seeds | standard accuracy |"
             + (" robust accuracy |" if attacked else ""),
             "|---|---|---|" + ("---|" if attacked else "")]
    for r in results:
        robust = (f" {pct(r.accuracy('robust'))} |" if r.attacks else " – |") if attacked else ""
        lines.append(f"| {describe(r.config)} | {len(r.config.seeds)} | "
                     f"{pct(r.accuracy('standard'))} |{robust}")
    return "\n".join(lines)


def paper_rows(result: EvalResult) -> list[dict[str, str]]:
    """The papers' table shape: one row per accuracy (standard, each attack, the AutoAttack
    papers' rule, our worst case), single-draw, vote and all-draws accuracy, each mean ± std with
    a 95 % CI."""
    rows = []
    summary = result.summary()
    for which, stats in summary["accuracies"].items():
        if which == "robust" and not result.attacks:
            continue                                   # no attack ran: no robust accuracy
        label = {"standard": "standard (clean)",
                 "robust": "worst case over attacks, per image (ours)"}.get(which, which)
        rows.append({"accuracy": label,
                     "single draw": f"{pct(stats['single_draw'])} {ci(stats['single_draw'])}",
                     "vote": f"{pct(stats['vote'])} {ci(stats['vote'])}",
                     "all draws": f"{pct(stats['all_draws'])} {ci(stats['all_draws'])}",
                     "any iterate": f"{pct(stats['any_iterate'])} {ci(stats['any_iterate'])}"})
    rule = summary["autoattack_papers_rule"]
    if rule is not None:
        rows.insert(-1, {"accuracy": "AutoAttack, min of standard and rand (papers' rule)",
                         "single draw": pct(rule), "vote": "–", "all draws": "–",
                         "any iterate": "–"})
    return rows


PAPER_COLUMNS = {"single draw": "single draw", "vote": "vote",
                 "all draws": "all draws of the kept image (fresh)",
                 "any iterate": "any draw of any iterate (DiffHammer's rule)"}


def paper_table(result: EvalResult) -> str:
    rows = paper_rows(result)
    lines = [f"| {result.config.defense.describe()} | {' | '.join(PAPER_COLUMNS.values())} |",
             "|---|" + "---|" * len(PAPER_COLUMNS)]
    lines += [f"| {r['accuracy']} | {' | '.join(r[c] for c in PAPER_COLUMNS)} |" for r in rows]
    return "\n".join(lines)


def report_text(result: EvalResult) -> str:
    cfg = result.config
    standard = "the same images" if result.standard_indices == result.subset_indices else \
        f"{len(result.standard_indices)} images"
    notes = [f"Dataset {cfg.dataset} ({cfg.split}): robust accuracy on a fixed subset of "
             f"{len(result.subset_indices)} images (subset seed {cfg.subset_seed}), standard "
             f"accuracy on {standard}; classifier "
             f"`{cfg.classifier}`; {seeds_and_draws(cfg)} per final evaluation.",
             "Mean ± sample std over seeds. "
             + accuracy_rules(cfg.draws, len(result.attacks))]
    unlogged = [a for a in result.attacks if a not in result.logged_attacks()]
    if unlogged:
        notes.append("Attacks that keep no log of their draws (any draw of any iterate is "
                     "their all-draws accuracy): " + ", ".join(f"`{a}`" for a in unlogged) + ".")
    reductions = cfg.budget_reductions()
    if reductions:
        notes.append(f"**Reduced budgets** against protocol `{cfg.protocol}`: "
                     + "; ".join(reductions) + ".")
    return (f"# advpure evaluation\n\n{note_line(cfg)}{results_table([result])}\n\n"
            f"{paper_table(result)}\n\n" + "\n\n".join(notes) + "\n")


def accuracy_rules(draws: int, attacks: int) -> str:
    """What each accuracy and interval of a report means at R = ``draws`` with ``attacks``
    attacks (results.md and table.md say it in the same words)."""
    fresh = draws - draws // 2
    worst = ("the attack's own accuracy (one attack)" if attacks <= 1 else
             f"per image, single draw: the attack with the fewest correct of the first "
             f"{draws // 2} draws (a tie to the attack strongest on those draws), scored on the "
             f"other {fresh} (fresh) draws, so that the minimum of noisy estimates does not pick "
             "up draw noise; vote, all draws and any iterate: the minimum over the attacks "
             "(the image survives every attack under that rule)"
             if draws > 1 else
             "per image, the minimum over the attacks; in single draw biased low by draw noise "
             "(more draws, --draws, choose on half of them and score on the rest)")
    return ("Brackets: 95 % Wilson interval at the effective number of images "
            "n·p̂(1 − p̂)/s² (s² the variance over the images of their correctness, each "
            "averaged over its seeds and draws: the image is the unit; the row's n where s² = 0). "
            f"Over R = {draws} draws: single draw, the fraction of draws that are correct; vote, "
            "the majority of the draws, a tie for the most votes counted as 1/k of a vote (a "
            "tie broken at random); all draws of the kept image (N-evaluation, falls with R "
            "by construction): every one of its fresh draws is correct, the resubmission risk; "
            "any draw of any iterate (DiffHammer's rule): also wrong when some draw the attack "
            f"scored on its way misclassified the image. Worst case (ours): {worst}.")


def note_line(cfg: EvalConfig) -> str:
    """The config's ``note`` as a bold first paragraph (e.g. a reduced protocol), or nothing."""
    return f"**{cfg.note}**\n\n" if cfg.note else ""


def attack_grid(result: EvalResult, path: Path, n_images: int = 8) -> Path | None:
    """Clean images and each attack's adversarial ones (first seed, first images), captioned
    with the true label and the first draw's prediction; only for runs that keep their
    adversarial images (``save_adversarial``), so that ``report`` rebuilds it from the store."""
    from .. import data

    if not result.config.save_adversarial:
        return None
    seed = result.config.seeds[0]
    rows = {a: result.adversarial[(seed, a)][:n_images] for a in result.attacks
            if (seed, a) in result.adversarial}
    if not rows:
        return None
    cfg = result.config
    index = result.subset_indices[:n_images]
    x, y = data.load(cfg.dataset, cfg.split, root=cfg.data_root, indices=torch.tensor(index))
    first = {(o.attack, o.sample_index): o.predictions[0] for o in result.outcomes
             if o.seed == seed}
    captions = {"clean": [f"label {int(label)}" for label in y]}
    captions |= {a: [f"pred. {first[(a, i)]}" for i in index] for a in rows}
    return save_image_grid({"clean": x, **rows}, path, captions)


def write_run(result: EvalResult, out_dir: Path) -> Path:
    """Write config.json, results.json, results.md, results.csv and, when the run keeps its
    adversarial images, grid.png into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = attack_grid(result, out_dir / "grid.png")
    (out_dir / "config.json").write_text(result.config.model_dump_json(indent=2) + "\n")
    (out_dir / "results.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
    figure = "" if grid is None else "\n![clean and adversarial images](grid.png)\n"
    (out_dir / "results.md").write_text(report_text(result) + figure)
    write_csv(result, out_dir / "results.csv")
    return out_dir


CSV_KINDS = ("single_draw", "vote", "all_draws", "any_iterate")
CSV_STATS = ("mean", "std", "ci_low", "ci_high", "n_effective")


def write_csv(result: EvalResult, path: Path) -> None:
    """results.csv: one row per accuracy, numbers only — the images, the draws R, the draws
    its single-draw accuracy is scored on (the worst case: its fresh draws), and for each kind (single draw, vote, all draws of
    the kept image, any draw of any iterate) its mean and sample std over seeds, its 95 %
    interval, as fractions, and the effective number of images of the interval; the papers'
    AutoAttack rule has a single-draw mean and std only."""
    summary = result.summary()
    fields = ["defense", "accuracy", "seeds", "images", "draws", "single_draw_draws"] + \
        [f"{k}_{s}" for k in CSV_KINDS for s in CSV_STATS]
    defense = result.config.defense.describe()
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for which, stats in summary["accuracies"].items():
            if which == "robust" and not result.attacks:
                continue
            row = {"defense": defense, "accuracy": which, "seeds": len(result.config.seeds),
                   "images": stats["single_draw"]["n"], "draws": result.config.draws,
                   "single_draw_draws": result.draws_scored(which)}
            row |= {f"{k}_{s}": f"{stats[k][s]:.6g}" for k in CSV_KINDS for s in CSV_STATS}
            writer.writerow(row)
        rule = summary["autoattack_papers_rule"]
        if rule is not None:
            writer.writerow({"defense": defense, "accuracy": "autoattack papers' rule",
                             "seeds": len(result.config.seeds),
                             "draws": result.config.draws,
                             "single_draw_mean": f"{rule['mean']:.6g}",
                             "single_draw_std": f"{rule['std']:.6g}"})


def load_run(run_dir: Path) -> EvalResult:
    """The run of ``run_dir`` (its config.json's, else the store's last), rebuilt from the
    record store alone."""
    path = Path(run_dir) / STORE_NAME
    if not path.is_file():
        raise ValueError(f"expected a run directory with {STORE_NAME}, found none in {run_dir}")
    try:
        store = RecordStore(path)
    except sqlite3.DatabaseError as err:
        raise ValueError(f"{path} is corrupt ({err}): it cannot be read. Re-run the "
                         "evaluation into a new directory (its command with another --out)") \
            from None
    try:
        run = _directory_run(store, Path(run_dir))
        config = EvalConfig.model_validate_json(run["config"])
        outcomes = store.outcomes(run["run_id"])
        tampered = store.disagreements(run["run_id"])
        if tampered:
            raise ValueError(f"{path}: {len(tampered)} stored outcome(s) disagree with their own "
                             "predictions — the file was changed after it was written; "
                             "refusing to report from it: " + "; ".join(tampered[:3])
                             + ("; …" if len(tampered) > 3 else "") + ". Re-run the "
                             "evaluation into a new directory")
        attacks = list(dict.fromkeys(o.attack for o in outcomes if o.attack != "clean"))
        clean = [o.sample_index for o in outcomes
                 if o.seed == config.seeds[0] and o.attack == "clean"]
        subset = robust_subset(outcomes, config, attacks, clean)
        adversarial = _stored_adversarial(store, run["run_id"], config, attacks, subset)
    finally:
        store.close()
    return EvalResult(config, subset, attacks, outcomes, adversarial=adversarial,
                      standard_indices=sorted(clean))


def robust_subset(outcomes: list, config: EvalConfig, attacks: list[str],
                  clean: list[int]) -> list[int]:
    """The attacked images (those with an outcome of the first seed and attack), whatever the
    order the rows were written in (a Ray run may write a standard-only shard first); without
    an attack, the first ``n`` clean rows (the runner writes the robust subset's first)."""
    if attacks:
        return sorted({o.sample_index for o in outcomes
                       if o.seed == config.seeds[0] and o.attack == attacks[0]})
    return sorted(clean[:min(config.n, len(clean))])


def _directory_run(store: RecordStore, run_dir: Path) -> dict:
    runs = store.runs()
    if not runs:
        raise ValueError(f"{store.path}: the store holds no run (the evaluation was interrupted "
                         "before its first outcome): run the evaluation's command again")
    config = run_dir / "config.json"
    run_id = store.find_run(config.read_text()) if config.is_file() else None
    return runs[-1] if run_id is None else store.run(run_id)


def _stored_adversarial(store: RecordStore, run_id: str, config: EvalConfig,
                        attacks: list[str], subset: list[int]) -> dict:
    """The first seed's stored adversarial images per attack (``--save-adversarial``)."""
    if not config.save_adversarial or not subset:
        return {}
    from .. import data

    first = torch.tensor(subset[:1])
    shape = tuple(data.load(config.dataset, config.split, root=config.data_root,
                            indices=first)[0].shape[1:])
    seed, found = config.seeds[0], {}
    for attack in attacks:
        images = store.adversarial(run_id, seed, attack, shape)
        if len(images) == len(subset):
            found[(seed, attack)] = torch.stack([images[i] for i in subset])
    return found


def save_image_grid(rows: dict[str, torch.Tensor], path: Path,
                    captions: dict[str, list[str]] | None = None) -> Path:
    """One row of images per entry (e.g. clean / adversarial / purified), labelled on the left;
    ``captions[row]`` puts a short text above each image of that row."""
    n = min(len(v) for v in rows.values())
    with figure(path, len(rows), n, (1.1 * n + 1, 1.2 * len(rows))) as (fig, axes):
        for r, (label, images) in enumerate(rows.items()):
            for c in range(n):
                img = images[c].detach().cpu().permute(1, 2, 0).squeeze(-1).numpy()
                axes[r, c].imshow(img, cmap="gray", vmin=0, vmax=1)
                axes[r, c].set_xticks([])
                axes[r, c].set_yticks([])
                if captions and label in captions:
                    axes[r, c].set_title(captions[label][c], fontsize=8)
            axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center")
    return path


def plot_accuracy_vs(xs: list[float], series: dict[str, list[float]], xlabel: str,
                     title: str, path: Path,
                     intervals: dict[str, list[tuple[float, float]]] | None = None,
                     baselines: dict[str, float] | None = None) -> Path:
    """Accuracy curves (fractions) against a swept parameter, with optional error bars (each
    point's 95 % interval (low, high) over the images) and horizontal reference lines (e.g. the
    undefended classifier)."""
    with figure(path, size=(5.5, 3.8)) as (fig, axes):
        ax = axes[0, 0]
        for label, ys in series.items():
            err = None
            if intervals is not None:
                err = [[100 * (y - lo) for y, (lo, _) in zip(ys, intervals[label])],
                       [100 * (hi - y) for y, (_, hi) in zip(ys, intervals[label])]]
            ax.errorbar(xs, [100 * v for v in ys], yerr=err, marker="o", capsize=3, label=label)
        for (label, value), style in zip((baselines or {}).items(), ("--", ":", "-.")):
            ax.axhline(100 * value, color="grey", linestyle=style, linewidth=1, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(title, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return path
