"""The breakers as their authors run them (Ka1b0/DiffHammer @ 1010822, ``hammer_authors``), the
losses (CE, CW, DLR; targeted) and restarts.

The reference numbers below were printed by the official code (attacker.py ``seeds_select``,
``EM``, ``update_batch_metrics``; defense/diffpure.py ``gradient`` with and without
``DIFF_ATTACK``) run outside the project on the same float64 inputs, drawn here from the same
seeded generators; the official code itself is not in the project."""
from types import SimpleNamespace

import pytest
import torch

from advpure.attacks import (
    ATTACKS,
    DiffAttackSettings,
    DiffHammerSettings,
    apgd_eot,
    cw_margin,
    dlr_loss,
    objective,
    pgd,
)
from advpure.attacks.hammer_authors import (
    AuthorsHistory,
    Chain,
    coarse_pullback,
    diffhammer_authors,
    em_gradient,
)
from advpure.attacks.losses import runner_up
from advpure.attacks.restarts import with_restarts
from advpure.defense import PurifiedClassifier
from advpure.diffusion import DiscreteSchedule, PerSampleNoise
from advpure.purifiers import AGDM, COUP, DiffPure
from conftest import tiny_cnn, tiny_unet

UPSTREAM_EM = {   # (norm, n_eot) -> (selected draws, the first image's weighted gradient)
    ("linf", 1): ([[0, 0, 3]], [-1.2721435709624591, -0.5829066073208834, -0.5797426880377813,
                                0.6503767670120632, -0.4642863257450604]),
    ("linf", 2): ([[0, 0, 3], [2, 2, 1]], [-1.4214553649154693, -0.5294566267443878,
                                           -0.6664402668030137, 0.6705183496009627,
                                           -0.5446872185069929]),
    ("l2", 1): ([[0, 0, 3]], [-1.1000950572196273, -0.4269385576975406, -0.40190005912725835,
                              0.3447296157354458, -0.46640052161295764]),
}


@pytest.mark.parametrize("norm, n_select", sorted(UPSTREAM_EM))
def test_selection_and_weights_equal_the_official_code(norm, n_select):
    g = torch.Generator().manual_seed(0)
    grads = torch.randn(4, 3, 5, generator=g, dtype=torch.float64)     # K draws × N × d
    losses = torch.randn(4, 3, generator=g, dtype=torch.float64)
    weighted, chosen = em_gradient(grads, losses, 8 / 255, norm, n_select)
    expected_chosen, expected_first = UPSTREAM_EM[norm, n_select]
    assert chosen.tolist() == expected_chosen
    torch.testing.assert_close(weighted[0, 0], torch.tensor(expected_first, dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)


class TinyEps(torch.nn.Module):
    """A 2-channel eps-network taking the official code's integer level i (= our level − 1)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64)
                                    * 0.3)

    def forward(self, x, t):
        i = torch.round(t * 1000) - 1
        return torch.tanh(torch.nn.functional.conv2d(x, self.w, padding=1)) * \
            (1 + i.view(-1, 1, 1, 1) / 1000)


@pytest.mark.parametrize("deviation, expected", [
    (False, (35.28486317998841, 76.28711170403727, [1.5110619009057729, 1.4967681156624024,
                                                    -0.06707991663514512,
                                                    -0.0017916210744805005])),
    (True, (35.41211380056802, 76.52833346188808, [1.5149461287852983, 1.5072913529457719,
                                                   -0.04712616552830572,
                                                   -0.016730490221719976])),
])
def test_the_grafted_backward_and_diffattack_term_equal_the_official_code(deviation, expected):
    """States at the attack's levels 99, 79, …, 19 (official indexing; our levels 100, 80, …),
    the output, the forward noise and a linear classifier's CE gradient, as the official
    ``gradient(x, y, CE, 'full')`` sees them after ``purify``."""
    g = torch.Generator().manual_seed(1)
    classifier = torch.randn(3, 32, generator=g, dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    torch.rand(2, 2, 4, 4, generator=g, dtype=torch.float64)            # the input (unused)
    states = torch.randn(5, 2, 2, 4, 4, generator=g, dtype=torch.float64)
    output = torch.randn(2, 2, 4, 4, generator=g, dtype=torch.float64).clamp(-1, 1)
    noise = torch.randn(2, 2, 4, 4, generator=g, dtype=torch.float64)
    times = [torch.full((2,), (i + 1) / 1000, dtype=torch.float64) for i in (99, 79, 59, 39, 19)]
    level = DiscreteSchedule().alpha_bar(times[0][:1])         # the input the noise noised
    x_in = (states[0] - (1 - level).sqrt() * noise) / level.sqrt()
    chain = Chain(list(zip(times, states)), output, [(x_in, noise)])
    purified = (output / 2 + 0.5).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(purified.flatten(1) @ classifier.T,
                                             torch.tensor([0, 2]), reduction="sum")
    (g_out,) = torch.autograd.grad(loss, purified)
    purifier = SimpleNamespace(model=TinyEps(), schedule=DiscreteSchedule())
    grad = coarse_pullback(purifier, chain, g_out, stride=1, deviation=deviation)
    total, absolute, first = expected
    assert float(grad.sum()) == pytest.approx(total, rel=1e-12)
    assert float(grad.abs().sum()) == pytest.approx(absolute, rel=1e-12)
    torch.testing.assert_close(grad.flatten()[:4], torch.tensor(first, dtype=torch.float64),
                               rtol=1e-10, atol=1e-12)


def test_n_evaluation_log_and_kept_iterate_equal_the_official_bookkeeping():
    """Two runs (the second a restart in another image order) of T iterates × 3 draws × 4
    images; the official ``update_batch_metrics`` gave these logs and 'bests'."""
    history = AuthorsHistory.empty(4, "cpu")
    history.mean_loss = history.mean_loss.double()
    g = torch.Generator().manual_seed(5)
    expected = [([0, 1, 2, 3], [1 / 3, 1 / 3, 2 / 3, 2 / 3],
                 [-0.033474437244536435, 0.5234913608642988, 0.8053093751563075,
                  1.1534818347305258]),
                ([1], [1 / 3, 2 / 3, 2 / 3, 2 / 3],
                 [0.07440399030324073, 0.5234913608642988, 0.8053093751563075,
                  1.1534818347305258])]
    for run, index in enumerate(([0, 1, 2, 3], [2, 0, 3, 1])):
        losses = torch.randn(3 + run, 3, 4, generator=g, dtype=torch.float64)
        failed = torch.rand(3 + run, 3, 4, generator=g) < 0.2
        kept = history.update(torch.tensor(index), losses, failed)
        bests, mean_failed, mean_loss = expected[run]
        assert kept.nonzero()[:, 0].tolist() == bests
        assert history.any_failed.tolist() == [True] * 4
        torch.testing.assert_close(history.mean_failed, torch.tensor(mean_failed))
        torch.testing.assert_close(history.mean_loss, torch.tensor(mean_loss, dtype=torch.float64))


def defended(seed: int = 0, sampler: str = "sde") -> PurifiedClassifier:
    purifier = DiffPure(tiny_unet(), t_star=0.1, dt=0.02, sampler=sampler)
    return PurifiedClassifier(purifier, tiny_cnn(), torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("em, deviation", [(True, False), (False, True)])
def test_the_authors_loop_stays_in_the_ball_and_logs_every_image(digits_batch, em, deviation):
    x, y = digits_batch
    x, y = x[:4], y[:4]
    x_adv, history = diffhammer_authors(defended(), x, y, eps=0.1, steps=4, restarts=2, draws=3,
                                        em=em, deviation=deviation,
                                        generator=torch.Generator().manual_seed(1))
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6
    assert 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
    assert bool(((history.mean_failed > 0) <= history.any_failed).all())   # Avg ≤ Wor


def test_the_authors_variant_needs_a_diffusion_chain(digits_batch):
    x, y = digits_batch
    with pytest.raises(ValueError, match="purified classifier"):
        diffhammer_authors(tiny_cnn(), x[:2], y[:2], eps=0.1, steps=1)


def test_the_authors_diffattack_runs_where_a_chain_starts_from_the_noised_input(digits_batch):
    """AGDM noises its input into its first state as DiffPure does (the README's example);
    COUP starts its chain from the input itself, which the code's deviation cannot refer to."""
    x, y = digits_batch
    agdm = AGDM(tiny_unet(), tiny_cnn(), t_star=0.07, dt=0.02)
    x_adv, _ = diffhammer_authors(PurifiedClassifier(agdm, tiny_cnn(), torch.Generator()),
                                  x[:2], y[:2], eps=0.1, steps=1, restarts=1, draws=2,
                                  em=False, deviation=True)
    assert float((x_adv - x[:2]).abs().max()) <= 0.1 + 1e-6
    coup = COUP(tiny_unet(), tiny_cnn(), t_star=0.1, dt=0.02)
    with pytest.raises(ValueError, match="forward-noised input"):
        diffhammer_authors(PurifiedClassifier(coup, tiny_cnn(), torch.Generator()), x[:2], y[:2],
                           eps=0.1, steps=1, restarts=1, draws=2, em=False, deviation=True)


def test_variant_settings_take_upstream_budgets_and_refuse_the_other_variants_options():
    authors = DiffHammerSettings(variant="authors-code", eps=0.1)
    assert (authors.steps, authors.restarts, authors.eot) == (50, 3, 10)
    assert authors.replace(steps=5).steps == 5
    with pytest.raises(ValueError, match="takes no option em_iters"):
        DiffHammerSettings(variant="authors-code", em_iters=1)
    with pytest.raises(ValueError, match="takes no option hammer_stride"):
        DiffAttackSettings(hammer_stride=3)
    assert DiffAttackSettings().loss == "cw" and "cw" in DiffAttackSettings(eps=0.1).key()
    keys = {ATTACKS["pgd"](eps=0.1, loss=loss).key() for loss in ("ce", "cw", "dlr")}
    assert len(keys) == 3


def test_losses_by_hand():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.5, 2.0, 1.5, 0.0]])
    y = torch.tensor([0, 2])
    torch.testing.assert_close(cw_margin(logits, y), torch.tensor([1.0 - 3.0, 2.0 - 1.5]))
    torch.testing.assert_close(dlr_loss(logits, y), torch.tensor([-2.0 / 3.0, 0.5 / 1.5]))
    pairs = torch.tensor([[0, 1], [2, 3]])
    torch.testing.assert_close(objective("cw", targeted=True)(logits, pairs),
                               torch.tensor([1.0 - 3.0, 0.0 - 2.0]))
    torch.testing.assert_close(objective("dlr", targeted=True)(logits, pairs),
                               torch.tensor([-(3.0 - 1.0) / (3.0 + 0.5),
                                             -(1.5 - 0.0) / (2.0 - 0.25)]))
    ce = torch.nn.functional.cross_entropy(logits, pairs[:, 1], reduction="none")
    torch.testing.assert_close(objective("ce", targeted=True)(logits, pairs), -ce)
    with pytest.raises(ValueError, match="ce | cw | dlr"):
        objective("hinge")


def test_targeted_attacks_reach_the_runner_up_class_on_the_bare_classifier():
    from advpure import data
    from advpure.models import load_classifier

    classifier = load_classifier("builtin:digits-cnn")
    x, y = data.load("digits", "test", indices=torch.arange(32))
    targets = runner_up(classifier, x, y)
    assert bool((targets != y).all())
    for attack in (pgd, apgd_eot):
        x_adv = attack(classifier, x, y, eps=0.2, steps=20, loss="cw", targets=targets,
                       generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            hit = (classifier(x_adv).argmax(1) == targets).float().mean()
        assert float(hit) >= 0.9


def test_restarts_rerun_only_the_unbroken_images_and_keep_each_ones_best():
    """A model that misclassifies exactly the images shifted by +1; attack runs that shift
    image 0 on the first run and every image on the second."""
    calls = []

    def model(rows):
        broken = (rows.flatten(1).mean(1) > 0.5).long()
        return torch.nn.functional.one_hot(broken, 2).float()   # right (0) unless shifted

    def attack_once(x, labels, log):
        calls.append(len(x))
        shift = torch.zeros(len(x), 1)
        shift[: (1 if len(calls) == 1 else len(x))] = 1.0
        return x + shift
    x, y = torch.zeros(3, 1), torch.zeros(3, dtype=torch.long)
    best = with_restarts(attack_once, model, x, y, restarts=3, draws=2)
    assert calls == [3, 2]                   # the second run on the 2 unbroken; no third
    assert best.flatten().tolist() == [1.0, 1.0, 1.0]


def test_gdmps_authors_guided_steps_equal_the_official_code():
    """Six guided steps from level 36 (the official ``denoising_process`` with GUIDED, ε =
    8/255) with the same normal and uniform draws (u = Φ(z) here, ``rand_like`` upstream)."""
    from advpure.diffusion import FixedNoise
    from advpure.diffusion.samplers import run_steps
    from advpure.purifiers import GDMP
    from advpure.purifiers.hetero import MultiDraw

    gdmp = GDMP(TinyEps(), variant="authors-code")
    assert (gdmp.settings.rounds, gdmp.settings.t_star, gdmp.settings.dt) == (4, 0.036, 0.006)
    g = torch.Generator().manual_seed(3)
    x_start = torch.randn(2, 2, 4, 4, generator=g, dtype=torch.float64)
    normals = [torch.randn(2, 2, 4, 4, generator=g, dtype=torch.float64) for _ in range(6)]
    uniforms = [torch.rand(2, 2, 4, 4, generator=g, dtype=torch.float64) for _ in range(6)]
    draws = [d for z, u in zip(normals, uniforms) for d in (z, 2 ** 0.5 * torch.erfinv(2 * u - 1))]
    grid = gdmp.schedule.grid(0.036, 0.0, 0.006)
    with torch.no_grad():
        out = run_steps(gdmp.authors_step, x_start, grid, MultiDraw(FixedNoise(draws), 2),
                        context=(x_start,))
    assert float(out.sum()) == pytest.approx(-5.436295941419554, rel=1e-12)
    assert float(out.abs().sum()) == pytest.approx(47.84234094508682, rel=1e-12)
    torch.testing.assert_close(out.flatten()[:4], torch.tensor(
        [-0.44699352788219376, 0.34789883023917617, 0.49070366448246844, -0.3222087081015763],
        dtype=torch.float64), rtol=1e-10, atol=1e-12)


def test_gdmps_authors_grafted_backward_equals_the_official_code():
    """Four rounds, the attack's levels 35, 23, 11 of each (official indexing) and the scalar
    Σ k_i √ᾱ_i the official backward adds to every pixel."""
    from advpure.purifiers import GDMP

    gdmp = GDMP(TinyEps(), variant="authors-code")
    classifier = torch.randn(3, 32, generator=torch.Generator().manual_seed(1),
                             dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    states = torch.randn(4, 3, 2, 2, 4, 4, generator=g, dtype=torch.float64)
    output = torch.randn(2, 2, 4, 4, generator=g, dtype=torch.float64).clamp(-1, 1)
    fine = []                                  # the defense's six levels; every other is used
    for round_states in states:
        for k, level in enumerate((36, 30, 24, 18, 12, 6)):
            state = round_states[k // 2] if k % 2 == 0 else torch.full_like(output, float("nan"))
            fine.append((torch.full((2,), level / 1000, dtype=torch.float64), state))
    purified = (output / 2 + 0.5).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(purified.flatten(1) @ classifier.T,
                                             torch.tensor([0, 2]), reduction="sum")
    (g_out,) = torch.autograd.grad(loss, purified)
    grad = coarse_pullback(gdmp, Chain(fine, output, []), g_out, stride=2)
    assert float(grad.sum()) == pytest.approx(40.06663138083046, rel=1e-12)
    assert float(grad.abs().sum()) == pytest.approx(78.88498271883175, rel=1e-12)
    torch.testing.assert_close(grad.flatten()[:4], torch.tensor(
        [1.7675300642221765, 1.8599767151506217, -0.01776269956166998, 0.06069293422409299],
        dtype=torch.float64), rtol=1e-10, atol=1e-12)


def test_diffattacks_authors_term_over_gdmps_four_rounds_equals_the_official_code():
    """Each round's deviation from its own noised input and noise, S counted over all rounds
    (defense/diffpure.py 67-71, 122-146): fabricated states at the attack's levels 36, 24, 12 and
    round outputs, each round's first state noised from the previous round's output."""
    from advpure.diffusion import add_noise
    from advpure.purifiers import GDMP

    gdmp = GDMP(TinyEps(), variant="authors-code")
    classifier = torch.randn(3, 32, generator=torch.Generator().manual_seed(1),
                             dtype=torch.float64)
    g = torch.Generator().manual_seed(8)
    x = torch.rand(2, 2, 4, 4, generator=g, dtype=torch.float64)
    noises = torch.randn(4, 2, 2, 4, 4, generator=g, dtype=torch.float64)
    middle = torch.randn(4, 2, 2, 2, 4, 4, generator=g, dtype=torch.float64)
    outputs = torch.randn(4, 2, 2, 4, 4, generator=g, dtype=torch.float64).clamp(-1, 1)
    fine, drawn, x_in = [], [], 2 * x - 1
    for noise, (s24, s12), output in zip(noises, middle, outputs):
        t_star = torch.full((2,), 0.036, dtype=torch.float64)
        drawn.append((x_in, noise))
        by_level = {36: add_noise(x_in, t_star, noise, gdmp.schedule), 24: s24, 12: s12}
        for level in (36, 30, 24, 18, 12, 6):
            state = by_level.get(level, torch.full_like(x, float("nan")))
            fine.append((torch.full((2,), level / 1000, dtype=torch.float64), state))
        x_in = output
    purified = (outputs[-1] / 2 + 0.5).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(purified.flatten(1) @ classifier.T,
                                             torch.tensor([0, 2]), reduction="sum")
    (g_out,) = torch.autograd.grad(loss, purified)
    grad = coarse_pullback(gdmp, Chain(fine, outputs[-1], drawn), g_out, stride=2,
                           deviation=True)
    assert float(grad.sum()) == pytest.approx(41.643361973889576, rel=1e-10)
    assert float(grad.abs().sum()) == pytest.approx(81.56027658455662, rel=1e-10)
    torch.testing.assert_close(grad.flatten()[:4], torch.tensor(
        [1.689914562999903, 1.8345655169141504, 0.15368416390499223, 0.09210689025301853],
        dtype=torch.float64), rtol=1e-9, atol=1e-12)


def test_gdmp_authors_code_runs_under_attack_and_refuses_the_papers_options(digits_batch):
    from advpure.purifiers import GDMP, GDMPSettings

    x, y = digits_batch
    with pytest.raises(ValueError, match="takes no option guidance_scale"):
        GDMPSettings(variant="authors-code", guidance_scale=10.0)
    assert GDMPSettings(variant="authors-code").describe() == \
        "gdmp(t*=0.036, dt=0.006, ε=0.0314, authors' code) 4 rounds"
    gdmp = GDMP(tiny_unet(), variant="authors-code", guidance_eps=0.2)
    defense = PurifiedClassifier(gdmp, tiny_cnn(), torch.Generator().manual_seed(0),
                                 gradient="checkpoint")
    x_in = x[:2].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(defense(x_in).sum(), x_in)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0
    x_adv, _ = diffhammer_authors(defense, x[:2], y[:2], eps=0.2, steps=2, restarts=1,
                                  draws=2, generator=torch.Generator().manual_seed(1))
    assert float((x_adv - x[:2]).abs().max()) <= 0.2 + 1e-6


def test_draw_log_counts_any_draw_of_any_iterate_and_maps_restart_subsets():
    from advpure.attacks.drawlog import DrawLog

    log = DrawLog(4)
    log.saw(torch.tensor([[False, True, False, False], [False, False, False, False]]))
    part = log.subset(torch.tensor([0, 3]))
    part.saw(torch.tensor([False, True]))                      # image 3
    assert log.broken.tolist() == [False, True, False, True]
    blind = PurifiedClassifier(DiffPure(tiny_unet(), t_star=0.1, dt=0.02), tiny_cnn(),
                               gradient="blind")
    assert DrawLog.for_target(blind, 2, "cpu") is None       # its forward is the classifier


def test_pgd_logs_the_failures_of_its_eot_draws(digits_batch):
    from advpure.attacks.drawlog import DrawLog

    x, y = digits_batch
    x, y = x[:4], y[:4]
    calls = []

    def model(rows):                   # wrong on image 2 in the third call only
        calls.append(len(rows))
        logits = torch.nn.functional.one_hot(y.repeat(len(rows) // 4), 10).float()
        logits = logits + 0.0 * rows.flatten(1).sum(1, keepdim=True)
        if len(calls) == 3:
            logits[2::4] = torch.nn.functional.one_hot((y[2] + 1) % 10, 10).float()
        return logits
    log = DrawLog(4)
    pgd(model, x, y, eps=0.1, steps=4, eot=2, log=log, generator=torch.Generator().manual_seed(0))
    assert log.broken.tolist() == [False, False, True, False]


def test_diffhammers_rule_in_outcomes_store_and_reports(tmp_path):
    import sqlite3

    from advpure.evaluation.store import SCHEMA, Outcome, RecordStore

    right_now_broken_before = Outcome(0, "pgd", 1, 3, (3, 3), 1.0, attack_broken=True)
    assert right_now_broken_before.all_draws and not right_now_broken_before.any_iterate
    assert Outcome(0, "square", 1, 3, (3, 3), 1.0).any_iterate       # no log: all draws
    old = tmp_path / "records.sqlite"                          # a store of an earlier version
    connection = sqlite3.connect(old)
    connection.executescript(SCHEMA.replace(", attack_broken INTEGER", ""))
    connection.close()
    with RecordStore(old) as store:
        run = store.begin_run('{"a": 1}')
        store.add(run, [right_now_broken_before])
        assert store.outcomes(run)[0].attack_broken is True


def test_reports_give_both_n_evaluation_rules_named(tmp_path):
    """A real run (the shipped DiffPure, PGD with a log and Square without): results.md names
    both rules, results.csv has both as numbers, and DiffHammer's rule is never above the
    all-draws accuracy of the kept image."""
    import csv

    import advpure
    from advpure.attacks import ATTACKS

    x, y = advpure.data.load("digits", "test", indices=torch.arange(4))
    defense = PurifiedClassifier(DiffPure(advpure.load_diffusion("builtin:digits-unet"),
                                          t_star=0.1, dt=0.05),
                                 advpure.load_classifier("builtin:digits-cnn"))
    attacks = [ATTACKS["pgd"](eps=0.2, steps=2, eot=2), ATTACKS["square"](eps=0.2, queries=5)]
    result = advpure.evaluate(defense, x, y, attacks=attacks, draws=2, out=tmp_path / "run",
                              progress=False)
    assert result.logged_attacks() == {attacks[0].key()}
    text = (tmp_path / "run" / "results.md").read_text()
    assert "any draw of any iterate (DiffHammer's rule)" in text
    assert "all draws of the kept image (fresh)" in text
    assert f"keep no log of their draws (any draw of any iterate is their all-draws accuracy): " \
           f"`{attacks[1].key()}`" in text
    with open(tmp_path / "run" / "results.csv") as f:
        rows = {r["accuracy"]: r for r in csv.DictReader(f)}
    for row in rows.values():
        assert float(row["any_iterate_mean"]) <= float(row["all_draws_mean"]) + 1e-12


def test_multi_round_purification_repeats_the_purifier_with_one_noise_source(digits_batch):
    from advpure.evaluation.config import DefenseConfig
    from advpure.evaluation.experiment import build_purifier
    from advpure.purifiers import Repeated

    x, _ = digits_batch
    cfg = DefenseConfig(name="diffpure", dt=0.05, rounds=3, diffusion="builtin:digits-unet")
    assert cfg.describe() == "diffpure(t*=0.1, dt=0.05) 3 rounds"
    from advpure.models import load_classifier
    purifier = build_purifier(cfg, load_classifier("builtin:digits-cnn"))
    assert isinstance(purifier, Repeated) and purifier.rounds == 3
    noise = PerSampleNoise.from_seeds(range(len(x)))
    again = PerSampleNoise.from_seeds(range(len(x)))
    with torch.no_grad():
        by_hand = x
        for _ in range(3):
            by_hand = purifier.purifier(by_hand, again)
        torch.testing.assert_close(purifier(x, noise), by_hand, rtol=0, atol=0)


def test_transfer_tricks_by_hand():
    from advpure.attacks.transfer_tricks import l1_momentum, rescale_randomly, smooth

    delta = torch.zeros(1, 1, 5, 5)
    delta[0, 0, 2, 2] = 1.0
    blurred = smooth(delta)[0, 0, 1:4, 1:4]
    g1 = torch.exp(-torch.tensor([1.0, 0.0, 1.0]) * 1.5)              # σ² = 1/3
    torch.testing.assert_close(blurred, torch.outer(g1, g1) / g1.sum() ** 2)
    g = torch.tensor([[[[1.0, -3.0]]], [[[2.0, 2.0]]]])
    torch.testing.assert_close(l1_momentum(torch.ones_like(g), g, 0.5),
                               0.5 + g / torch.tensor([4.0, 4.0]).view(2, 1, 1, 1))
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = rescale_randomly(x, torch.Generator().manual_seed(1))
    unchanged = (out - x).flatten(1).abs().max(1).values < 1e-6
    assert 16 < int(unchanged.sum()) < 48                              # p = ½ per image


@pytest.mark.parametrize("tricks", [dict(momentum=1.0), dict(input_diversity=True),
                                    dict(smooth_gradient=True)])
def test_pgd_with_each_trick_stays_in_the_ball(digits_batch, tricks):
    x, y = digits_batch
    x_adv = pgd(defended(), x[:3], y[:3], eps=0.1, steps=2, eot=2, **tricks,
                generator=torch.Generator().manual_seed(1))
    assert float((x_adv - x[:3]).abs().max()) <= 0.1 + 1e-6
    assert not torch.equal(x_adv, pgd(defended(), x[:3], y[:3], eps=0.1, steps=2, eot=2,
                                      generator=torch.Generator().manual_seed(1)))


def test_the_authors_vmi_is_their_pgd_with_step_two_eps_over_steps(digits_batch):
    """The code's VMI computes its momentum but steps along the raw gradient."""
    x, y = digits_batch
    kw = dict(eps=0.1, steps=3, restarts=1, draws=2)
    vmi, _ = diffhammer_authors(defended(seed=3), x[:3], y[:3], optimizer="vmi",
                                generator=torch.Generator().manual_seed(1), **kw)
    pgd_run, _ = diffhammer_authors(defended(seed=3), x[:3], y[:3], optimizer="pgd",
                                    pgd_step=2 * 0.1 / 3,
                                    generator=torch.Generator().manual_seed(1), **kw)
    torch.testing.assert_close(vmi, pgd_run)


@pytest.mark.parametrize("options", [dict(optimizer="svre"),
                                     dict(optimizer="pgd", momentum=1.0, input_diversity=True,
                                          smooth_gradient=True)])
def test_the_authors_svre_and_pgd_with_mdt_run_in_the_ball(digits_batch, options):
    x, y = digits_batch
    x_adv, history = diffhammer_authors(defended(), x[:3], y[:3], eps=0.1, steps=2,
                                        restarts=1, draws=2, **options,
                                        generator=torch.Generator().manual_seed(1))
    assert float((x_adv - x[:3]).abs().max()) <= 0.1 + 1e-6
    assert history.any_failed.dtype == torch.bool
    with pytest.raises(ValueError, match="authors-code pgd optimizer"):
        DiffHammerSettings(variant="authors-code", momentum=1.0)
