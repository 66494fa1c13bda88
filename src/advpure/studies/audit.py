"""``advpure audit``: the warning signs of gradient masking, checked for any defense.

The checks follow Carlini et al. 2019, "On Evaluating Adversarial Robustness" (§5: an unbounded
attack must succeed, accuracy must fall with ε, more iterations and more EOT samples must not
help the defense, white-box must beat random noise, black-box and transfer attacks) and
AutoAttack's own flags (zero gradients, randomized defenses); the last check compares the
gradient mode in use with exact gradients (Lee & Kim 2023; DiffBreak: DiffPure's 70.64 % under
adjoint gradients is about 46–48 % with exact ones).

Each check is a stated test on the same images, FAIL at α (default 0.01) and WARN at a stated
``warn_alpha`` (default 0.05), so that Monte-Carlo noise alone neither fails nor warns an honest
defense (``advpure bench statistics`` measures both rates):

- paired comparisons (more budget, larger ε, white-box vs noise / Square / transfer, a gradient
  mode vs exact) use the exact two-sided **sign test** on the discordant images: ``b`` images
  correct only under the setting that should be stronger, ``c`` only under the weaker one.
  FAIL when b > c at p < α, WARN when b > c at p < ``warn_alpha``, INCONCLUSIVE when b + c
  images could not reach α even all one way, PASS otherwise; each test reports its power
  against a stated effect (``effect``, 10 points) and the images that reach 80 %. Budgets are
  also compared smallest against largest, where a gradual fall shows ("not converged");
- the unbounded attack: P(Bin(n, p₀) ≥ k) for k of n images still correct, p₀ = 5 %;
- zero gradients (AutoAttack's check, on the margin loss, which does not saturate as the
  cross-entropy does in float32): any image with a zero or non-finite gradient FAILs;
- randomness (AutoAttack's check): a defense whose outputs differ between calls, attacked
  with EOT = 1, is WARNed about.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import data
from ..attacks.drawlog import AttackOutput
from ..attacks.losses import cw_margin
from ..evaluation.config import AttackConfig, EvalConfig
from ..evaluation.experiment import Defense, evaluation_subsets
from ..data.profiles import default_eps
from ..evaluation.stats import (binomial_tail, budget_falls, detectable_effect,
                                images_for_power, paired_sign_test, sign_test_p,
                                sign_test_power, vote_correct)
from ..models import load_classifier
from ..reports.plots import figure

PASS, WARN, FAIL = "pass", "warn", "fail"
INCONCLUSIVE, NOT_APPLICABLE = "inconclusive", "n/a"
SEVERITY = {NOT_APPLICABLE: -1, PASS: 0, INCONCLUSIVE: 1, WARN: 2, FAIL: 3}
DefendedModel = Callable[[torch.Generator, "str | None"], nn.Module]


@dataclass
class Check:
    """One check's verdict, the figures it rests on and what it means."""

    name: str
    status: str
    figures: dict
    explanation: str


@dataclass
class AuditBudget:
    """How much the audit spends; each field is the ``advpure audit`` flag of the same name
    (``factors`` is ``--factors``)."""

    images: int = field(default=64, metadata={"help": "images of the fixed robust subset"})
    factors: tuple[int, ...] = field(default=(1, 2, 4), metadata={
        "help": "multipliers of the attack's iterations and EOT"})
    eps_factors: tuple[float, ...] = field(default=(0.25, 0.5, 1.0, 2.0), metadata={
        "help": "multipliers of the attack's ε"})
    repeats: int = field(default=16, metadata={
        "help": "calls per image for the randomness check"})
    square_queries: int = field(default=1000, metadata={
        "help": "queries of the black-box Square"})
    alpha: float = field(default=0.01, metadata={
        "help": "level of FAIL (each test two-sided)"})
    warn_alpha: float = field(default=0.05, metadata={
        "help": "level of WARN (each test two-sided): a difference in the wrong direction "
                "below it but not below --alpha"})
    effect: float = field(default=0.10, metadata={
        "help": "the effect (fraction of images) whose power each test reports"})
    unbounded_accuracy: float = field(default=0.05, metadata={
        "help": "p₀ of the unbounded-attack test: the accuracy it must stay below"})


@dataclass
class Target:
    """What is audited: ``defended(generator, gradient)`` builds the defended model (``gradient``
    None: the mode in use), ``classifier`` is the undefended one, ``attack`` the white-box
    attack whose evaluation is audited, ``gradient`` the mode in use ('exact' where the
    defense has no other)."""

    defended: DefendedModel
    classifier: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    attack: AttackConfig
    gradient: str = "exact"
    name: str = "defense"


@dataclass
class Audit:
    target: str
    attack: str
    checks: list[Check]
    curves: dict = field(default_factory=dict)      # accuracy vs eps / iterations / EOT

    @property
    def worst(self) -> str:
        """FAIL > WARN > INCONCLUSIVE > PASS; a check that does not apply counts for nothing."""
        return max((c.status for c in self.checks), key=SEVERITY.get, default=NOT_APPLICABLE)


# ---------------------------------------------------------------- statistics

def sign_test(stronger: torch.Tensor, weaker: torch.Tensor, budget: AuditBudget
              ) -> tuple[str, dict]:
    """Per-image correctness (0/1) under a setting that should be at least as strong and under
    a weaker one, by the two-sided ``paired_sign_test``: FAIL when the stronger leaves more
    images correct at p < α (``budget.alpha``), WARN at p < ``budget.warn_alpha``, else PASS
    (INCONCLUSIVE where the test could not reach α even if every changed image had gone one
    way). The figures give the test's power against ``budget.effect`` and the images that
    reach 80 % (``stats.sign_test_power``)."""
    tested = paired_sign_test(weaker.tolist(), stronger.tolist())
    b, c, p = tested["first_lower"], tested["first_higher"], tested["p_value"]
    wrong_way = b > c
    status = FAIL if wrong_way and p < budget.alpha else \
        WARN if wrong_way and p < budget.warn_alpha else PASS
    if status == PASS and not has_power(b + c, budget.alpha):
        status = INCONCLUSIVE
    return status, {"only_stronger_correct": b, "only_weaker_correct": c, "p_value": p,
                    **power_figures(len(stronger), budget)}


def power_figures(n: int, budget: AuditBudget) -> dict:
    """The power of a FAIL at ``n`` images against ``budget.effect`` and the images for 80 %."""
    key = f"{100 * budget.effect:g}_points"
    return {f"power_at_{key}": sign_test_power(n, budget.effect, budget.alpha),
            f"images_for_80_percent_power_at_{key}": images_for_power(budget.effect,
                                                                        budget.alpha)}


def has_power(discordant: int, alpha: float) -> bool:
    """Whether a two-sided sign test on ``discordant`` images could reach α at all (all of
    them one way); without it a PASS would only say that there were too few images."""
    return sign_test_p(discordant, 0) < alpha


def explained(explanation: str, status: str, p_value: float, budget: AuditBudget) -> str:
    """The check's explanation, with what a WARN or FAIL of a test means."""
    alpha, warn = budget.alpha, budget.warn_alpha
    if status == WARN:
        return (f"{explanation}. WARN: the wrong direction at p = {p_value:.2g} < {warn:g} "
                f"(two-sided), not below the FAIL level α = {alpha:g}; more images (--images) "
                "tell")
    if status == FAIL:
        return f"{explanation}. FAIL: significant at α = {alpha:g} (p = {p_value:.2g}, two-sided)"
    if status == INCONCLUSIVE:
        return (f"{explanation}. INCONCLUSIVE: too few images changed between the settings for "
                f"the test to reach α = {alpha:g} even if all had gone one way; "
                f"{images_for_power(budget.effect, alpha)} images give 80 % power against "
                f"{100 * budget.effect:g} points (--images)")
    return explanation


# ---------------------------------------------------------------- attacks

class AttackRunner:
    """Runs attack variants on the target, each with its own seeded generators, and caches the
    per-image correctness of one draw on the final inputs."""

    def __init__(self, target: Target):
        self.target = target
        self.cache: dict[str, torch.Tensor] = {}

    def correct(self, attack: AttackConfig, gradient: str | None = None) -> torch.Tensor:
        key = f"{attack.key()} [{gradient}]"
        if key not in self.cache:
            t = self.target
            defense_gen, attack_gen = (torch.Generator().manual_seed(s) for s in (1, 2))
            model = t.defended(defense_gen, gradient)
            attacked = t.classifier if attack.name == "transfer" else model
            x_adv = AttackOutput.of(attack.run(attacked, t.x, t.y, attack_gen)).x_adv
            self.cache[key] = self.predict(x_adv)
        return self.cache[key]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        model = self.target.defended(torch.Generator().manual_seed(3), None)
        with torch.no_grad():
            return (model(x).argmax(1) == self.target.y).float()


def random_noise(x: torch.Tensor, eps: float, norm: str, generator: torch.Generator
                 ) -> torch.Tensor:
    """x plus random noise of norm ε: a random corner of the ℓ∞ ball, or a random direction of
    ℓ2 length ε; clipped to [0, 1]."""
    noise = torch.randn(x.shape, generator=generator)
    if norm == "linf":
        return (x + eps * noise.sign()).clamp(0, 1)
    flat = noise.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))
    return (x + eps * noise / flat).clamp(0, 1)


# ---------------------------------------------------------------- the checks

def _guarded(name: str, check: Callable[[], Check]) -> Check:
    """A check whose attack cannot even run (e.g. no gradient at all) fails with the reason."""
    try:
        return check()
    except RuntimeError as err:
        return Check(name, FAIL, {"error": str(err)},
                     "the attack could not run against the defense — typically no gradient "
                     "reaches the input (a no_grad or non-differentiable step)")


def unbounded_check(run: AttackRunner, budget: AuditBudget, curves: dict) -> Check:
    a = run.target.attack
    eps = 1.0 if a.norm == "linf" else math.sqrt(run.target.x[0].numel())
    # beyond what a configuration may ask (the settings refuse ℓ∞ ε ≥ 1): not validated
    attack = a.model_copy(update={"eps": eps, "steps": max(2 * a.steps, 20), "step_size": None})
    correct = run.correct(attack)
    k, n = int(correct.sum()), len(correct)
    p = binomial_tail(k, n, budget.unbounded_accuracy)
    status = FAIL if p < budget.alpha else WARN if p < budget.warn_alpha else PASS
    curves["unbounded"] = k / n
    return Check("unbounded attack reaches ~0 %", status,
                 {"eps": eps, "steps": attack.steps, "accuracy": k / n, "p_value": p},
                 explained(f"an attack that may change every pixel ({a.norm} ε = {eps:.3g}) "
                           f"must win; tested against {100 * budget.unbounded_accuracy:g} %",
                           status, p, budget))


def eps_check(run: AttackRunner, budget: AuditBudget, curves: dict) -> Check:
    a = run.target.attack
    grid = [a.eps * f for f in sorted(budget.eps_factors)]
    correct = [run.correct(a.replace(eps=e)) for e in grid]
    curves["eps"] = {"x": grid, "accuracy": [float(c.mean()) for c in correct]}
    tests = [sign_test(correct[i + 1], correct[i], budget) for i in range(len(grid) - 1)]
    return _worst_of("accuracy falls with ε", tests, grid,
                     "a larger ε can only help the attacker; a rise is a sign of masking",
                     curves["eps"]["accuracy"], budget)


def budget_check(run: AttackRunner, budget: AuditBudget, curves: dict, what: str) -> Check:
    a = run.target.attack
    base = a.steps if what == "iterations" else a.eot_copies()
    grid = [base * f for f in sorted(budget.factors)]
    option = "steps" if what == "iterations" else "eot"
    correct = [run.correct(a.replace(**{option: v})) for v in grid]
    curves[what] = {"x": grid, "accuracy": [float(c.mean()) for c in correct]}
    tests = [sign_test(correct[i + 1], correct[i], budget) for i in range(len(grid) - 1)]
    check = _worst_of(f"more {what} do not raise accuracy", tests, grid,
                      f"more attack {what} can only help; accuracy rising with them means the "
                      "attack has not converged or follows a masked gradient",
                      curves[what]["accuracy"], budget)
    return not_converged(check, correct, grid, what, budget)


def not_converged(check: Check, correct: list[torch.Tensor], grid: list, what: str,
                  budget: AuditBudget) -> Check:
    """WARN "not converged" where accuracy still falls significantly (two-sided sign test at α,
    the larger budget leaving fewer images correct) between neighbouring budgets or from the
    smallest to the largest: the robust accuracy at the audited budget is then an upper bound.
    The figures give the smallest fall the test detects with 80 % power at this many images;
    no fall found is not evidence of convergence below it. A check that is already WARN or
    FAIL keeps its status and gains the message."""
    falls = budget_falls([c.tolist() for c in correct], grid)
    significant = [(k, k2, p) for k, k2, p, lost in falls if p < budget.alpha and lost > 0]
    check.figures["falls_p_values"] = {f"{k}→{k2}": p for k, k2, p, _ in falls}
    check.figures["detectable_fall_points"] = 100 * detectable_effect(len(correct[0]),
                                                                      budget.alpha)
    if not significant:
        return check
    where = "; ".join(f"{k} → {k2} (p = {p:.2g})" for k, k2, p in significant)
    message = (f"not converged — accuracy still falls significantly with more {what}: "
               f"{where}; the robust accuracy at the audited budget is an upper bound")
    if SEVERITY[check.status] >= SEVERITY[WARN]:
        return Check(check.name, check.status, check.figures,
                     f"{check.explanation}. Also {message}")
    return Check(check.name, WARN, check.figures, f"WARN: {message}")


def _worst_of(name: str, tests: list[tuple[str, dict]], grid: list, explanation: str,
              accuracy: list[float], budget: AuditBudget) -> Check:
    """The worst of the paired tests between neighbours of a grid (each a larger budget); a
    neighbour pair without power does not decide the check unless none has power."""
    decided = [s for s, _ in tests if s != INCONCLUSIVE]
    status = max(decided, key=SEVERITY.get) if decided else INCONCLUSIVE
    figures = {"accuracy": {f"{g:.3g}": a for g, a in zip(grid, accuracy)},
               "smallest_p_value": min(f["p_value"] for _, f in tests),
               "images_gained_by_a_larger_budget": max(f["only_stronger_correct"]
                                                       for _, f in tests)}
    figures |= {k: v for k, v in tests[0][1].items()                  # the same n in every test
                if k.startswith(("power_at", "images_for"))}
    return Check(name, status, figures,
                 explained(explanation, status, figures["smallest_p_value"], budget))


def baseline_checks(run: AttackRunner, budget: AuditBudget) -> list[Check]:
    """White-box against random noise of the same norm, Square and transfer."""
    t, a = run.target, run.target.attack
    noisy = run.predict(random_noise(t.x, a.eps, a.norm, torch.Generator().manual_seed(4)))
    others = {
        "random noise of the same norm": noisy,
        "black-box Square": lambda: run.correct(AttackConfig(name="square", eps=a.eps,
                                                             norm=a.norm,
                                                             queries=budget.square_queries)),
        "transfer from the undefended classifier": lambda: run.correct(
            AttackConfig(name="transfer", eps=a.eps, norm=a.norm, steps=a.steps)),
    }
    checks = []
    for name, other in others.items():
        def check(name=name, other=other) -> Check:
            white = run.correct(a)
            weaker = other if isinstance(other, torch.Tensor) else other()
            status, figures = sign_test(white, weaker, budget)
            figures |= {"white_box_accuracy": float(white.mean()),
                        "other_accuracy": float(weaker.mean())}
            return Check(f"white-box beats {name}", status, figures, explained(
                f"the gradient attack must leave no more images correct than {name}",
                status, figures["p_value"], budget))
        checks.append(_guarded(f"white-box beats {name}", check))
    return checks


def gradient_check(run: AttackRunner) -> Check:
    """AutoAttack's zero-gradient check, on the margin loss at the clean images."""
    t = run.target
    grads = input_gradients(t.defended(torch.Generator().manual_seed(5), None), t.x, t.y)
    reference = input_gradients(t.classifier, t.x, t.y)
    norms = grads.flatten(1).norm(dim=1)
    zero = int(((norms == 0) | ~torch.isfinite(norms)).sum())
    relative = norms / reference.flatten(1).norm(dim=1).clamp_min(1e-30)
    vanishing = int((relative < 1e-6).sum()) - zero
    status = FAIL if zero else WARN if vanishing > 0 else PASS
    return Check("gradient is neither zero nor vanishing", status,
                 {"zero_or_non_finite": zero, "vanishing": vanishing, "images": len(norms),
                  "median_norm_vs_undefended": float(relative.median())},
                 "a zero gradient (no_grad, rounding, saturation) gives PGD nothing to follow; "
                 "vanishing: below 1e-6 of the undefended classifier's")


def input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∇ₓ of the summed margin loss; zeros where no gradient reaches x."""
    x = x.detach().clone().requires_grad_(True)
    loss = cw_margin(model(x), y).sum()
    if not loss.requires_grad:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


def randomness_check(run: AttackRunner, budget: AuditBudget) -> Check:
    """AutoAttack's randomness check, with the spread of predictions and single-draw vs vote."""
    t = run.target
    generator = torch.Generator().manual_seed(6)
    with torch.no_grad():
        logits = torch.stack([t.defended(generator, None)(t.x) for _ in range(budget.repeats)])
    predictions = logits.argmax(2)                                      # R × N
    stochastic = bool((logits - logits[0]).abs().max() > 1e-6)
    agree = (predictions == predictions.mode(0).values).float().mean(0)
    single = float((predictions == t.y).float().mean())
    vote = sum(vote_correct(p.tolist(), int(label))
               for p, label in zip(predictions.T, t.y)) / len(t.y)       # ties: half a vote
    eot = t.attack.eot_copies()
    status = WARN if stochastic and eot == 1 else PASS
    explanation = ("the defense is randomized: attack it with EOT (AutoAttack: version='rand')"
                   if status == WARN else "deterministic" if not stochastic else
                   f"randomized, attacked with EOT {eot}")
    return Check("randomness is averaged by EOT", status,
                 {"stochastic": stochastic, "attack_eot": eot, "repeats": budget.repeats,
                  "mean_agreement_with_majority": float(agree.mean()),
                  "images_with_disagreeing_draws": int((agree < 1).sum()),
                  "single_draw_accuracy": single, "vote_accuracy": vote}, explanation)


def mode_check(run: AttackRunner, budget: AuditBudget) -> Check:
    """The gradient mode in use against exact gradients."""
    t = run.target
    name = f"{t.gradient} gradient agrees with exact"
    baseline = _cosine(_gradient(t, "exact", 7), _gradient(t, "exact", 8))
    figures = {"exact_vs_exact_other_draw_cosine": baseline}
    if t.gradient == "exact":
        return Check(name, NOT_APPLICABLE, figures, "not applicable: exact gradients are in use "
                     "(the cosine of two draws' exact gradients shows how much one draw's "
                     "gradient tells)")
    if t.gradient == "checkpoint":
        same = _cosine(_gradient(t, "checkpoint", 7), _gradient(t, "exact", 7))
        figures["same_draw_cosine"] = same
        status = PASS if same >= 1 - 1e-3 else FAIL
        return Check(name, status, figures, "checkpointing recomputes the same graph: at the "
                     "same noise draw its gradient must equal the exact one (cosine ≥ 0.999)")
    # the mode in use must be at least as strong as exact: FAIL when it leaves significantly
    # more images correct (the evaluation overstates robustness)
    status, tested = sign_test(run.correct(t.attack), run.correct(t.attack, "exact"), budget)
    figures |= tested | {"accuracy_in_use": float(run.correct(t.attack).mean()),
                         "accuracy_exact": float(run.correct(t.attack, "exact").mean())}
    return Check(name, status, figures, explained(
        f"the {t.gradient} gradient cannot be compared at one noise draw: the same attack with "
        "exact gradients must not leave fewer images correct", status, tested["p_value"],
        budget))


def _gradient(t: Target, mode: str, seed: int) -> torch.Tensor:
    return input_gradients(t.defended(torch.Generator().manual_seed(seed), mode), t.x, t.y)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1).mean())


# ---------------------------------------------------------------- running an audit

def run_audit(target: Target, budget: AuditBudget | None = None, progress: bool = True
              ) -> Audit:
    """Every check on ``target``; a check whose attack cannot run fails with the reason."""
    from tqdm.auto import tqdm

    budget = budget or AuditBudget()
    run, curves = AttackRunner(target), {}
    steps = [
        ("gradient", lambda: [gradient_check(run)]),
        ("randomness", lambda: [randomness_check(run, budget)]),
        ("ε", lambda: [_guarded("accuracy falls with ε", lambda: eps_check(run, budget, curves))]),
        ("unbounded", lambda: [_guarded("unbounded attack reaches ~0 %",
                                        lambda: unbounded_check(run, budget, curves))]),
        ("iterations", lambda: [_guarded("more iterations do not raise accuracy",
                                         lambda: budget_check(run, budget, curves, "iterations"))]),
        ("EOT", lambda: [_guarded("more EOT do not raise accuracy",
                                  lambda: budget_check(run, budget, curves, "EOT"))]),
        ("baselines", lambda: baseline_checks(run, budget)),
        ("gradient mode", lambda: [_guarded(f"{target.gradient} gradient agrees with exact",
                                            lambda: mode_check(run, budget))]),
    ]
    checks = []
    for label, step in tqdm(steps, desc=f"audit {target.name}", disable=not progress):
        checks += step()
    return Audit(target.name, target.attack.key(), checks, curves)


def target_from_config(cfg: EvalConfig, images: int) -> Target:
    """The target of an evaluation config: its defense and classifier on the first ``images``
    of its fixed robust subset, its first white-box gradient attack (``auditable``: PGD, APGD,
    DiffAttack, DiffHammer, LF; default: PGD-10 at the dataset's ε, no EOT)."""
    robust, _ = evaluation_subsets(cfg.model_copy(update={"n": images}),
                                   len(data.labels(cfg.dataset, cfg.split, cfg.data_root)))
    x, y = data.load(cfg.dataset, cfg.split, root=cfg.data_root, indices=robust)
    classifier = load_classifier(cfg.classifier)
    defense = Defense.build(cfg.defense, classifier)
    attacks = [a for a in cfg.resolved_attacks() if a.auditable]
    attack = attacks[0] if attacks else AttackConfig(name="pgd", eps=default_eps(cfg.dataset, "linf"),
                                                     steps=10)

    def defended(generator: torch.Generator, gradient: str | None) -> nn.Module:
        return defense.model(classifier, generator, gradient)

    gradient = cfg.defense.gradient if defense.purifier is not None else "exact"
    return Target(defended, classifier, x, y, attack, gradient, cfg.defense.describe())


# ---------------------------------------------------------------- the report

def write_audit(audit: Audit, out_dir: Path) -> str:
    """audit.md (the checks and plots), audit.json and audit.png; returns the Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "audit.json").write_text(json.dumps(
        {"target": audit.target, "attack": audit.attack, "worst": audit.worst,
         "checks": [asdict(c) for c in audit.checks], "curves": audit.curves},
        indent=2, default=str) + "\n")
    plotted = plot_curves(audit.curves, out_dir / "audit.png")
    text = audit_markdown(audit) + ("\n![accuracy vs ε, iterations, EOT](audit.png)\n"
                                    if plotted else "")
    (out_dir / "audit.md").write_text(text)
    return text


def audit_markdown(audit: Audit) -> str:
    lines = [f"# Gradient-masking audit: {audit.target}", "",
             f"Attack under audit: `{audit.attack}`. Overall: **{audit.worst.upper()}**"
             f"{_verdict_note(audit)}.", "",
             "| check | status | figures | what it means |", "|---|---|---|---|"]
    for c in audit.checks:
        lines.append(f"| {c.name} | **{c.status.upper()}** | {_figures(c.figures)} | "
                     f"{c.explanation} |")
    return "\n".join(lines) + "\n"


def _verdict_note(audit: Audit) -> str:
    """' (2 checks inconclusive: …; 1 not applicable)' — what the overall verdict rests on."""
    counts = {s: sum(c.status == s for c in audit.checks) for s in (INCONCLUSIVE, NOT_APPLICABLE)}
    parts = []
    if counts[INCONCLUSIVE]:
        parts.append(f"{counts[INCONCLUSIVE]} check(s) inconclusive: too few images changed for "
                     "their tests to decide")
    if counts[NOT_APPLICABLE]:
        parts.append(f"{counts[NOT_APPLICABLE]} not applicable")
    return f" ({'; '.join(parts)})" if parts else ""


def _figures(figures: dict) -> str:
    def show(v):
        if isinstance(v, dict):
            return "(" + ", ".join(f"{k} {show(x)}" for k, x in v.items()) + ")"
        return f"{v:.3g}" if isinstance(v, float) else str(v).replace("|", "/")
    return "; ".join(f"{k.replace('_', ' ')}: {show(v)}" for k, v in figures.items())


def plot_curves(curves: dict, path: Path) -> bool:
    panels = [k for k in ("eps", "iterations", "EOT") if k in curves]
    if not panels:
        return False
    with figure(path, 1, len(panels), (4 * len(panels), 3)) as (fig, axes):
        for ax, key in zip(axes[0], panels):
            ax.plot(curves[key]["x"], [100 * a for a in curves[key]["accuracy"]], "o-")
            ax.set_xlabel({"eps": "ε", "iterations": "attack iterations",
                           "EOT": "EOT samples"}[key])
            ax.set_ylabel("robust accuracy (%)")
            ax.set_ylim(0, 100)
            if key != "eps":
                ax.set_xscale("log", base=2)
            ax.set_xticks(curves[key]["x"])
            ax.set_xticklabels([f"{v:.3g}" for v in curves[key]["x"]])
            ax.minorticks_off()
    return True
