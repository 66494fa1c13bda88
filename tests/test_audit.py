"""`advpure audit`: deliberately broken defenses are flagged, an honest one is not failed."""
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from advpure import data
from advpure.cli import app
from advpure.evaluation import AttackConfig, EvalConfig
from advpure.studies.audit import (FAIL, INCONCLUSIVE, PASS, WARN, AttackRunner,
                                      AuditBudget, Check, Target, binomial_tail,
                                      gradient_check, mode_check, not_converged,
                                      randomness_check, run_audit, sign_test,
                                      target_from_config)
from advpure.models import load_classifier

SMALL = AuditBudget(images=16, factors=(1, 2), eps_factors=(0.5, 1.0), repeats=4,
                    square_queries=100)


class Rounded(nn.Module):
    """Shattered gradients: the classifier on the input rounded to 4 grey levels."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(torch.round(x * 4) / 4)


class NoGradPurifier(nn.Module):
    """Zero gradients: a 'purification' (a blur) run under torch.no_grad."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, x):
        with torch.no_grad():
            blurred = nn.functional.avg_pool2d(x, 3, 1, 1)
        return self.classifier(blurred)


class NoisyInput(nn.Module):
    """A randomized defense: Gaussian noise on the input, drawn from its generator."""

    def __init__(self, classifier, generator):
        super().__init__()
        self.classifier, self.generator = classifier, generator

    def forward(self, x):
        noise = torch.randn(x.shape, generator=self.generator)
        return self.classifier((x + 0.2 * noise).clamp(0, 1))


def digits_target(make, eot=None) -> Target:
    classifier = load_classifier("builtin:digits-cnn")
    x, y = data.load("digits", indices=torch.arange(16))
    attack = AttackConfig(name="pgd", eps=0.2, steps=5, eot=eot)
    return Target(lambda generator, gradient: make(classifier, generator), classifier, x, y,
                  attack, name=make.__name__)


def statuses(audit) -> dict[str, str]:
    return {c.name: c.status for c in audit.checks}


def test_the_statistics_are_the_stated_tests():
    assert binomial_tail(0, 5, 0.3) == pytest.approx(1.0)
    assert binomial_tail(3, 3, 0.5) == pytest.approx(0.125)
    assert binomial_tail(2, 4, 0.5) == pytest.approx(11 / 16)
    stronger = torch.tensor([1.0] * 9 + [0.0])           # 9 images correct only when stronger
    weaker = torch.tensor([0.0] * 9 + [1.0])
    budget = AuditBudget(alpha=0.05, warn_alpha=0.1)
    status, figures = sign_test(stronger, weaker, budget)
    assert status == FAIL and abs(figures["p_value"] - 2 * 11 / 1024) < 1e-12   # two-sided
    assert sign_test(weaker, stronger, budget)[0] == PASS
    # 5 of 5 discordant one way: p = 2/32 = 0.0625, between α and the WARN level
    five = torch.tensor([1.0] * 5 + [0.0] * 5), torch.zeros(10)
    assert sign_test(*five, budget)[0] == WARN
    # at WARN level α there is no WARN, and 5 discordant images can never reach α = 0.05
    assert sign_test(*five, AuditBudget(alpha=0.05, warn_alpha=0.05))[0] == INCONCLUSIVE
    # 1 of 1 one way (p = 1) can never reach α: no WARN on noise, and no power
    assert sign_test(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]),
                     AuditBudget())[0] == INCONCLUSIVE
    # power at 10 points, α = 0.05: 6 images one way reach p = 2/64 < 0.05, P(Bin(10, .1) ≥ 6)
    assert figures["power_at_10_points"] == pytest.approx(binomial_tail(6, 10, 0.1))


def test_not_converged_sees_a_gradual_fall_end_to_end_and_keeps_a_warn():
    """A fall of 6 of 64 images per doubling: no neighbours differ significantly, the smallest
    against the largest budget (18 one way: p = 2/2^18) does."""
    correct = [torch.ones(64), torch.ones(64), torch.ones(64), torch.ones(64)]
    for k in range(1, 4):
        correct[k] = correct[k - 1].clone()
        correct[k][6 * (k - 1):6 * k] = 0
    check = Check("more iterations do not raise accuracy", PASS, {}, "ok")
    flagged = not_converged(check, correct, [1, 2, 4, 8], "iterations", AuditBudget())
    assert flagged.status == WARN and "1 → 8" in flagged.explanation
    assert flagged.figures["falls_p_values"]["1→8"] == pytest.approx(2 * 0.5 ** 18)
    assert flagged.figures["falls_p_values"]["1→2"] == pytest.approx(2 * 0.5 ** 6)
    already = Check("more iterations do not raise accuracy", WARN, {}, "WARN: rising")
    kept = not_converged(already, correct, [1, 2, 4, 8], "iterations", AuditBudget())
    assert kept.status == WARN and "not converged" in kept.explanation
    assert 0 < kept.figures["detectable_fall_points"] < 100


def test_shattered_gradients_of_a_rounding_defense_are_flagged():
    audit = run_audit(digits_target(lambda c, g: Rounded(c)), SMALL, progress=False)
    found = statuses(audit)
    assert found["gradient is neither zero nor vanishing"] == FAIL
    assert found["white-box beats black-box Square"] == FAIL
    assert found["white-box beats transfer from the undefended classifier"] == FAIL
    assert found["unbounded attack reaches ~0 %"] != PASS


def test_a_no_grad_purification_is_flagged_not_crashed_on():
    audit = run_audit(digits_target(lambda c, g: NoGradPurifier(c)), SMALL, progress=False)
    found = statuses(audit)
    assert found["gradient is neither zero nor vanishing"] == FAIL
    assert found["accuracy falls with ε"] == FAIL             # PGD cannot even run
    assert "no gradient" in next(c for c in audit.checks
                                 if c.name == "accuracy falls with ε").explanation


def test_a_randomized_defense_attacked_with_eot_1_is_warned_about():
    target = digits_target(NoisyInput)
    check = randomness_check(AttackRunner(target), SMALL)
    assert check.status == WARN and check.figures["stochastic"]
    assert "EOT" in check.explanation
    with_eot = randomness_check(AttackRunner(digits_target(NoisyInput, eot=4)), SMALL)
    assert with_eot.status == PASS
    assert gradient_check(AttackRunner(target)).status == PASS


def test_a_gradient_mode_weaker_than_exact_fails():
    """In use: a masked backward pass (the rounding defense); exact: the real gradient."""
    classifier = load_classifier("builtin:digits-cnn")
    x, y = data.load("digits", indices=torch.arange(16))

    def defended(generator, gradient):
        return classifier if gradient == "exact" else Rounded(classifier)

    target = Target(defended, classifier, x, y, AttackConfig(name="pgd", eps=0.2, steps=5),
                    gradient="bpda")
    check = mode_check(AttackRunner(target), SMALL)
    assert check.status == FAIL
    assert check.figures["accuracy_in_use"] > check.figures["accuracy_exact"]


def test_the_honest_digits_diffpure_defense_gets_no_fail(tmp_path):
    cfg = EvalConfig(defense={"name": "diffpure", "dt": 0.02},
                     attacks=({"name": "pgd", "eps": 0.2, "steps": 5, "eot": 2},))
    target = target_from_config(cfg, SMALL.images)
    audit = run_audit(target, SMALL, progress=False)
    assert FAIL not in statuses(audit).values(), statuses(audit)
    assert {"eps", "iterations", "EOT"} <= set(audit.curves)


def test_audit_from_the_command_line_writes_its_report(tmp_path):
    result = CliRunner().invoke(app, [
        "audit", "--defense", "diffpure", "--dt", "0.05", "--gradient", "adjoint",
        "--attack", "pgd", "--eps", "0.2", "--steps", "2", "--eot", "2", "--images", "8",
        "--factors", "1,2", "--eps-factors", "1,2", "--repeats", "2", "--square-queries", "20",
        "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "audit.md").read_text()
    assert "adjoint gradient agrees with exact" in report
    assert (tmp_path / "audit.png").is_file() and (tmp_path / "audit.json").is_file()


@pytest.mark.parametrize("attack", ["diffattack", "diffhammer", "lf"])
def test_the_audit_runs_every_check_with_a_breaker_as_its_attack(attack):
    cfg = EvalConfig(defense={"name": "diffpure", "dt": 0.05},
                     attacks=({"name": attack, "eps": 0.2, "steps": 2, "eot": 2},))
    budget = AuditBudget(images=4, factors=(1, 2), eps_factors=(0.5, 1.0), repeats=2,
                         square_queries=10)
    audit = run_audit(target_from_config(cfg, budget.images), budget, progress=False)
    assert audit.attack.startswith(attack)
    assert {"eps", "iterations", "EOT"} <= set(audit.curves)
    assert not [c.name for c in audit.checks if "error" in c.figures]


def test_a_sign_test_without_power_is_inconclusive_not_pass():
    from advpure.studies.audit import INCONCLUSIVE, has_power

    # 8 images, 3 discordant, all in the good direction: 2·½³ = 0.25 could never reach α = 0.01
    budget = AuditBudget(alpha=0.01)
    stronger = torch.tensor([0.0, 0.0, 0.0, 1, 1, 1, 1, 1])
    weaker = torch.tensor([1.0, 1.0, 1.0, 1, 1, 1, 1, 1])
    assert sign_test(stronger, weaker, budget)[0] == INCONCLUSIVE
    assert not has_power(7, 0.01) and has_power(8, 0.01)        # two-sided: 2·½⁷ > 0.01 > 2·½⁸
    # 64 images, 12 discordant in the good direction: PASS; 12 the wrong way: FAIL, as before
    stronger = torch.cat([torch.zeros(12), torch.ones(52)])
    weaker = torch.ones(64)
    assert sign_test(stronger, weaker, budget)[0] == PASS
    assert sign_test(weaker, stronger, budget)[0] == FAIL


def test_an_attack_still_gaining_with_iterations_is_warned_not_converged():
    from advpure.studies.audit import budget_check

    classifier = load_classifier("builtin:digits-cnn")
    x, y = data.load("digits", indices=torch.arange(64))
    attack = AttackConfig(name="pgd", eps=0.2, steps=4, step_size=0.01, random_init=False, eot=2)
    target = Target(lambda g, gradient: NoisyInput(classifier, g), classifier, x, y, attack)
    curves = {}
    check = budget_check(AttackRunner(target), AuditBudget(images=64, factors=(1, 2, 4)),
                         curves, "iterations")
    assert check.status == WARN and "not converged" in check.explanation
    assert curves["iterations"]["accuracy"][0] > curves["iterations"]["accuracy"][-1]
    assert min(check.figures["falls_p_values"].values()) < 0.01
    # its power at 64 images against 10 points (α = 0.01: 8 images one way), and the images
    # that reach 80 %
    assert check.figures["power_at_10_points"] == pytest.approx(binomial_tail(8, 64, 0.1))
    assert check.figures["images_for_80_percent_power_at_10_points"] == 101


def test_the_mode_check_does_not_apply_to_exact_and_the_verdict_says_what_it_rests_on():
    from advpure.studies.audit import INCONCLUSIVE, NOT_APPLICABLE, Audit, Check, audit_markdown

    audit = Audit("d", "a", [Check("x", PASS, {}, ""), Check("y", INCONCLUSIVE, {}, ""),
                             Check("z", NOT_APPLICABLE, {}, "")])
    assert audit.worst == INCONCLUSIVE
    assert "1 check(s) inconclusive" in audit_markdown(audit)
    assert "1 not applicable" in audit_markdown(audit)
    assert Audit("d", "a", [Check("z", NOT_APPLICABLE, {}, ""),
                            Check("x", PASS, {}, "")]).worst == PASS
