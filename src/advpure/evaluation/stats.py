"""Accuracy statistics of stochastic defenses: draws, votes, worst cases, confidence intervals.

A record holds, for one image under one attack (or clean), the labels the defense predicted in
R independent purification draws. From those:

- **single-draw accuracy**: the fraction of draws that predict the true label (the expected
  accuracy of one stochastic evaluation);
- **vote accuracy**: the majority of the draws, a tie for the most votes counted as 1/k of a
  vote (the tie broken at random), so that it does not jump with the parity of R;
- **all-draws accuracy** (N-evaluation, DiffHammer, Wang et al. 2024): the image counts as
  robust only if every one of the R draws predicts the true label — the resubmission risk: an
  attacker who may submit the image R times wins if any purification errs;
- **any draw of any iterate** (DiffHammer's code, attacker.py 117-141): also wrong when some
  draw the attack scored on its way (any iterate, any draw) erred — the all-draws rule of the
  kept image's R fresh draws *and* of the attack's own history (``attacks/drawlog.py``); for an
  attack that keeps no such log it is the all-draws accuracy;
- **worst case over attacks (ours)**: per image, the attack chosen on one half of its draws
  (the lowest single-draw accuracy on the first ⌊R/2⌋) and scored on the other, fresh half
  (``EvalResult.robust_correct``), then the mean over images — stricter than the papers' rule,
  which takes the minimum of the attacks' *aggregate* accuracies (DiffPure App. B.2, COUP §5.1;
  ``papers_rule``), and free of the downward bias of a minimum over noisy estimates.

Every accuracy comes with a 95 % Wilson score interval over the images (``accuracy_summary``):
each image's correctness is first averaged over its seeds and draws, so that the image is the
unit, and the interval is taken at the effective number of images n·p̂(1 − p̂)/s²
(``effective_n``), which the spread of those means supports. Paired comparisons of attacks or
settings use the exact two-sided sign test (``paired_sign_test``) with its Clopper–Pearson
interval (the same test inverted), Holm-adjusted over a table (``holm``); ``sign_test_power``
and ``detectable_effect`` say what a non-significant test could have found.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

Z_95 = 1.959963984540054      # the standard normal 97.5 % quantile


def wilson_interval(successes: float, trials: float, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (Wilson 1927); ``successes`` and
    ``trials`` may be fractional (an effective n, ``effective_n``)."""
    if trials <= 0:
        raise ValueError(f"wilson_interval: expected trials > 0, found {trials}")
    if not -1e-9 <= successes <= trials * (1 + 1e-12):
        raise ValueError(f"wilson_interval: expected 0 <= successes <= trials, found "
                         f"{successes} of {trials}")
    p, n = min(max(successes / trials, 0.0), 1.0), trials
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def single_draw_correct(predictions: Sequence[int], label: int) -> float:
    """The fraction of draws whose prediction is ``label``."""
    if not predictions:
        raise ValueError("single_draw_correct: expected at least one draw, found none")
    return sum(p == label for p in predictions) / len(predictions)


def vote_correct(predictions: Sequence[int], label: int) -> float:
    """The majority vote's chance of being ``label``, ties broken at random: 1 when ``label``
    has strictly more votes than every other label, 1/k when it ties with k − 1 others for the
    most (half a vote for a two-way tie), else 0. One tie rule everywhere (reports, audit,
    ensembles), so that vote accuracy does not jump with the parity of R."""
    counts = Counter(predictions)
    most = max(counts.values(), default=0)
    if counts[label] != most or most == 0:
        return 0.0
    return 1.0 / sum(c == most for c in counts.values())


def all_draws_correct(predictions: Sequence[int], label: int) -> bool:
    """True when every draw predicts ``label`` (N-evaluation with N = R draws)."""
    if not predictions:
        raise ValueError("all_draws_correct: expected at least one draw, found none")
    return all(p == label for p in predictions)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(Bin(n, p) ≥ k)."""
    from scipy.stats import binom

    return float(binom.sf(k - 1, n, p))


def sign_test_p(lower: int, higher: int) -> float:
    """The exact two-sided sign test of ``lower`` against ``higher`` discordant pairs:
    min(1, 2·P(Bin(m, ½) ≥ max(lower, higher))), m = lower + higher (1 without any)."""
    m = lower + higher
    return min(1.0, 2.0 * binomial_tail(max(lower, higher), m, 0.5)) if m else 1.0


def clopper_pearson(k: int, m: int, alpha: float = 0.05) -> tuple[float, float]:
    """The exact (Clopper–Pearson) interval of a binomial proportion k/m, equal-tailed at
    ``alpha``: it excludes ½ exactly when ``sign_test_p`` < alpha (the same test inverted)."""
    from scipy.stats import beta

    if m == 0:
        return 0.0, 1.0
    low = float(beta.ppf(alpha / 2, k, m - k + 1)) if k > 0 else 0.0
    high = float(beta.ppf(1 - alpha / 2, k + 1, m - k)) if k < m else 1.0
    return low, high


def paired_sign_test(first: Sequence[float], second: Sequence[float]) -> dict[str, float]:
    """The exact two-sided sign test over paired per-image values (correctness, 0/1 or a
    fraction of draws): the images where they differ are the trials (ties dropped),
    ``p_value`` = ``sign_test_p``; ``share_low``/``share_high``: the Clopper–Pearson interval
    of the share of those images where ``first`` is lower (it excludes ½ iff p < 0.05)."""
    if len(first) != len(second):
        raise ValueError(f"paired_sign_test: expected paired values, found {len(first)} and "
                         f"{len(second)}")
    lower = sum(a < b for a, b in zip(first, second))
    higher = sum(a > b for a, b in zip(first, second))
    share_low, share_high = clopper_pearson(lower, lower + higher)
    return {"first_lower": lower, "first_higher": higher, "p_value": sign_test_p(lower, higher),
            "share_low": share_low, "share_high": share_high}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979): the k-th smallest p times (m − k + 1),
    made monotone and capped at 1; reject where the adjusted p < α controls the family-wise
    error at α over the m tests."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def papers_rule(accuracies: dict[str, float]) -> float:
    """The minimum of the attacks' aggregate accuracies (e.g. AutoAttack standard vs rand)."""
    if not accuracies:
        raise ValueError("papers_rule: expected at least one attack, found none")
    return min(accuracies.values())


def effective_n(correct: Sequence[float], observations: int = 1) -> float:
    """n·p̂(1 − p̂)/s², s² the (population) variance of the per-image means: the number of
    independent Bernoulli trials with the same variance of their mean. n for 0/1 values, more
    where each image is a mean of several ``observations`` (draws, seeds), never more than the
    n·observations trials there are; n where s² = 0 or p̂ ∈ {0, 1}."""
    n = len(correct)
    p = sum(correct) / n
    variance = sum((c - p) ** 2 for c in correct) / n
    if variance <= 0.0 or p <= 0.0 or p >= 1.0:
        return float(n)
    return min(n * p * (1 - p) / variance, float(n * observations))


def accuracy_summary(correct: Sequence[float], observations: int = 1) -> dict[str, float]:
    """{"accuracy", "ci_low", "ci_high", "n", "n_effective"} of per-image correctness values in
    [0, 1], each a mean of ``observations`` outcomes: the Wilson interval at the effective n
    (``effective_n``; simulated coverage near 95 % where the plain n over-covers and is up to
    3× wider, see ``advpure bench statistics``)."""
    n = len(correct)
    if n == 0:
        raise ValueError("accuracy_summary: expected at least one image, found none")
    accuracy = float(sum(correct)) / n
    trials = effective_n(correct, observations)
    low, high = wilson_interval(accuracy * trials, trials)
    return {"accuracy": accuracy, "ci_low": low, "ci_high": high, "n": n,
            "n_effective": trials}


def smallest_significant_run(alpha: float) -> int:
    """The fewest discordant images, all one way, for ``sign_test_p`` < ``alpha``."""
    m = 1
    while sign_test_p(m, 0) >= alpha:
        m += 1
    return m


def sign_test_power(n: int, effect: float, alpha: float) -> float:
    """The power of the two-sided sign test over ``n`` images against a true change of
    ``effect`` (a fraction of the images, e.g. 0.10 for 10 points) where the images only move
    one way (each changes with probability ``effect``): P(Bin(n, effect) ≥ the fewest images
    that reach α). Noise in the other direction only lowers it: an upper bound."""
    if not 0.0 <= effect <= 1.0:
        raise ValueError(f"sign_test_power: expected an effect in [0, 1], found {effect}")
    return binomial_tail(smallest_significant_run(alpha), n, effect)


def detectable_effect(n: int, alpha: float, power: float = 0.8) -> float:
    """The smallest effect (fraction of images) ``sign_test_power`` detects with ``power`` at
    ``n`` images (bisection to 1e-4): the minimum detectable effect of a non-significant
    test, below which it says nothing."""
    low, high = 0.0, 1.0
    if sign_test_power(n, high, alpha) < power:
        return float("inf")
    while high - low > 1e-4:
        mid = (low + high) / 2
        low, high = (mid, high) if sign_test_power(n, mid, alpha) < power else (low, mid)
    return high


def images_for_power(effect: float, alpha: float, power: float = 0.8) -> int:
    """The fewest images at which ``sign_test_power`` reaches ``power`` for ``effect``."""
    if effect <= 0.0:
        raise ValueError(f"images_for_power: expected an effect > 0, found {effect}")
    n = smallest_significant_run(alpha)
    while sign_test_power(n, effect, alpha) < power:
        n = n * 2 if sign_test_power(2 * n, effect, alpha) < power else n + 1
    return n


def budget_falls(correct: Sequence[Sequence[float]], grid: Sequence) -> list[tuple]:
    """(budget, larger budget, two-sided sign-test p, images lost − gained) of every pair of
    neighbouring budgets and of the smallest against the largest (a gradual fall can be
    significant only end to end); ``correct[i]``: per-image correctness at ``grid[i]``."""
    pairs = [(i, i + 1) for i in range(len(grid) - 1)]
    if len(grid) > 2:
        pairs.append((0, len(grid) - 1))
    falls = []
    for i, j in pairs:
        tested = paired_sign_test(list(correct[j]), list(correct[i]))
        falls.append((grid[i], grid[j], tested["p_value"],
                      tested["first_lower"] - tested["first_higher"]))
    return falls
