"""``advpure sweep``: standard and robust accuracy against one numeric purifier option
(DiffPure Fig. 3 analog for t*), a model, or an attack option (ε, EOT count, iterations:
DiffPure Fig. 6), one run directory per value, resumable."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..evaluation.config import EvalConfig, section_fields
from ..evaluation.experiment import describe
from ..evaluation.runner import run_evaluation, with_subset_size
from ..purifiers import PURIFIERS, NoDefense
from ..settings import is_numeric
from ..evaluation.stats import budget_falls, detectable_effect
from .report import load_run, pct, plot_accuracy_vs, write_run

MODEL_SWEEPABLE = ("guidance_classifier", "diffusion")     # specs (AGDM Fig. 3c: one φ per λ)
ATTACK_SWEEPABLE = ("eps", "eot", "steps")     # set on every attack (DiffPure Fig. 6: EOT)


def numeric_sweepable() -> tuple[str, ...]:
    """The purifier options a sweep can vary: every float option of a registered purifier."""
    return tuple(name for name, owners in section_fields(PURIFIERS).items()
                 if any(is_numeric(info) for _, info in owners))


def sweepable() -> tuple[str, ...]:
    return numeric_sweepable() + MODEL_SWEEPABLE + ATTACK_SWEEPABLE


def value_label(value: float | str) -> str:
    """'0.1' for numbers, the checkpoint's name for a model spec ('phi-l6', 'builtin-digits-cnn')."""
    if isinstance(value, str):
        return Path(value.replace("builtin:", "builtin-")).name.removesuffix(".json")
    return f"{value:g}"


@dataclass
class Sweep:
    """The swept option, its values and each run's summary (``EvalResult.summary()``)."""

    param: str
    values: list[float] | list[str]
    summaries: list[dict]
    baseline: dict | None                 # the undefended classifier under the same attack


def with_option(base: EvalConfig, param: str, value: float | str) -> EvalConfig:
    """``base`` with ``defense.<param> = value``, or an attack option set on every attack (on a
    protocol: the cap ``max_<param>``), validated again."""
    data = base.model_dump()
    if param not in ATTACK_SWEEPABLE:
        data["defense"][param] = value
    elif base.protocol is not None:
        if param == "eps":
            raise ValueError("sweep: a protocol fixes eps; sweep eps over explicit attacks")
        data[f"max_{param}"] = int(value)
    else:
        if not base.attacks:
            raise ValueError(f"sweep: {param} is an attack option; found no attack")
        data["attacks"] = [a | {param: value if param == "eps" else int(value)}
                           for a in data["attacks"]]
    return EvalConfig.model_validate(data)


def run_or_resume(cfg: EvalConfig, run_dir: Path, progress: bool = True, executor=None) -> dict:
    """The summary of ``cfg``: rebuilt from ``run_dir``'s record store if a finished run of the
    very same config is there (its report rewritten under the current rules), otherwise
    evaluated there (resuming what its record store holds) and written."""
    cfg = with_subset_size(cfg)
    results = run_dir / "results.json"
    if results.is_file():
        summary = json.loads(results.read_text())
        if summary["config"] == cfg.model_dump(mode="json"):
            tqdm.write(f"reusing {run_dir} ({describe(cfg)})")
            result = load_run(run_dir)
            write_run(result, run_dir)
            return result.summary()
    result = run_evaluation(cfg, progress, out_dir=run_dir, executor=executor)
    write_run(result, run_dir)
    return result.summary()


def run_sweep(base: EvalConfig, param: str, values: list[float] | list[str], out_dir: Path,
              baseline: bool = True, progress: bool = True, executor=None) -> Sweep:
    """Evaluate ``base`` with each value of ``defense.<param>``; writes sweep.md/json/png."""
    if param not in sweepable():
        raise ValueError(f"sweep: expected a numeric purifier option or a model among "
                         f"{', '.join(sweepable())}, found {param!r}")
    if not values:
        raise ValueError("sweep: expected at least one value, found none")
    if base.defense.name == "none" and param not in ATTACK_SWEEPABLE:
        raise ValueError("sweep: expected a defense to sweep (e.g. diffpure), found 'none'")
    configs = [with_option(base, param, v) for v in values]     # all validated before any run
    summaries = [run_or_resume(cfg, out_dir / f"{param}={value_label(v)}", progress, executor)
                 for cfg, v in zip(configs, values)]
    undefended = base.model_copy(update={"defense": NoDefense()})
    baseline = baseline and base.defense.name != "none" and not any(
        a.name == "diffusion" for a in base.resolved_attacks())
    reference = run_or_resume(undefended, out_dir / "undefended", progress, executor) \
        if baseline else None
    sweep = Sweep(param, list(values), summaries, reference)
    write_sweep(sweep, base, out_dir)
    return sweep


def sweep_table(sweep: Sweep) -> str:
    """Markdown: one row per value, accuracies as mean ± std over seeds."""
    lines = [f"| {sweep.param} | standard accuracy | robust accuracy |", "|---|---|---|"]
    for value, s in zip(sweep.values, sweep.summaries):
        lines.append(f"| {value_label(value)} | {pct(s['standard_accuracy'])} | "
                     f"{pct(s['robust_accuracy'])} |")
    if sweep.baseline is not None:
        b = sweep.baseline
        lines.append(f"| undefended | {pct(b['standard_accuracy'])} | {pct(b['robust_accuracy'])} |")
    return "\n".join(lines)


def write_sweep(sweep: Sweep, base: EvalConfig, out_dir: Path) -> Path:
    """sweep.md (table), sweep.json (the summaries) and sweep.png (accuracy against the option)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sweep.json").write_text(json.dumps(
        {"param": sweep.param, "values": sweep.values, "runs": sweep.summaries,
         "baseline": sweep.baseline}, indent=2) + "\n")
    stat = {which: [s[f"{which}_accuracy"] for s in sweep.summaries]
            for which in ("standard", "robust")}
    baselines = {} if sweep.baseline is None else {
        "undefended standard": sweep.baseline["standard_accuracy"]["mean"],
        "undefended robust": sweep.baseline["robust_accuracy"]["mean"]}
    plot_accuracy_vs([value_label(v) if isinstance(v, str) else v for v in sweep.values],
                     {"standard": [v["mean"] for v in stat["standard"]],
                      "robust (adaptive)": [v["mean"] for v in stat["robust"]]},
                     sweep.param, describe(base), out_dir / "sweep.png",
                     intervals={"standard": _intervals(sweep, "standard"),
                                "robust (adaptive)": _intervals(sweep, "robust")},
                     baselines=baselines)
    convergence = convergence_note(sweep)
    (out_dir / "sweep.md").write_text(
        f"# Accuracy against {sweep.param}\n\n{describe(base)}, {sweep.param} varied; "
        f"{len(base.seeds)} seed(s), mean ± sample std; {_images(sweep)} of {base.dataset}; "
        "error bars: 95 % Wilson intervals at the effective number of images.\n\n"
        f"{sweep_table(sweep)}\n\n{convergence}![accuracy against {sweep.param}](sweep.png)\n")
    return out_dir


def _images(sweep: Sweep) -> str:
    """'robust accuracy on 64 images, standard accuracy on 64', from the runs themselves."""
    first = sweep.summaries[0]["accuracies"]
    return (f"robust accuracy on {first['robust']['single_draw']['n']} images, standard "
            f"accuracy on {first['standard']['single_draw']['n']}")


def _intervals(sweep: Sweep, which: str) -> list[tuple[float, float]]:
    stats = [s["accuracies"][which]["single_draw"] for s in sweep.summaries]
    return [(st["ci_low"], st["ci_high"]) for st in stats]


def per_image_robust(summary: dict) -> list[float]:
    """Each image's worst case over the attacks, averaged over the seeds."""
    seeds = [s["adv_correct"] for s in summary["per_seed"]]
    return [sum(v) / len(v) for v in zip(*seeds)]


def convergence_note(sweep: Sweep, alpha: float = 0.01) -> str:
    """For a sweep of the attack's iterations or EOT: where robust accuracy falls significantly
    (two-sided paired sign test over the images at ``alpha``) between neighbouring budgets or
    from the smallest to the largest, the attack has not converged and the robust number at
    the smaller budget is an upper bound. Where no fall is significant the note gives the
    smallest fall the test detects with 80 % power at this many images: no fall found is not
    evidence of convergence below it. '' for other sweeps."""
    if sweep.param not in ("steps", "eot") or len(sweep.values) < 2:
        return ""
    correct = [per_image_robust(s) for s in sweep.summaries]
    accuracy = dict(zip(sweep.values, (s["robust_accuracy"] for s in sweep.summaries)))
    lines = [f"**Not converged:** robust accuracy still falls from {sweep.param} "
             f"{value_label(small)} to {value_label(large)} ({pct(accuracy[small])} → "
             f"{pct(accuracy[large])}; two-sided sign test over the images, p = {p:.2g} < "
             f"{alpha:g}): the robust accuracy at {sweep.param} {value_label(small)} is an "
             "upper bound."
             for small, large, p, lost in budget_falls(correct, sweep.values)
             if p < alpha and lost > 0]
    if not lines:
        detectable = detectable_effect(len(correct[0]), alpha)
        return (f"No significant fall of robust accuracy between neighbouring {sweep.param} "
                f"values or from the smallest to the largest (two-sided sign test over the "
                f"{len(correct[0])} images, α = {alpha:g}). At this many images the test "
                f"detects a fall of {100 * detectable:.0f} points with 80 % power; a smaller "
                "one may remain (more images tell).\n\n")
    return "\n\n".join(lines) + "\n\n"
