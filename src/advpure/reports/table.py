"""``advpure table``: the seed papers' table — one row per defense, standard accuracy and
robust accuracy per attack, the AutoAttack papers' rule and our per-image worst case — from one
evaluation per defense (each a resumable run directory)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from ..evaluation.config import DefenseConfig, EvalConfig
from ..evaluation.stats import holm, paired_sign_test
from ..purifiers import PURIFIERS, PurifierSettings
from .report import accuracy_rules, ci, note_line, pct, seeds_and_draws
from .sweep import run_or_resume

COMMON = tuple(f for f in PurifierSettings.model_fields if f != "name")   # every purifier has


def table_configs(base: EvalConfig, names: list[str]) -> list[EvalConfig]:
    """One config per row: the file's ``defenses`` if it lists any, else each name in
    ``names`` at its defaults (``defense_for``)."""
    if base.defenses:
        return [base.replace(defense=d, defenses=()) for d in base.defenses]
    return [defense_for(base, name) for name in names]


def defense_for(base: EvalConfig, name: str) -> EvalConfig:
    """``base`` defended by purifier ``name`` at its defaults, keeping the common options."""
    if name == base.defense.name:
        return base
    given = base.defense.model_dump()
    solver = getattr(PURIFIERS[name], "has_solver", True)        # LM takes no dt
    common = {f: given[f] for f in COMMON if f in given and (solver or f != "dt")} \
        if name != "none" else {}
    return base.replace(defense=DefenseConfig(name=name, **common))


def run_directories(defenses: list[EvalConfig]) -> list[str]:
    """One run directory per row, named by its defense: 'gdmp', then 'gdmp-2', … where a
    purifier appears more than once (its variants)."""
    names, seen = [], {}
    for cfg in defenses:
        name = cfg.defense.name
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return names


def run_table(base: EvalConfig, defenses: list[EvalConfig], out_dir: Path,
              progress: bool = True, executor=None) -> dict:
    """Evaluate every config in ``defenses`` (one run directory each) and write table.md,
    table.csv and table.json into ``out_dir``."""
    summaries = [run_or_resume(cfg, out_dir / name, progress, executor)
                 for cfg, name in zip(defenses, run_directories(defenses))]
    attacks = [a.key() for a in base.resolved_attacks()]
    rows = [_row(cfg, s, attacks) for cfg, s in zip(defenses, summaries)]
    table = {"note": base.note, "attacks": attacks, "rows": rows,
             "budget_reductions": base.budget_reductions(),
             "images": [_images(s) for s in summaries],
             "strongest": with_holm([strongest_attack(cfg.defense.describe(), s, attacks)
                                     for cfg, s in zip(defenses, summaries)])}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    (out_dir / "table.md").write_text(table_markdown(table, base))
    write_table_csv(defenses, summaries, attacks, out_dir / "table.csv")
    return table


def _images(summary: dict) -> dict[str, int]:
    """The row's images: robust subset, standard set, and the draws each is scored on."""
    accuracies = summary["accuracies"]
    draws = summary.get("draws_scored", {})
    return {"robust": accuracies["robust"]["single_draw"]["n"],
            "standard": accuracies["standard"]["single_draw"]["n"],
            "draws": draws.get("standard", {}).get("single_draw"),
            "worst_case_single_draws": draws.get("robust", {}).get("single_draw")}


TABLE_CSV = ("defense", "measure", "kind", "mean", "std", "ci_low", "ci_high", "images",
             "n_effective", "seeds", "draws", "seconds", "ssim")


def write_table_csv(defenses: list[EvalConfig], summaries: list[dict], attacks: list[str],
                    path: Path) -> None:
    """table.csv in long form, numbers only: one row per (defense, measure, kind), the measure
    'standard', an attack's key, 'worst case' or "autoattack papers' rule"; its images, seeds
    and the draws R it is scored on; the attack's seconds and SSIM."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_CSV)
        writer.writeheader()
        for cfg, summary in zip(defenses, summaries):
            seeds = len(cfg.seeds)
            for which, by_kind in summary["accuracies"].items():
                measure = "worst case" if which == "robust" else which
                for kind, stat in by_kind.items():
                    writer.writerow({
                        "defense": cfg.defense.describe(), "measure": measure, "kind": kind,
                        **{k: f"{stat[k]:.6g}" for k in ("mean", "std", "ci_low", "ci_high",
                                                         "n_effective")},
                        "images": stat["n"], "seeds": seeds,
                        "draws": summary.get("draws_scored", {}).get(which, {}).get(
                            kind, cfg.draws),
                        "seconds": _number(summary.get("attack_seconds", {}).get(which)),
                        "ssim": _number(summary.get("perceptual", {}).get(which, {})
                                        .get("ssim"))})
            rule = summary["autoattack_papers_rule"]
            if rule is not None:
                writer.writerow({"defense": cfg.defense.describe(),
                                 "measure": "autoattack papers' rule", "kind": "single_draw",
                                 "mean": f"{rule['mean']:.6g}", "std": f"{rule['std']:.6g}",
                                 "seeds": seeds, "draws": cfg.draws})


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


KIND_TITLES = {"single_draw": "single-draw accuracy",
               "vote": "vote accuracy (majority of the draws)",
               "all_draws": "all-draws accuracy (N-evaluation: correct in every fresh draw of "
                            "the kept image)",
               "any_iterate": "any draw of any iterate (DiffHammer's rule: also wrong where a "
                              "draw the attack scored on its way erred)"}


def _row(cfg: EvalConfig, summary: dict, attacks: list[str]) -> dict[str, str]:
    """One defense's cells: per kind (single draw, vote, all draws, any iterate) and accuracy,
    and the
    compute time of each attack."""
    accuracies = summary["accuracies"]
    row = {"defense": cfg.defense.describe()}
    for kind in KIND_TITLES:
        def cell(which: str) -> str:
            stat = accuracies[which][kind]
            return f"{pct(stat)} {ci(stat)}"
        row |= {f"{kind}: standard": cell("standard")}
        row |= {f"{kind}: {a}": cell(a) for a in attacks}
        rule = summary["autoattack_papers_rule"]
        if rule is not None and kind == "single_draw":
            row[f"{kind}: AutoAttack (papers' rule)"] = pct(rule)
        row[f"{kind}: worst case (ours)"] = cell("robust")
    seconds = summary.get("attack_seconds", {})
    row |= {f"seconds: {a}": f"{seconds[a]:.0f}" for a in attacks if a in seconds}
    perceptual = summary.get("perceptual", {})
    row |= {f"ssim: {a}": f"{perceptual[a]['ssim']:.3f}" for a in attacks if a in perceptual}
    return row


def strongest_attack(defense: str, summary: dict, attacks: list[str]) -> dict:
    """The attack of lowest single-draw accuracy against ``defense`` and, for every other one,
    how many points it leaves more, the images where the strongest leaves fewer / more
    correct, the Clopper–Pearson interval of that share and the exact two-sided sign test
    (``stats.paired_sign_test``; it rejects exactly where the interval excludes ½).
    ``with_holm`` adjusts the p-values over a whole table."""
    per_image = summary.get("per_image", {})
    if len(attacks) < 2 or not all(a in per_image for a in attacks):
        return {"defense": defense, "strongest": None, "others": {}}
    accuracy = {a: summary["accuracies"][a]["single_draw"]["mean"] for a in attacks}
    best = min(attacks, key=accuracy.get)
    others = {a: {"points": 100 * (accuracy[a] - accuracy[best]),
                  **paired_sign_test(per_image[best], per_image[a])}
              for a in attacks if a != best}
    return {"defense": defense, "strongest": best, "accuracy": accuracy[best], "others": others}


def with_holm(entries: list[dict]) -> list[dict]:
    """Every entry's p-values with Holm's adjustment over all the comparisons of the table
    (the family: every defense × every attack against that defense's strongest)."""
    cells = [(e, a) for e in entries for a in e["others"]]
    adjusted = holm([e["others"][a]["p_value"] for e, a in cells])
    for (entry, attack), p in zip(cells, adjusted):
        entry["others"][attack]["p_holm"] = p
    return entries


def _strongest_section(table: dict) -> str:
    attacks = table["attacks"]
    family = sum(len(e["others"]) for e in table["strongest"])
    lines = ["## Strongest attack per defense\n",
             "Single-draw accuracy of the strongest attack (the lowest); each other cell: how "
             "many points more that attack leaves · the images the strongest leaves fewer : "
             "more correct, with the 95 % Clopper–Pearson interval (%) of the first share · the "
             "exact two-sided sign test over those images (p) and its Holm adjustment over the "
             f"{family} comparisons of this table (the family). The strongest is chosen as the "
             "minimum of noisy estimates: a difference counts where the Holm-adjusted p is "
             "below the level you state, not where the raw one is.\n",
             "| defense | strongest | " + " | ".join(attacks) + " |",
             "|" + "---|" * (len(attacks) + 2)]
    for entry in table["strongest"]:
        if entry["strongest"] is None:
            continue
        cells = [f"**{100 * entry['accuracy']:.1f} %**" if a == entry["strongest"] else
                 _gap(entry["others"][a])
                 for a in attacks]
        lines.append(f"| {entry['defense']} | {entry['strongest'].split('(')[0]} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def _gap(other: dict) -> str:
    """'+10.9 · 24:7 [59, 90] · p = 0.00072 (Holm 0.011)'."""
    counts = f" · {other['first_lower']}:{other['first_higher']}" \
        f" [{100 * other['share_low']:.0f}, {100 * other['share_high']:.0f}]" \
        if "share_low" in other else ""
    adjusted = f" (Holm {other['p_holm']:.2g})" if "p_holm" in other else ""
    return f"+{other['points']:.1f}{counts} · p = {other['p_value']:.2g}{adjusted}"


def table_markdown(table: dict, base: EvalConfig) -> str:
    sections = [_section(table["rows"], f"{kind}: ", title)
                for kind, title in KIND_TITLES.items()]
    sections.append(_section(table["rows"], "seconds: ", "compute time per attack (s, mean "
                             "over seeds)"))
    if any(entry["strongest"] for entry in table.get("strongest", [])):
        sections.append(_strongest_section(table))
    if any(c.startswith("ssim: ") for row in table["rows"] for c in row):
        sections.append(_section(table["rows"], "ssim: ", "SSIM of the adversarial images to "
                                 "the clean ones (first seed; LPIPS needs pretrained weights "
                                 "that cannot be had offline)"))
    notes = [f"{base.dataset} ({base.split}); {_images_note(table)}; "
             f"{seeds_and_draws(base)} per final evaluation; accuracies as mean ± sample std "
             "over seeds. AutoAttack (papers' rule): the minimum of the standard and rand "
             "versions' aggregate accuracies. "
             + accuracy_rules(base.draws, len(table["attacks"]))]
    if table["budget_reductions"]:
        notes.append(f"**Reduced budgets** against protocol `{base.protocol}`: "
                     + "; ".join(table["budget_reductions"]) + ".")
    return ("# Defenses under attack\n\n" + note_line(base) + "\n\n".join(sections) + "\n\n"
            + "\n\n".join(notes) + "\n")


def _images_note(table: dict) -> str:
    """'robust accuracy on 64 images, standard accuracy on 64', per row where rows differ."""
    def text(images: dict) -> str:
        return (f"robust accuracy on {images['robust']} images, standard accuracy on "
                f"{images['standard']}")
    counts = table.get("images", [])
    if not counts:
        return "images as in each run's results.md"
    if all(c == counts[0] for c in counts):
        return text(counts[0])
    return "; ".join(f"{row['defense']}: {text(c)}" for row, c in zip(table["rows"], counts))


def _section(rows: list[dict[str, str]], prefix: str, title: str) -> str:
    """The Markdown table of the columns starting with ``prefix``, one row per defense."""
    columns = list(dict.fromkeys(c for row in rows for c in row if c.startswith(prefix)))
    lines = [f"## {title[0].upper()}{title[1:]}\n",
             "| defense | " + " | ".join(c[len(prefix):] for c in columns) + " |",
             "|" + "---|" * (len(columns) + 1)]
    lines += ["| " + " | ".join([row["defense"]] + [row.get(c, "–") for c in columns]) + " |"
              for row in rows]
    return "\n".join(lines)
