"""``advpure table``: the seed papers' table — one row per defense, standard accuracy and
robust accuracy per attack, the AutoAttack papers' rule and our per-image worst case — from one
evaluation per defense (each a resumable run directory)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from ..evaluation.config import DefenseConfig, EvalConfig
from ..evaluation.stats import paired_difference, paired_sign_test
from ..purifiers import PURIFIERS, PurifierSettings
from .report import ci, note_line, pct, seeds_and_draws
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
             "strongest": [strongest_attack(cfg.defense.describe(), s, attacks)
                           for cfg, s in zip(defenses, summaries)]}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    (out_dir / "table.md").write_text(table_markdown(table, base))
    with open(out_dir / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return table


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
    how many points it leaves more and the one-sided paired sign test over images that the
    strongest is lower (``stats.paired_sign_test``, the audit's test)."""
    per_image = summary.get("per_image", {})
    if len(attacks) < 2 or not all(a in per_image for a in attacks):
        return {"defense": defense, "strongest": None, "others": {}}
    accuracy = {a: summary["accuracies"][a]["single_draw"]["mean"] for a in attacks}
    best = min(attacks, key=accuracy.get)
    others = {}
    for a in attacks:
        if a != best:
            gap = paired_difference(per_image[a], per_image[best])
            others[a] = {"points": 100 * (accuracy[a] - accuracy[best]),
                         "points_low": 100 * gap["ci_low"], "points_high": 100 * gap["ci_high"],
                         **paired_sign_test(per_image[best], per_image[a])}
    return {"defense": defense, "strongest": best, "accuracy": accuracy[best], "others": others}


def _strongest_section(table: dict) -> str:
    attacks = table["attacks"]
    lines = ["## Strongest attack per defense\n",
             "Single-draw accuracy; each cell: how many points more the attack leaves than the "
             "strongest with its 95 % t interval over the images' paired differences, and the "
             "one-sided paired sign test over images that the strongest leaves fewer correct "
             "(p).\n",
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
    """'+10.9 [4.2, 17.6] (p = 0.00072)'."""
    ci = f" [{other['points_low']:.1f}, {other['points_high']:.1f}]" if "points_low" in other \
        else ""
    return f"+{other['points']:.1f}{ci} (p = {other['p_value']:.2g})"


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
    notes = [f"{base.dataset} ({base.split}); robust accuracy on a fixed subset of {base.n} "
             f"images (at most the split), standard accuracy on "
             f"{base.standard_n or 'the whole split'}; {seeds_and_draws(base)} per final "
             "evaluation; accuracies as mean ± "
             "sample std over seeds. Single draw: the fraction of draws that are correct; vote: "
             "the true label has strictly more votes than any other; all draws (N-evaluation): "
             "every fresh draw of the kept image is correct; any draw of any iterate "
             "(DiffHammer's rule): also no draw that the attack scored on its way was wrong "
             "(for attacks that keep no such log, PGD-free ones such as Square or AutoAttack, "
             "it is the all-draws accuracy). Worst case (ours): per image, the minimum over the "
             "attacks; AutoAttack (papers' rule): the minimum of the standard and rand versions' "
             "aggregate accuracies. Brackets: 95 % Wilson interval over the images, each image's "
             "correctness averaged over its seeds and draws (the image is the unit)."]
    if table["budget_reductions"]:
        notes.append(f"**Reduced budgets** against protocol `{base.protocol}`: "
                     + "; ".join(table["budget_reductions"]) + ".")
    return ("# Defenses under attack\n\n" + note_line(base) + "\n\n".join(sections) + "\n\n"
            + "\n\n".join(notes) + "\n")


def _section(rows: list[dict[str, str]], prefix: str, title: str) -> str:
    """The Markdown table of the columns starting with ``prefix``, one row per defense."""
    columns = list(dict.fromkeys(c for row in rows for c in row if c.startswith(prefix)))
    lines = [f"## {title[0].upper()}{title[1:]}\n",
             "| defense | " + " | ".join(c[len(prefix):] for c in columns) + " |",
             "|" + "---|" * (len(columns) + 1)]
    lines += ["| " + " | ".join([row["defense"]] + [row.get(c, "–") for c in columns]) + " |"
              for row in rows]
    return "\n".join(lines)
