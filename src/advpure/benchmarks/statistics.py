"""``advpure bench statistics``: the report's statistical rules on synthetic defenses whose
truth is known, so that a change to a rule shows its effect.

- **Intervals**: images with true per-image accuracies p_i drawn from a Beta population,
  each image observed ``observations`` times (seeds × draws); the coverage of E[p] and the
  mean width of the Wilson interval at the plain n and at the effective n
  (``stats.accuracy_summary``).
- **Audit**: two settings of equal strength (an honest, converged defense): how often one
  sign test (``studies.audit.sign_test``) says WARN or FAIL, and how often at least one of an
  audit's six does; beside the rule before (WARN whenever more images went the wrong way);
  and the FAIL rate against a real masking effect, with the power ``stats.sign_test_power``
  predicts.
- **Strongest attack**: six attacks of equal strength against five defenses (a table of 25
  comparisons): how often some comparison says "weaker" at p < 0.05, raw and Holm-adjusted
  (``reports.table``), and the worst case over the six, the per-image minimum against the
  fresh-draw rule (``evaluation.results.fresh_worst_case``), against the truth.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..evaluation.results import fresh_worst_case
from ..evaluation.stats import (accuracy_summary, binomial_tail, holm, paired_sign_test,
                                sign_test_power, wilson_interval)
from ..evaluation.store import Outcome
from ..studies.audit import FAIL, WARN, AuditBudget, sign_test

POPULATIONS = {"Beta(5, 5), mean 0.5": (5.0, 5.0), "Beta(9, 1), mean 0.9": (9.0, 1.0),
               "Beta(0.2, 9.8), mean 0.02": (0.2, 9.8)}
OBSERVATIONS = (1, 4, 48)                 # one draw; 4 draws; 3 seeds × 16 draws
AUDIT_CHECKS = 6


def interval_rows(images: int, trials: int, rng: np.random.Generator) -> list[dict]:
    """Coverage and width of the plain-n and the effective-n Wilson interval."""
    rows = []
    for name, (a, b) in POPULATIONS.items():
        truth = a / (a + b)
        for m in OBSERVATIONS:
            hits = {"plain": 0, "effective": 0}
            widths = {"plain": 0.0, "effective": 0.0}
            for _ in range(trials):
                p = rng.beta(a, b, images)
                correct = (rng.binomial(m, p) / m).tolist()
                intervals = {"plain": wilson_interval(sum(correct), images)}
                summary = accuracy_summary(correct, m)
                intervals["effective"] = (summary["ci_low"], summary["ci_high"])
                for rule, (low, high) in intervals.items():
                    hits[rule] += low <= truth <= high
                    widths[rule] += high - low
            rows.append({"population": name, "observations": m} |
                        {f"{rule}_coverage": hits[rule] / trials for rule in hits} |
                        {f"{rule}_width": widths[rule] / trials for rule in widths})
    return rows


def _old_rule(stronger: torch.Tensor, weaker: torch.Tensor, alpha: float) -> str:
    """The audit's rule before: one-sided sign test FAIL at α, WARN whenever b > c."""
    b = int(((weaker == 0) & (stronger == 1)).sum())
    c = int(((weaker == 1) & (stronger == 0)).sum())
    return FAIL if b + c and binomial_tail(b, b + c, 0.5) < alpha else WARN if b > c else "PASS"


def audit_rows(images: int, trials: int, rng: np.random.Generator) -> list[dict]:
    """False alarms of one sign test and of a six-check audit on an honest defense, and the
    FAIL rate (power) against a 10-point masking effect."""
    budget = AuditBudget()
    rows = []
    for effect in (0.0, budget.effect):
        counts = {"new": {WARN: 0, FAIL: 0}, "old": {WARN: 0, FAIL: 0}}
        audits = {"new": {WARN: 0, FAIL: 0}, "old": {WARN: 0, FAIL: 0}}
        for _ in range(trials):
            worst = {"new": set(), "old": set()}
            for check in range(AUDIT_CHECKS):
                weaker = torch.from_numpy(rng.random(images) < 0.6).float()
                stronger = weaker.clone()
                flip = torch.from_numpy(rng.random(images) < 0.3)        # draw noise, no bias
                stronger[flip] = torch.from_numpy(rng.random(int(flip.sum())) < 0.6).float()
                masked = torch.from_numpy(rng.random(images) < effect)   # masking: these
                weaker[masked], stronger[masked] = 0.0, 1.0     # survive only the stronger one
                statuses = {"new": sign_test(stronger, weaker, budget)[0],
                            "old": _old_rule(stronger, weaker, budget.alpha)}
                for rule, status in statuses.items():
                    worst[rule].add(status)
                    if check == 0 and status in counts[rule]:
                        counts[rule][status] += 1
            for rule, seen in worst.items():
                top = FAIL if FAIL in seen else WARN if WARN in seen else None
                if top:
                    audits[rule][top] += 1
        rows.append({"effect_points": 100 * effect,
                     "predicted_power": sign_test_power(images, effect, budget.alpha)
                     if effect else None} |
                    {f"{rule}_{s.lower()}_one_test": counts[rule][s] / trials
                     for rule in counts for s in (WARN, FAIL)} |
                    {f"{rule}_{s.lower()}_audit": audits[rule][s] / trials
                     for rule in audits for s in (WARN, FAIL)})
    return rows


def strongest_rows(images: int, trials: int, rng: np.random.Generator, attacks: int = 6,
                   defenses: int = 5, draws: int = 4) -> dict:
    """False "weaker" claims among equal attacks, raw and Holm-adjusted, and the worst case."""
    raw = adjusted = 0
    minimum = fresh = truth = 0.0
    for _ in range(trials):
        p_values = []
        for _ in range(defenses):
            p = rng.beta(5.0, 5.0, images)
            predictions = rng.random((attacks, images, draws)) < p[None, :, None]
            per_image = predictions.mean(axis=2)
            best = int(per_image.mean(axis=1).argmin())
            p_values += [paired_sign_test(per_image[best].tolist(), per_image[a].tolist())
                         ["p_value"] for a in range(attacks) if a != best]
        raw += min(p_values) < 0.05
        adjusted += min(holm(p_values)) < 0.05
        outcomes = [[Outcome(0, str(a), i, 1, tuple(int(c) for c in predictions[a, i]), 0.0)
                     for a in range(attacks)] for i in range(images)]
        minimum += np.mean([fresh_worst_case(o, "single_draw", 0) for o in outcomes])
        fresh += np.mean([fresh_worst_case(o, "single_draw", draws // 2) for o in outcomes])
        truth += p.mean()
    return {"attacks": attacks, "defenses": defenses, "draws": draws,
            "some_raw_p_below_0.05": raw / trials, "some_holm_p_below_0.05": adjusted / trials,
            "true_accuracy": truth / trials, "per_image_minimum": minimum / trials,
            "fresh_draw_worst_case": fresh / trials}


def run(out: Path, images: int = 64, trials: int = 400, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    results = {"images": images, "trials": trials, "seed": seed,
               "intervals": interval_rows(images, trials, rng),
               "audit": audit_rows(images, trials, rng),
               "strongest": strongest_rows(images, trials, rng)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "statistics.json").write_text(json.dumps(results, indent=2) + "\n")
    report = format_report(results)
    (out / "statistics.md").write_text(report + "\n")
    return report


def format_report(r: dict) -> str:
    lines = [f"# The report's statistics on synthetic defenses ({r['images']} images, "
             f"{r['trials']} trials each, seed {r['seed']})", "",
             "## 95 % intervals of an accuracy: coverage of E[p] (mean width)", "",
             "| population of p_i | outcomes per image | Wilson, plain n | Wilson, effective n |",
             "|---|---|---|---|"]
    for row in r["intervals"]:
        lines.append(f"| {row['population']} | {row['observations']} | "
                     f"{row['plain_coverage']:.3f} ({row['plain_width']:.3f}) | "
                     f"{row['effective_coverage']:.3f} ({row['effective_width']:.3f}) |")
    lines += ["", f"## Audit sign tests (α = 0.01 FAIL, 0.05 WARN, two-sided; before: "
              f"one-sided FAIL, WARN whenever more images went the wrong way); an audit = "
              f"{AUDIT_CHECKS} checks", "",
              "| true effect | one test WARN / FAIL | audit WARN / FAIL | before: one test | "
              "before: audit | predicted power |", "|---|---|---|---|---|---|"]
    for row in r["audit"]:
        power = "–" if row["predicted_power"] is None else f"{row['predicted_power']:.3f}"
        lines.append(f"| {row['effect_points']:g} points | {row['new_warn_one_test']:.3f} / "
                     f"{row['new_fail_one_test']:.3f} | {row['new_warn_audit']:.3f} / "
                     f"{row['new_fail_audit']:.3f} | {row['old_warn_one_test']:.3f} / "
                     f"{row['old_fail_one_test']:.3f} | {row['old_warn_audit']:.3f} / "
                     f"{row['old_fail_audit']:.3f} | {power} |")
    s = r["strongest"]
    lines += ["", f"## Strongest attack and worst case: {s['attacks']} equal attacks × "
              f"{s['defenses']} defenses, {s['draws']} draws", "",
              f"- a table with some p < 0.05 against its strongest attack: raw "
              f"{s['some_raw_p_below_0.05']:.3f}, Holm-adjusted "
              f"{s['some_holm_p_below_0.05']:.3f} (every such claim is false here)",
              f"- worst case over the attacks: true accuracy {s['true_accuracy']:.3f}; "
              f"per-image minimum {s['per_image_minimum']:.3f}; fresh-draw rule (choose on "
              f"{s['draws'] // 2} draws, score on the rest) {s['fresh_draw_worst_case']:.3f}"]
    return "\n".join(lines)
