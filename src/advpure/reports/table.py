"""``advpure table``: the seed papers' table — one row per defense, standard accuracy and
robust accuracy per attack, the AutoAttack papers' rule and our per-image worst case — from one
evaluation per defense (each a resumable run directory)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from ..evaluation.config import DefenseConfig, EvalConfig
from ..purifiers import PurifierSettings
from .report import ci, note_line, pct
from .sweep import run_or_resume

COMMON = tuple(f for f in PurifierSettings.model_fields if f != "name")   # every purifier has


def table_configs(base: EvalConfig, names: list[str]) -> list[EvalConfig]:
    """One config per row: the file's ``defenses`` if it lists any, else each name in
    ``names`` at its defaults (``defense_for``)."""
    if base.defenses:
        return [base.model_copy(update={"defense": d, "defenses": ()}) for d in base.defenses]
    return [defense_for(base, name) for name in names]


def defense_for(base: EvalConfig, name: str) -> EvalConfig:
    """``base`` defended by purifier ``name`` at its defaults, keeping the common options."""
    if name == base.defense.name:
        return base
    given = base.defense.model_dump()
    common = {f: given[f] for f in COMMON if f in given} if name != "none" else {}
    return base.model_copy(update={"defense": DefenseConfig(name=name, **common)})


def run_table(base: EvalConfig, defenses: list[EvalConfig], out_dir: Path,
              progress: bool = True, executor=None) -> dict:
    """Evaluate every config in ``defenses`` (one run directory each) and write table.md,
    table.csv and table.json into ``out_dir``."""
    summaries = [run_or_resume(cfg, out_dir / cfg.defense.name, progress, executor)
                 for cfg in defenses]
    attacks = [a.key() for a in base.resolved_attacks()]
    rows = [_row(cfg, s, attacks) for cfg, s in zip(defenses, summaries)]
    table = {"note": base.note, "attacks": attacks, "rows": rows,
             "budget_reductions": base.budget_reductions()}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.json").write_text(json.dumps(table, indent=2) + "\n")
    (out_dir / "table.md").write_text(table_markdown(table, base))
    with open(out_dir / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return table


def _row(cfg: EvalConfig, summary: dict, attacks: list[str]) -> dict[str, str]:
    accuracies = summary["accuracies"]

    def cell(which: str) -> str:
        stat = accuracies[which]["single_draw"]
        return f"{pct(stat)} {ci(stat)}"

    row = {"defense": cfg.defense.describe(), "standard": cell("standard")}
    row |= {a: cell(a) for a in attacks}
    rule = summary["autoattack_papers_rule"]
    if rule is not None:
        row["AutoAttack (papers' rule)"] = pct(rule)
    row["worst case (ours)"] = cell("robust")
    return row


def table_markdown(table: dict, base: EvalConfig) -> str:
    columns = list(table["rows"][0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row.get(c, "–") for c in columns) + " |" for row in table["rows"]]
    notes = [f"{base.dataset} ({base.split}); robust accuracy on a fixed subset of {base.n} "
             f"images (at most the split), standard accuracy on "
             f"{base.standard_n or 'the whole split'}; seeds {', '.join(map(str, base.seeds))}; "
             f"{base.draws} purification draw(s) per final evaluation; single-draw accuracy, "
             "mean ± sample std over seeds. Worst case (ours): per image, the minimum over the "
             "attacks; AutoAttack (papers' rule): the minimum of the standard and rand versions' "
             "aggregate accuracies. Brackets: 95 % Wilson interval pooled over all (image, seed) "
             "pairs."]
    if table["budget_reductions"]:
        notes.append(f"**Reduced budgets** against protocol `{base.protocol}`: "
                     + "; ".join(table["budget_reductions"]) + ".")
    return ("# Defenses under attack\n\n" + note_line(base) + "\n".join(lines) + "\n\n"
            + "\n\n".join(notes) + "\n")
