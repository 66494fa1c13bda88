"""Accuracy statistics of stochastic defenses: draws, votes, worst cases, confidence intervals.

A record holds, for one image under one attack (or clean), the labels the defense predicted in
R independent purification draws. From those:

- **single-draw accuracy**: the fraction of draws that predict the true label (the expected
  accuracy of one stochastic evaluation);
- **vote accuracy**: the true label has strictly more votes than any other label (a tie counts
  as wrong);
- **all-draws accuracy** (N-evaluation, DiffHammer, Wang et al. 2024): the image counts as
  robust only if every one of the R draws predicts the true label — the resubmission risk: an
  attacker who may submit the image R times wins if any purification errs;
- **any draw of any iterate** (DiffHammer's code, attacker.py 117-141): also wrong when some
  draw the attack scored on its way (any iterate, any draw) erred — the all-draws rule of the
  kept image's R fresh draws *and* of the attack's own history (``attacks/drawlog.py``); for an
  attack that keeps no such log it is the all-draws accuracy;
- **worst case over attacks (ours)**: per image, the minimum over attacks of its single-draw
  accuracy, then the mean over images — stricter than the papers' rule, which takes the minimum
  of the attacks' *aggregate* accuracies (DiffPure App. B.2, COUP §5.1; ``papers_rule``).

Every accuracy comes with a 95 % Wilson score interval (``wilson_interval``) over the images:
each image's correctness is first averaged over its seeds and draws, so that the image is the
unit (16 images × 3 seeds are 16 trials, not 48). Paired differences between attacks or
defenses get a t interval over the images' differences (``paired_difference``), beside the
sign test.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

Z_95 = 1.959963984540054      # the standard normal 97.5 % quantile


def wilson_interval(successes: float, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (Wilson 1927); ``successes`` may be
    fractional (a mean of draws times ``trials``)."""
    if trials <= 0:
        raise ValueError(f"wilson_interval: expected trials > 0, found {trials}")
    if not 0.0 <= successes <= trials:
        raise ValueError(f"wilson_interval: expected 0 <= successes <= trials, found "
                         f"{successes} of {trials}")
    p, n = successes / trials, trials
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def single_draw_correct(predictions: Sequence[int], label: int) -> float:
    """The fraction of draws whose prediction is ``label``."""
    if not predictions:
        raise ValueError("single_draw_correct: expected at least one draw, found none")
    return sum(p == label for p in predictions) / len(predictions)


def vote_correct(predictions: Sequence[int], label: int) -> bool:
    """True when ``label`` has strictly more votes than every other label."""
    counts = Counter(predictions)
    return counts[label] > max((c for k, c in counts.items() if k != label), default=0)


def all_draws_correct(predictions: Sequence[int], label: int) -> bool:
    """True when every draw predicts ``label`` (N-evaluation with N = R draws)."""
    if not predictions:
        raise ValueError("all_draws_correct: expected at least one draw, found none")
    return all(p == label for p in predictions)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(Bin(n, p) ≥ k)."""
    from scipy.stats import binom

    return float(binom.sf(k - 1, n, p))


def paired_sign_test(first: Sequence[float], second: Sequence[float]) -> dict[str, float]:
    """The one-sided sign test that ``first`` is lower than ``second`` over paired per-image
    values (correctness, 0/1 or a fraction of draws): the images where they differ are the
    trials, ``p_value`` = P(Bin(n, ½) ≥ #first lower) (ties dropped; 1 without any)."""
    if len(first) != len(second):
        raise ValueError(f"paired_sign_test: expected paired values, found {len(first)} and "
                         f"{len(second)}")
    lower = sum(a < b for a, b in zip(first, second))
    higher = sum(a > b for a, b in zip(first, second))
    p = binomial_tail(lower, lower + higher, 0.5) if lower + higher else 1.0
    return {"first_lower": lower, "first_higher": higher, "p_value": p}


def worst_case(per_attack: dict[str, Sequence[float]]) -> list[float]:
    """Per image, the minimum over attacks of its correctness (ours; all lists equally long)."""
    lengths = {len(v) for v in per_attack.values()}
    if len(lengths) != 1:
        raise ValueError(f"worst_case: expected one value per image for every attack, found "
                         f"lengths {sorted(lengths)}")
    return [min(values) for values in zip(*per_attack.values())]


def papers_rule(accuracies: dict[str, float]) -> float:
    """The minimum of the attacks' aggregate accuracies (e.g. AutoAttack standard vs rand)."""
    if not accuracies:
        raise ValueError("papers_rule: expected at least one attack, found none")
    return min(accuracies.values())


def paired_difference(first: Sequence[float], second: Sequence[float]) -> dict[str, float]:
    """The mean over images of first − second (per-image correctness) with its 95 % t interval
    (n − 1 degrees of freedom; a zero-width interval for n = 1 or no spread)."""
    from scipy.stats import t as student_t

    if len(first) != len(second) or not first:
        raise ValueError(f"paired_difference: expected paired values, found {len(first)} and "
                         f"{len(second)}")
    diffs = [a - b for a, b in zip(first, second)]
    n, mean = len(diffs), sum(diffs) / len(diffs)
    sd = (sum((d - mean) ** 2 for d in diffs) / (n - 1)) ** 0.5 if n > 1 else 0.0
    half = float(student_t.ppf(0.975, n - 1)) * sd / n ** 0.5 if n > 1 else 0.0
    return {"difference": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def accuracy_summary(correct: Sequence[float]) -> dict[str, float]:
    """{"accuracy", "ci_low", "ci_high", "n"} of per-image correctness values in [0, 1]."""
    n = len(correct)
    total = float(sum(correct))
    low, high = wilson_interval(total, n)
    return {"accuracy": total / n, "ci_low": low, "ci_high": high, "n": n}
