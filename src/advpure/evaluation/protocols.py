"""The seed papers' evaluation protocols, one name each (``--protocol``).

Budgets ε are per dataset (``data.profiles``): CIFAR and SVHN ℓ∞ 8/255 and ℓ2 0.5, ImageNet ℓ∞ 4/255 and ℓ2 3.0
(ℓ∞ is DiffPure's; ℓ2 3.0 is the usual ImageNet ℓ2 budget, no seed paper reports one); digits ℓ∞ 0.2 and ℓ2 1.0 (advpure's,
for 8×8 images). The papers' PGD step 0.007 belongs to ε = 8/255; it is scaled with
ε (0.007 · ε / (8/255)) elsewhere.

- ``diffpure`` (DiffPure App. B.2): AutoAttack standard and rand (EOT 20), ℓ∞, and BPDA+EOT with
  Hill et al.'s defaults (50 steps of ε/4 = 2/255, EOT 15, no random start);
  ``diffpure-l2``: AutoAttack standard and rand, ℓ2; ``diffpure-stadv``: StAdv (bound 0.05, 100
  Adam steps of 0.01, EOT 20);
- ``coup`` (COUP §5.1): AutoAttack standard and rand, and BPDA as PGD-20 with step 0.007;
- ``agdm`` and ``leekim`` (Lee & Kim 2023, which AGDM follows): PGD+EOT, 200 steps of 0.007,
  EOT 20;
- ``pei``: PGD+EOT 200 / 0.007 / EOT 20, BPDA+EOT and AutoAttack (standard and rand) with 100
  iterations;
- ``breakers``: the attacks that broke diffusion purification after the seed papers, beside
  the strongest classic ones, every one with EOT 20: PGD+EOT and DiffAttack (200 steps of
  0.007), APGD-EOT and AutoAttack rand (100 iterations), DiffHammer (100 steps) and DiffBreak's
  low-frequency attack (100 steps). advpure's suite: the budgets are the seed papers' scale,
  not one paper's protocol.

``max_steps``, ``max_eot`` and ``max_queries`` (flags on top) cap every attack; ``reductions`` lists what a run
used less of, and reports print it.
"""
from __future__ import annotations

from ..attacks import (
    AttackSettings,
    AutoAttackSettings,
    APGDSettings,
    BPDASettings,
    DiffAttackSettings,
    DiffHammerSettings,
    LowFrequencySettings,
    PGDSettings,
    StAdvSettings,
)
from ..attacks.base import reductions
from ..data.profiles import default_eps

PROTOCOLS = ("diffpure", "diffpure-l2", "diffpure-stadv", "coup", "agdm", "leekim", "pei",
             "breakers")
PAPER_STEP_FRACTION = 0.007 / (8 / 255)     # the papers' step 0.007 at ε = 8/255


def _autoattack_pair(eps: float, norm: str, steps: int = 100) -> list[AttackSettings]:
    return [AutoAttackSettings(version=version, eps=eps, norm=norm, steps=steps)
            for version in ("standard", "rand")]


def protocol_attacks(protocol: str, dataset: str) -> list[AttackSettings]:
    """The attacks of ``protocol`` at ``dataset``'s budgets, at full (paper) strength."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {', '.join(PROTOCOLS)}, found {protocol!r}")
    eps = default_eps(dataset, "linf")
    step = PAPER_STEP_FRACTION * eps
    pgd200 = PGDSettings(eps=eps, steps=200, step_size=step, eot=20)
    if protocol == "diffpure":
        return _autoattack_pair(eps, "linf") + [BPDASettings(
            eps=eps, steps=50, step_size=eps / 4, eot=15, random_init=False)]
    if protocol == "diffpure-l2":
        return _autoattack_pair(default_eps(dataset, "l2"), "l2")
    if protocol == "diffpure-stadv":
        return [StAdvSettings(bound=0.05, steps=100, lr=0.01, eot=20)]
    if protocol == "coup":
        return _autoattack_pair(eps, "linf") + [BPDASettings(eps=eps, steps=20, step_size=step)]
    if protocol in ("agdm", "leekim"):
        return [pgd200]
    if protocol == "breakers":
        return [pgd200, APGDSettings(eps=eps, steps=100, eot=20),
                AutoAttackSettings(version="rand", eps=eps, steps=100),
                DiffAttackSettings(eps=eps, steps=200, step_size=step, eot=20),
                DiffHammerSettings(eps=eps, steps=100, eot=20),
                LowFrequencySettings(eps=eps, steps=100, eot=20)]
    return [pgd200, BPDASettings(eps=eps, steps=100, step_size=step, eot=20)] + \
        _autoattack_pair(eps, "linf")


__all__ = ["PROTOCOLS", "protocol_attacks", "reductions"]
