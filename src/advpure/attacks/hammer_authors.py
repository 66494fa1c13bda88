"""DiffHammer as its authors' code runs it (Ka1b0/DiffHammer at commit ``AUTHORS_COMMIT``:
``attacker.py``, ``config.py``, ``defense/diffpure.py``): the ``authors-code`` variant.

Per restart r (``restarts``, default 3) the loss is CW, CE, DLR in turn (DLR's floor 1e-3), and
``steps`` iterations run (50 upstream). Restart r > 0 re-runs the images whose best mean
failure rate is still ≤ ``RESTART_THRESHOLD`` (upstream loads them hardest first; the order
only shapes its batches). One run, on a batch:

1. Start uniformly in the ε-box around x (also for ℓ2, unprojected) and evaluate the *clean*
   image on K = ``draws`` purification draws (n_eval = 10), each giving the loss and the
   classifier's gradient at the purified image ('bpda').
2. Choose the draw by ``select_draws`` (attacker.py 62-68: Σ_i ELU(ℓ_i + ε⟨u(g_j), g_i⟩), top
   n_eot = 1) and weight the draws by ``em_gradient`` (70-86: w_i = sigmoid(λ(ℓ_i +
   ⟨u(g_sel), g_i⟩)), λ = 5). Its EM loop recomputes the same w ``em_steps`` times and never
   assigns the result back, so it is one weighting around the selected draw's gradient: that is
   what runs here, without the loop.
3. Graft the weighted gradient onto one replay of the selected draw: its forward noise is the
   selected draw's, its reverse noise that of the draw selected for the batch's last image
   (the replay seeds every image, then draws the reverse noise after the last seed), and the
   backward runs a coarser DDPM chain over the replay's states (``stride``: the attack's 20
   levels per step over the defense's 10), x ← c_x·x + c_ε·Jᵀ (defense/diffpure.py 103-151).
4. Average with the previous step's gradient, g ← v·g + (1 − v)·g_prev, v = (it + 1)^(−α),
   α = ``EM_ALPHA``, then step: APGD (step 2ε per image, momentum 0.75 toward the *start*
   point, which the code never moves; at the checkpoints int(p·steps) halve the step where
   the per-iterate worst-draw loss rose in fewer than 75 % of the steps or stalled, and go back
   to the kept iterate) or PGD (step 0.007).
5. Evaluate the new iterate on K fresh draws as in 1; stop early once every draw of every
   image fails. The kept iterate (``x_adv_best``) is updated where the maximum over iterates
   of the mean loss over draws rose (and the image's any-draw failure did not fall), or where
   some draw failed for the first time.

N-evaluation upstream (``AuthorsHistory``): an image is broken if any draw of any iterate
failed ("Wor"), and "Avg" is the maximum over iterates of its fraction of failed draws, both
on the attack's own draws (no fresh ones). A restart overwrites the kept image of the images it
re-ran with its own ``x_adv_best``, which is its random start where the restart improved
nothing (upstream keeps its numbers in the log, so its metrics are not affected; a fresh-draw
evaluation of the returned image is).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import torch
from torch.nn import functional as F

from ..defense import PurifiedClassifier
from ..diffusion import SOLVER_GRADIENTS, PerSampleNoise, add_noise
from ..purifiers.lm import LM
from .base import check_attack_inputs, steps_bar
from .losses import cross_entropy, cw_margin, dlr_loss
from .pgd import project
from .transfer_tricks import l1_momentum, rescale_randomly, smooth

AUTHORS_COMMIT = "1010822129f2f2e5e882179b49fc60259c66a259"
LOSS_CYCLE = ("cw", "ce", "dlr")           # config.py: LOSS_NAMES, one per restart
AUTHORS_LOSSES = {"cw": cw_margin, "ce": cross_entropy, "dlr": partial(dlr_loss, floor=1e-3)}
EM_LAMBDA, EM_ALPHA = 5.0, 0.5             # config.py: EM_LAM, EM_ALPHA
RESTART_THRESHOLD = 0.5                    # config.py: RESTART_THR
AUTHORS_OPTIMIZERS = ("apgd", "pgd", "vmi", "svre")
PGD_STEP = 0.007                           # config.py: PGD_STEP_SIZE
APGD_MARKS = (0, 0.22, 0.41, 0.57, 0.7, 0.8, 0.87, 0.93)   # attacker.py 301-302
APGD_RHO, APGD_MOMENTUM = 0.75, 0.75
AUTHORS_DEFAULTS = {"steps": 50, "restarts": 3, "eot": 10}   # N_ITERS, N_RESTART, N_EVAL


def _unit(g: torch.Tensor, norm: str) -> torch.Tensor:
    """sign(g) (ℓ∞) or g/‖g‖₂ over the last dimension (attacker.py ``unit``)."""
    return g.sign() if norm == "linf" else g / g.norm(dim=-1, keepdim=True)


def select_draws(grads: torch.Tensor, losses: torch.Tensor, eps: float, norm: str = "linf",
                 n_select: int = 1) -> torch.Tensor:
    """The draws to attack (attacker.py 62-68): for K draws with flat gradients ``grads``
    K×N×d and losses K×N, the n_select draws j of largest Σ_i ELU(ℓ_i + ε⟨u(g_j), g_i⟩), the
    expected loss of all draws after a step along draw j. Returns n_select×N indices."""
    delta = torch.einsum("jnd,ind->jin", _unit(grads, norm), grads)       # [j, i, n]
    expected = F.elu(losses.unsqueeze(0) + eps * delta).sum(dim=1)        # [j, n]
    return expected.topk(k=n_select, dim=0).indices


def em_gradient(grads: torch.Tensor, losses: torch.Tensor, eps: float, norm: str = "linf",
                n_select: int = 1, lam: float = EM_LAMBDA
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted gradient of the selected draws (attacker.py 70-86): w_i = sigmoid(λ(ℓ_i +
    ⟨u(g_s), g_i⟩)) around the first selected draw s, times softmax over the selected draws k
    of cos(g_i, g_k), times n_select; r_k = Σ_i w_ki g_i / Σ_i w_ki. Returns (r n_select×N×d,
    the selected indices n_select×N)."""
    chosen = select_draws(grads, losses, eps, norm, n_select)
    images = torch.arange(grads.shape[1], device=grads.device)
    first = grads[chosen[0], images]                                      # N×d
    w = torch.sigmoid(lam * (losses + (_unit(first, norm) * grads).sum(-1)))  # K×N
    selected = grads[chosen, images]                                      # n_select×N×d
    cosine = F.cosine_similarity(grads.unsqueeze(1), selected.unsqueeze(0), dim=-1)  # K×s×N
    weight = n_select * torch.softmax(cosine, dim=1).transpose(0, 1) * w.unsqueeze(0)
    r = (weight.unsqueeze(-1) * grads.unsqueeze(0)).sum(1) / weight.sum(1).unsqueeze(-1)
    return r, chosen


@dataclass
class AuthorsHistory:
    """The upstream N-evaluation log of each image, across restarts (attacker.py 117-141)."""

    any_failed: torch.Tensor        # bool: some draw of some iterate failed ("Wor")
    mean_failed: torch.Tensor       # max over iterates of the fraction of failed draws ("Avg")
    mean_loss: torch.Tensor         # max over iterates of the mean loss over draws

    @classmethod
    def empty(cls, n: int, device) -> AuthorsHistory:
        zeros = torch.zeros(n, device=device)
        return cls(zeros.bool(), zeros.clone(), zeros.clone())

    def update(self, index: torch.Tensor, losses: torch.Tensor, failed: torch.Tensor
               ) -> torch.Tensor:
        """Fold a run's history (T×K×n losses and failures of the images ``index``) into the
        log; returns the images whose kept iterate becomes the current one."""
        mean_loss = losses.mean(1).max(0).values
        mean_failed = failed.float().mean(1).max(0).values
        any_failed = failed.flatten(0, 1).any(0)
        logged = self.mean_loss[index]
        rises = (logged == 0) | (mean_loss > logged)        # upstream: an empty log holds 0
        best = rises & (any_failed >= self.any_failed[index])
        first_failure = any_failed & ~self.any_failed[index]
        self.mean_loss[index] = torch.where(rises, mean_loss, logged)
        self.mean_failed[index] = torch.maximum(self.mean_failed[index], mean_failed)
        self.any_failed[index] |= any_failed
        return best | first_failure


@dataclass
class Draws:
    """K purification draws of one iterate: their seeds (K×N), losses, failures and the
    classifier's gradients at the purified images (K×N×d)."""

    seeds: list[list[int]]
    losses: torch.Tensor
    failed: torch.Tensor
    grads: torch.Tensor


def bpda_gradient(model: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor, loss_fn,
                  seeds: list[int]) -> torch.Tensor:
    """The classifier's gradient at the purification of x with ``seeds`` replayed."""
    with torch.no_grad():
        purified = model.purifier(x, PerSampleNoise.from_seeds(seeds, x.device))
    purified.requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(model.classifier(purified), y).sum(), purified)
    return grad


def evaluate_draws(model: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor, loss_fn,
                   draws: int) -> Draws:
    """K draws of ``model`` at x with the 'bpda' gradient (attacker.py 187-199, 257-269)."""
    n = x.shape[0]
    seeds = PerSampleNoise.draw_seeds(model.generator, draws * n)
    with torch.no_grad():
        purified = model.purifier(x.repeat(draws, 1, 1, 1),
                                  PerSampleNoise.from_seeds(seeds, x.device))
    purified.requires_grad_(True)
    logits = model.classifier(purified)
    losses = loss_fn(logits, y.repeat(draws))
    (grads,) = torch.autograd.grad(losses.sum(), purified)
    failed = logits.argmax(1) != y.repeat(draws)
    return Draws([seeds[k * n:(k + 1) * n] for k in range(draws)], losses.detach().view(draws, n),
                 failed.view(draws, n), grads.view(draws, n, -1))


class ReplayNoise:
    """The grafted replay's noise (see the module doc, 3.): the first draw (the forward
    noising) from ``forward``, every later one from ``reverse`` after its own first draw;
    ``drawn`` keeps every draw with the tensor it was drawn for (DiffAttack's reference needs
    each round's forward noise)."""

    def __init__(self, forward: PerSampleNoise, reverse: PerSampleNoise):
        self.forward, self.reverse = forward, reverse
        self.drawn: list[tuple[torch.Tensor, torch.Tensor]] = []

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        z = self.reverse.randn_like(x)
        if not self.drawn:
            z = self.forward.randn_like(x)             # the reverse stream's forward draw spent
        self.drawn.append((x.detach(), z))
        return z


def replay_noise(draws: Draws, chosen: torch.Tensor, device) -> ReplayNoise:
    """Image i replays the forward noise of its selected draw and the reverse noise of the
    draw selected for the last image."""
    last = int(chosen[-1])
    forward = [draws.seeds[int(k)][i] for i, k in enumerate(chosen)]
    reverse = [draws.seeds[last][i] for i in range(len(chosen))]
    return ReplayNoise(PerSampleNoise.from_seeds(forward, device),
                       PerSampleNoise.from_seeds(reverse, device))


def fresh_noise(generator: torch.Generator, n: int, device) -> ReplayNoise:
    """One fresh draw replayed exactly (the attack without EM: ``next(seeder)``)."""
    seeds = PerSampleNoise.draw_seeds(generator, n)
    return ReplayNoise(PerSampleNoise.from_seeds(seeds, device),
                       PerSampleNoise.from_seeds(seeds, device))


@dataclass
class Chain:
    """One purification without a graph: (t, x_t) of every eps-model call in order, the
    output in [−1, 1], and every noise draw with the tensor it was drawn for."""

    states: list[tuple[torch.Tensor, torch.Tensor]]
    output: torch.Tensor
    drawn: list[tuple[torch.Tensor, torch.Tensor]]


def run_chain(purifier, x: torch.Tensor, noise: ReplayNoise) -> Chain:
    calls = []
    hook = purifier.model.register_forward_hook(
        lambda module, args, out: calls.append((args[1].detach(), args[0].detach())))
    try:
        with torch.no_grad():
            output = purifier(x, noise)
    finally:
        hook.remove()
    return Chain(calls, 2 * output - 1, noise.drawn)


def forward_noising(chain: Chain, first_state: tuple, schedule) -> tuple[torch.Tensor, ...]:
    """(x_in, ε) of the round that starts at ``first_state`` = (t*, x_t*): the draw ε whose
    tensor x_in it noised into x_t* = √ᾱ(t*) x_in + σ(t*) ε (DiffPure Eq. 3), x_in the round's
    input (the previous round's output)."""
    t, x_t = first_state

    def miss(pair: tuple) -> float:
        x_in, z = pair
        if x_in.shape != x_t.shape:
            return float("inf")
        return float((add_noise(x_in, t, z, schedule) - x_t).abs().max())

    with torch.no_grad():
        best = min(chain.drawn, key=miss)
        missed = miss(best)
    if missed > 1e-4 * (1.0 + float(x_t.abs().max())):
        raise ValueError("diffattack variant 'authors-code': the purifier does not start its "
                         "reverse chain from its forward-noised input x_t = √ᾱ x + σ ε, the "
                         "reference of the code's deviation term (DiffPure, GDMP and AGDM do; "
                         "COUP only with forward_noise, heterogeneous noise never)")
    return best


def ddpm_coefficients(a: torch.Tensor, a_next: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """c_x, c_ε of x_j = c_x x_i + c_ε ε(x_i) + c_z z (η = 1; defense/diffpure.py 35-40)."""
    c_noise2 = (1 - a / a_next) * (1 - a_next) / (1 - a)
    c_x = (a_next / a).sqrt()
    return c_x, (1 - a_next - c_noise2).sqrt() - c_x * (1 - a).sqrt()


def rounds_of(states: list) -> list[list]:
    """The chain's eps-model calls split into purification rounds (where time goes up)."""
    rounds = [[states[0]]]
    for previous, state in zip(states, states[1:]):
        if float(state[0][0]) > float(previous[0][0]):
            rounds.append([])
        rounds[-1].append(state)
    return rounds


def guidance_shifts(purifier, coarse: list) -> list[float]:
    """k_n of GDMP's authors-code step at each coarse state, its σ_n that of the coarse step
    (the code's backward passes the attack's sequence to ``GDMP_step``); 0 for other
    purifiers."""
    settings = getattr(purifier, "settings", None)
    if getattr(settings, "variant", None) != "authors-code" or \
            not hasattr(purifier, "authors_shift"):
        return [0.0] * len(coarse)
    times = [float(t[0]) for t, _ in coarse] + [0.0]
    return [purifier.authors_shift(t, t_next) for t, t_next in zip(times, times[1:])]


@dataclass
class RoundDeviation:
    """What DiffAttack's deviation term needs of one round: its forward noise ε, its output
    (in [−1, 1]) and the scale S·d, S the attack's states over all rounds."""

    noise: torch.Tensor
    output: torch.Tensor
    scale: int


def round_deviations(purifier, chain: Chain, rounds: list, stride: int) -> list:
    """Each round's ``RoundDeviation``: a round's output is the next round's input (the last
    round's, the chain's output); upstream counts S over every round's attack states."""
    noisings = [forward_noising(chain, fine[0], purifier.schedule) for fine in rounds]
    outputs = [x_in for x_in, _ in noisings[1:]] + [chain.output]
    scale = sum(len(fine[::stride]) for fine in rounds) * chain.output[0].numel()
    return [RoundDeviation(noise, output, scale)
            for (_, noise), output in zip(noisings, outputs)]


def coarse_pullback(purifier, chain: Chain, g: torch.Tensor, stride: int,
                    deviation: bool = False) -> torch.Tensor:
    """The authors' grafted backward (defense/diffpure.py 103-151): the gradient ``g`` at the
    purified image (in [0, 1]) pulled back, round by round from the last, along every
    ``stride``-th state of the chain, each a DDPM step x_j = c_x x_i + c_ε ε(x_i, i) (η = 1,
    noise term dropped; GDMP's authors-code shift makes it (c_x − k_i)), then through the
    round's forward noising (×√ᾱ(t*); GDMP adds the scalar Σ_i k_i √ᾱ_i, as the code does);
    the Jacobian products clamped to ±1e7 as upstream.

    ``deviation`` (DiffAttack, defense/diffpure.py 67-71, 130-131, 146): in each round, the
    gradient of L_dev = Σ_j ½ᾱ_j ‖x_j − (√ᾱ_j x_T + √(1−ᾱ_j) ε)‖² / (S·d) over the round's S_r
    states x_j after the coarse steps (its output included), x_T the round's noised input and
    ε its noise, S the states of all rounds, enters each state's gradient and, through the
    reference, the round's input (not scaled by √ᾱ_T, as upstream)."""
    rounds = rounds_of(chain.states)
    deviations = round_deviations(purifier, chain, rounds, stride) if deviation else \
        [None] * len(rounds)
    g = g / 2.0                                                     # d/d(x in [−1, 1])
    for fine, dev in reversed(list(zip(rounds, deviations))):
        g = _round_pullback(purifier, fine[::stride], g, dev)
    return (g * 2.0).clamp(-1e7, 1e7)


def _round_pullback(purifier, coarse: list, g: torch.Tensor,
                    deviation: RoundDeviation | None) -> torch.Tensor:
    alpha_bar = purifier.schedule.alpha_bar
    shifts = guidance_shifts(purifier, coarse)
    levels = [alpha_bar(t[:1]).to(g) for t, _ in coarse] + [torch.ones(1).to(g)]
    x_start = coarse[0][1]
    pulled_by_reference = torch.zeros_like(g)
    for k in reversed(range(len(coarse))):
        if deviation is not None:
            a_j = levels[k + 1]
            after = coarse[k + 1][1] if k + 1 < len(coarse) else deviation.output
            reference = a_j.sqrt() * x_start + (1 - a_j).sqrt() * deviation.noise
            diff = a_j * (after - reference) / deviation.scale
            g = g + diff
            pulled_by_reference += a_j.sqrt() * diff
        c_x, c_e = ddpm_coefficients(levels[k], levels[k + 1])
        t, x_k = coarse[k]
        x_in = x_k.detach().requires_grad_(True)
        with torch.enable_grad():
            (jacobian_g,) = torch.autograd.grad(purifier.model(x_in, t), x_in, g)
        g = (c_x - shifts[k]) * g + c_e * jacobian_g.clamp(-1e7, 1e7)
    scalar = sum(k_i * float(a.sqrt()) for k_i, a in zip(shifts, levels))
    return g * levels[0].sqrt() + scalar - pulled_by_reference


def runs_a_chain(purifier) -> bool:
    """A purifier whose backward the authors' code replays as a DDPM chain (DiffPure, GDMP;
    not LM, whose own backward the code takes)."""
    return hasattr(purifier, "schedule") and not isinstance(getattr(purifier, "purifier",
                                                                       purifier), LM)


def replayed_backward(model: PurifiedClassifier, x_adv: torch.Tensor, noise: ReplayNoise,
                      g: torch.Tensor) -> torch.Tensor:
    """g pulled back through one purification with ``noise`` under the defense's gradient mode
    (LM: the code's ``gradient`` with ``g0`` differentiates its purification, here exactly)."""
    x_in = x_adv.detach().requires_grad_(True)
    purified = model.purifier(x_in, noise, gradient=model.gradient)
    (grad,) = torch.autograd.grad(purified, x_in, g)
    return grad


def grafted_gradient(model: PurifiedClassifier, x_adv: torch.Tensor, draws: Draws,
                     weighted: torch.Tensor, chosen: torch.Tensor, stride: int,
                     deviation: bool = False) -> torch.Tensor:
    """The mean over the selected draws of the weighted gradient grafted onto their replays
    (attacker.py 244-251 with ``gradient(..., g0)``)."""
    total = torch.zeros_like(x_adv)
    for r, picks in zip(weighted, chosen):
        noise = replay_noise(draws, picks, x_adv.device)
        if not runs_a_chain(model.purifier):
            total += replayed_backward(model, x_adv, noise, r.view_as(x_adv))
            continue
        chain = run_chain(model.purifier, x_adv, noise)
        total += coarse_pullback(model.purifier, chain, r.view_as(x_adv), stride, deviation)
    return total / len(chosen)


def fresh_gradient(model: PurifiedClassifier, x_adv: torch.Tensor, y: torch.Tensor, loss_fn,
                   stride: int, deviation: bool, generator: torch.Generator) -> torch.Tensor:
    """The attack without EM (n_eot = 1): a fresh draw, the classifier's own gradient at its
    output pulled back along the coarse chain (``gradient(..., g0=None)``; a purifier without
    a chain, LM: through its own purification under the defense's gradient mode)."""
    noise = fresh_noise(generator, x_adv.shape[0], x_adv.device)
    if not runs_a_chain(model.purifier):
        x_in = x_adv.detach().requires_grad_(True)
        purified = model.purifier(x_in, noise, gradient=model.gradient)
        (grad,) = torch.autograd.grad(loss_fn(model.classifier(purified), y).sum(), x_in)
        return grad
    chain = run_chain(model.purifier, x_adv, noise)
    purified = ((chain.output + 1) / 2).requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(model.classifier(purified), y).sum(), purified)
    return coarse_pullback(model.purifier, chain, g, stride, deviation)


@dataclass
class Stepper:
    """The authors' update rules (attacker.py 293-420) on one batch: APGD; PGD with its M, D, T
    (``transfer_tricks.py``; step ``PGD_STEP`` unless given); VMI, which computes the variance-
    tuned momentum but steps along the raw gradient (381-393; so that is what runs, step
    2ε/steps); SVRE (396-420, ``svre_step``: step 1.6ε/steps)."""

    x: torch.Tensor
    eps: float
    norm: str
    steps: int
    optimizer: str
    start: torch.Tensor
    pgd_step: float | None = None
    momentum: float = 0.0
    smooth_gradient: bool = False

    def __post_init__(self):
        size = {"apgd": 2.0 * self.eps, "pgd": self.pgd_step or PGD_STEP,
                "vmi": 2.0 * self.eps / self.steps, "svre": 1.6 * self.eps / self.steps}
        self.step = torch.full((self.x.shape[0], 1, 1, 1), size[self.optimizer],
                               dtype=self.x.dtype, device=self.x.device)
        self.step_last = self.step.clone()
        self.marks = sorted({int(p * self.steps) for p in APGD_MARKS})
        self.accumulated = torch.zeros_like(self.x)       # M's momentum; SVRE's G

    def _direction(self, g: torch.Tensor) -> torch.Tensor:
        return g.sign() if self.norm == "linf" else \
            g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)

    def update(self, x_adv: torch.Tensor, grad: torch.Tensor, it: int) -> torch.Tensor:
        if self.optimizer == "pgd":
            grad = smooth(grad) if self.smooth_gradient else grad
            if self.momentum > 0:
                grad = self.accumulated = l1_momentum(self.accumulated, grad, self.momentum)
        z = project(x_adv + self.step * self._direction(grad), self.x, self.eps, self.norm)
        if self.optimizer != "apgd":
            return z
        a = APGD_MOMENTUM if it else 1.0
        moved = x_adv + a * (z - x_adv) + (1 - a) * (x_adv - self.start)
        return project(moved, self.x, self.eps, self.norm)

    def svre_step(self, model: PurifiedClassifier, x_adv: torch.Tensor, y: torch.Tensor,
                  loss_fn, seen: Draws, grad: torch.Tensor) -> torch.Tensor:
        """SVRE's inner loop over the K draws: g_m = g_k(z) − g_k(x) + g (each draw's 'bpda'
        gradient replayed at the inner iterate z), G_m += g_m, z ← Π(z + η sign G_m); then
        G += G_m and x ← Π(x + η sign G)."""
        inner, z = torch.zeros_like(x_adv), x_adv.clone()
        for k, seeds in enumerate(seen.seeds):
            g_z = bpda_gradient(model, z, y, loss_fn, seeds)
            inner = inner + g_z - seen.grads[k].view_as(x_adv) + grad
            z = project(z + self.step * inner.sign(), self.x, self.eps, self.norm)
        self.accumulated = self.accumulated + inner
        return project(x_adv + self.step * self.accumulated.sign(), self.x, self.eps,
                       self.norm)

    def checkpoint(self, it: int, worst_loss: torch.Tensor) -> bool:
        """At a checkpoint (it + 1 a mark) halve the step where the per-iterate worst-draw
        loss ``worst_loss`` (T×N, row 0 the clean evaluation) rose too rarely or stalled;
        True: go back to the kept iterate (every image, as upstream)."""
        if self.optimizer != "apgd" or it + 1 not in self.marks[1:]:
            return False
        last = self.marks[self.marks.index(it + 1) - 1]
        rose = (worst_loss[last + 1:it + 2] > worst_loss[last:it + 1]).sum(0)
        few = rose < APGD_RHO * (it + 1 - last)
        stalled = (self.step == self.step_last).view(-1) & (worst_loss[it + 1] == worst_loss[last])
        self.step_last = self.step.clone()
        self.step = torch.where((few | stalled).view(-1, 1, 1, 1), self.step / 2, self.step)
        return True


@dataclass(frozen=True)
class AuthorsOptions:
    """The options of one authors-code run (config.py's ATTACK section)."""

    eps: float
    norm: str = "linf"
    steps: int = 50                  # N_ITERS, per restart
    draws: int = 10                  # N_EVAL
    n_select: int = 1                # N_EOT: draws selected and grafted per step
    stride: int = 2                  # the attack's levels per step over the defense's
    optimizer: str = "apgd"          # METHOD: apgd | pgd | vmi | svre
    em: bool = True                  # EM: the selective attack (off: a fresh draw per step)
    deviation: bool = False          # DIFF_ATTACK: DiffAttack's deviation term
    pgd_step: float | None = None    # PGD_STEP_SIZE (None: 0.007)
    momentum: float = 0.0            # PGD_CMD 'M' (1 upstream)
    input_diversity: bool = False    # PGD_CMD 'D'
    smooth_gradient: bool = False    # PGD_CMD 'T'


def step_gradient(model: PurifiedClassifier, x_adv: torch.Tensor, y: torch.Tensor, loss_fn,
                  seen: Draws, weighted, chosen, o: AuthorsOptions,
                  generator: torch.Generator) -> torch.Tensor:
    """The step's gradient (attacker.py 244-251): grafted (EM) or a fresh draw's; with D, taken
    at a randomly rescaled input and pulled back through the rescale."""
    x_in = x_adv.detach().requires_grad_(o.input_diversity)
    x_at = rescale_randomly(x_in, generator) if o.input_diversity else x_in
    if o.em:
        grad = grafted_gradient(model, x_at.detach(), seen, weighted, chosen, o.stride,
                                o.deviation)
    else:
        grad = fresh_gradient(model, x_at.detach(), y, loss_fn, o.stride, o.deviation,
                              generator)
    if o.input_diversity:
        (grad,) = torch.autograd.grad(x_at, x_in, grad)
    return grad


def authors_run(model: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor, loss: str,
                index: torch.Tensor, history: AuthorsHistory, o: AuthorsOptions,
                generator: torch.Generator) -> torch.Tensor:
    """One restart on one batch (attacker.py 172-212, ``perturb``); returns its x_adv_best."""
    loss_fn = AUTHORS_LOSSES[loss]
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    x_adv = (x + o.eps * (2 * u - 1)).clamp(0, 1)
    best = x_adv.clone()
    seen = evaluate_draws(model, x, y, loss_fn, o.draws)
    losses, failed = [seen.losses], [seen.failed]
    weighted, chosen = em_gradient(seen.grads, seen.losses, o.eps, o.norm, o.n_select)
    stepper = Stepper(x, o.eps, o.norm, o.steps, o.optimizer, x_adv.clone(), o.pgd_step,
                      o.momentum, o.smooth_gradient)
    previous = None
    for it in range(o.steps):
        if bool(failed[-1].all()):
            break                                           # early stop: every draw fails
        grad = step_gradient(model, x_adv, y, loss_fn, seen, weighted, chosen, o, generator)
        if o.em and previous is not None:
            v = (it + 1) ** -EM_ALPHA
            grad = v * grad + (1 - v) * previous
        x_adv = stepper.svre_step(model, x_adv, y, loss_fn, seen, grad) \
            if o.optimizer == "svre" else stepper.update(x_adv, grad, it)
        seen = evaluate_draws(model, x_adv, y, loss_fn, o.draws)
        losses.append(seen.losses)
        failed.append(seen.failed)
        kept = history.update(index, torch.stack(losses), torch.stack(failed))
        best[kept] = x_adv[kept]
        weighted, chosen = em_gradient(seen.grads, seen.losses, o.eps, o.norm, o.n_select)
        previous = grad
        if stepper.checkpoint(it, torch.stack(losses).max(1).values):
            x_adv = best.clone()
    history.update(index, torch.stack(losses), torch.stack(failed))
    return best


def diffhammer_authors(model: PurifiedClassifier, x: torch.Tensor, y: torch.Tensor, *,
                       eps: float, restarts: int = 3, generator: torch.Generator | None = None,
                       progress: bool = False, **options) -> tuple[torch.Tensor, AuthorsHistory]:
    """DiffHammer as the authors' code runs it (the module doc); ``options``: the fields of
    ``AuthorsOptions`` (norm, steps, draws, n_select, stride, optimizer, em, deviation,
    pgd_step, momentum, input_diversity, smooth_gradient). Returns the kept images and the
    upstream N-evaluation log (``AuthorsHistory``). ``em=False, deviation=True`` is their
    DiffAttack (``DIFF_ATTACK True``, ``EM False``); ``optimizer`` vmi and svre turn EM on, as
    the code's ``auto_setter`` does."""
    o = AuthorsOptions(eps=eps, **options)
    y, eps = check_attack_inputs(x, y, model=model, norm=o.norm, eps=eps)
    if o.optimizer not in AUTHORS_OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {' | '.join(AUTHORS_OPTIMIZERS)}, found "
                         f"{o.optimizer!r}")
    if o.optimizer in ("vmi", "svre") and not o.em:
        o = replace(o, em=True)
    if not isinstance(model, PurifiedClassifier) or model.gradient not in SOLVER_GRADIENTS:
        raise ValueError("variant 'authors-code': expected a purified classifier under a solver "
                         "gradient (exact, checkpoint); the grafted backward replays its "
                         "purifier")
    if o.deviation and not runs_a_chain(model.purifier):
        raise ValueError("diffattack variant 'authors-code': its deviation term is defined on "
                         "a diffusion chain (diffpure, gdmp), which this purifier does not run")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    history = AuthorsHistory.empty(x.shape[0], x.device)
    x_adv = x.clone()
    for restart in steps_bar(range(restarts), progress, "DiffHammer (authors' code)"):
        index = torch.arange(x.shape[0], device=x.device) if restart == 0 else \
            (history.mean_failed <= RESTART_THRESHOLD).nonzero()[:, 0]
        if len(index) == 0:
            break
        x_adv[index] = authors_run(model, x[index], y[index],
                                   LOSS_CYCLE[restart % len(LOSS_CYCLE)], index, history, o,
                                   generator)
    return x_adv.detach(), history
