"""Heterogeneous-noise purification (Pei et al., "Divide and Conquer: Heterogeneous Noise
Integration for Diffusion-based Adversarial Purification"): strong noise where the classifier
looks, weak noise elsewhere, and an inpainting-style two-stage reverse process."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, PositiveInt, model_validator
from torch import nn

from .._checks import check_images
from ..attention import DEFAULT_TAU, MASK_CONVENTIONS, NORMALISATIONS, attention_mask
from ..diffusion import (
    DiscreteSchedule,
    EpsModel,
    NoiseSource,
    add_noise,
    as_noise_source,
)
from ..diffusion.ddpm import DDPM_VARIANCES, check_variance, ddim_step, ddpm_step
from ..diffusion.samplers import Callback, Step, run_steps
from .base import (Models, PurifierSettings, check_models, from_centered, module_settings,
                   to_centered)

RESAMPLINGS = ("single", "repaint", "none")
RESAMPLE_STAGES = ("stage1", "all")
VARIANTS = ("paper", "authors-code")
AUTHORS_CODE_UNUSED = {"resampling", "resample_stage", "ddpm_variance", "clip_denoised"}
HETERO_PRESETS: dict[str, dict] = {   # fill the options not given
    "paper": {},                      # Algorithm 1 and §5.1: t_s 0.05, τ 0.8, U 10
    # GaozhengPei/Purification at its first commit afa372c (README, main.py defaults):
    # --strength_a 0.2 --strength_b 0.1 --threshold 0.85 --defense_ddim_steps 200
    # --forward_noise_steps 10
    "code-afa372c": {"variant": "authors-code", "t_large": 0.2, "t_small": 0.1, "tau": 0.85,
                     "dt": 5e-3, "resample_jumps": 10},
    # ... at fbb99ce (HEAD, scripts/cifar10.sh): --strength_l 0.2 --strength_s 0.1
    # --threshold 0.9 --defense_ddim_steps 500 --forward_noise_steps 3
    "code-fbb99ce": {"variant": "authors-code", "t_large": 0.2, "t_small": 0.1, "tau": 0.9,
                     "dt": 2e-3, "resample_jumps": 3},
}


class HeteroSettings(PurifierSettings):
    """The heterogeneous-noise purifier's options (Pei et al.: t_l = 0.2, t_s = 0.05, τ = 0.8,
    single-step resampling with U = 10)."""

    name: Literal["hetero"] = "hetero"
    preset: Literal[tuple(HETERO_PRESETS)] = Field("paper", description="paper | code-afa372c "
                                                   "(the authors' first commit: τ 0.85, 200 "
                                                   "levels, U 10) | code-fbb99ce (their HEAD: "
                                                   "τ 0.9, 500 levels, U 3); fills the "
                                                   "options not given")
    t_large: float = Field(0.2, gt=0.0, le=1.0, description="t_l, the noise inside the "
                           "attention mask")
    t_small: float = Field(0.05, gt=0.0, le=1.0, description="t_s, the noise outside it")
    tau: float = Field(DEFAULT_TAU, ge=0.0, lt=1.0, description="mask threshold τ on the "
                       "normalised attention maps")
    mask_top: float | None = Field(None, gt=0.0, lt=1.0, description="mask the fraction of "
                                   "most-attended pixels instead of thresholding at τ (the "
                                   "authors' ImageNet setting: 0.15)")
    mask_blocks: tuple[str, ...] | None = Field(None, description="classifier module names "
                                                "whose outputs make the mask (None: the "
                                                "architecture's blocks)")
    mask_normalisation: Literal[NORMALISATIONS] = Field("minmax", description="minmax (the "
                                                        "authors' code) | softmax (the paper's "
                                                        "φ; empty masks at τ = 0.8)")
    mask_convention: Literal[MASK_CONVENTIONS] | None = Field(
        None, description="paper ([0, 1] image, G with the root, > τ, ⌈q·H·W⌉) | "
        "authors-code (data_normalize(2x − 1), Σ A² without the root, ≥ τ, int(q·H·W)); "
        "None: the variant's")
    resampling: Literal[RESAMPLINGS] = Field("single", description="single (Eq. 11) | repaint "
                                             "(U-step) | none")
    resample_jumps: PositiveInt = Field(10, description="U of the resampling")
    resample_stage: Literal[RESAMPLE_STAGES] = Field("stage1", description="resample in stage1 "
                                                     "| at all steps")
    variant: Literal[VARIANTS] = Field("paper", description="paper (Algorithm 1: DDPM steps, "
                                       "single-step resampling) | authors-code (stage 1: "
                                       "impose the known region, U one-level forward steps, "
                                       "one DDIM jump back; stage 2: DDIM, η = 0)")
    ddpm_variance: Literal[DDPM_VARIANCES] = Field("posterior", description="the DDPM steps' "
                                                   "variance, posterior β̃ | beta β | learned "
                                                   "(the model's)")
    clip_denoised: bool = Field(False, description="clip x̂0 to [−1, 1] in the DDPM steps' "
                                "posterior mean (guided-diffusion's clip_denoised)")

    continuous_time = False

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data):
        if isinstance(data, dict) and data.get("preset") in HETERO_PRESETS:
            given = {k: v for k, v in data.items() if v is not None}
            filled = {k: v for k, v in HETERO_PRESETS[data["preset"]].items()
                      if not (k == "tau" and given.get("mask_top") is not None)}
            data = filled | given
        return data

    @property
    def mask_rule(self) -> str:
        """The mask convention in force: the one given, else the variant's."""
        if self.mask_convention is not None:
            return self.mask_convention
        return "authors-code" if self.variant == "authors-code" else "paper"

    @model_validator(mode="after")
    def _top_or_tau(self):
        if "tau" in self.model_fields_set and self.mask_top is not None:
            raise ValueError(f"expected a threshold tau or a fraction mask_top, found both "
                             f"(tau={self.tau}, mask_top={self.mask_top})")
        return self

    span_name = "t_l"

    def time_span(self) -> float | None:
        return self.t_large

    @model_validator(mode="after")
    def _times_ordered(self):
        if not self.t_small <= self.t_large:
            raise ValueError(f"HeteroPure: expected 0 < t_small <= t_large <= 1, found t_small="
                             f"{self.t_small}, t_large={self.t_large}")
        return self

    def unused_options(self) -> set[str]:
        unused = {"tau"} if self.mask_top is not None else set()
        return unused | (AUTHORS_CODE_UNUSED if self.variant == "authors-code" else set())

    @model_validator(mode="after")
    def _variant_options(self):
        given = sorted(self.model_fields_set & AUTHORS_CODE_UNUSED)
        if self.variant == "authors-code" and given:
            raise ValueError(f"{', '.join(given)}: options of the paper's algorithm; the "
                             "authors'-code variant takes DDIM steps and U forward steps "
                             "(resample_jumps)")
        return self

    def describe_options(self) -> list[str]:
        region = f"τ={self.tau:g}" if self.mask_top is None else f"top {self.mask_top:.0%}"
        parts = [f"t_l={self.t_large:g}", f"t_s={self.t_small:g}", region, f"dt={self.dt:g}"]
        changed = self.changed()
        if "mask_convention" in changed:
            parts.append(f"mask={self.mask_convention}")
        if self.variant == "authors-code":
            preset = f" ({self.preset})" if self.preset != "paper" else ""
            return parts + [f"authors' code{preset}, U={self.resample_jumps}"]
        if self.resampling == "none":
            parts.append("no resampling")
        elif "resampling" in changed or "resample_jumps" in changed:
            parts.append(f"resampling={self.resampling}, U={self.resample_jumps}")
        shown = {"resample_stage": "resample", "mask_normalisation": "mask",
                 "ddpm_variance": "variance", "clip_denoised": "clip x̂0"}
        parts += [f"{shown[k]}={v}" for k, v in changed.items() if k in shown]
        if self.mask_blocks is not None:
            parts.append(f"blocks={','.join(self.mask_blocks)}")
        return parts

    def build(self, models: Models) -> HeteroPure:
        return HeteroPure(models.eps, models.classifier, self)


class HeteroPure(nn.Module):
    """Purify [0, 1] images with noise of two strengths (Pei et al., Algorithms 1–2).

    - Mask M = ∪_m 𝟙[AM_m > τ] from the *defended* classifier's block activations on the input
      (``advpure.attention``; a constant in backward).
    - Heterogeneous forward (Eq. 5): x = M⊙x(t_l) + (1 − M)⊙x(t_s), both from the same ε (Eq. 1).
    - Stage 1, t_s < t ≤ t_l, DDPM steps n → p: the known region (outside M) is the input
      re-noised to level p with fresh noise (Eq. 6), the unknown region (inside M) the model's
      ancestral step (Eq. 7), x_p = (1 − M)⊙known + M⊙unknown (Eq. 8 with M and 1 − M in the
      roles Eq. 5 and the text give them; the paper's rendering swaps them).
    - Stage 2, t ≤ t_s: plain DDPM steps (Eq. 9).
    - Resampling in stage 1 (``resample_stage="all"``: at every step, as Algorithm 1 is drawn):
      ``"single"`` (Eq. 11, default): diffuse x_p forward U levels and take one DDIM (η = 0)
      step back — one extra network call whatever U is; ``"repaint"``: RePaint's U-fold
      repetition of the step with a one-step re-noising in between (U network calls);
      ``"none"``. After a resampling the known region is imposed again, so it always equals
      the re-noised input.

    Time is the discrete DDPM schedule (levels round(1000·t)); ``dt`` respaces both stages.

    **Stage boundary.** Algorithm 1 counts the step out of level t_s as stage 1, so its last
    imposition of the known region is at level t_s − 1; here stage 1 is the steps that *land*
    on a level ≥ t_s (the last imposition is at t_s, as in the authors' code, whose stage 1 is
    the steps with target ≥ t_s). Imposing once more below t_s would put the input back,
    re-noised, at a level under the weak noise t_s — one level in the paper, but one respaced
    grid step (dt·1000 levels) here — so the pixels outside the mask are never noised less
    than t_s.

    **Variants.** ``variant="paper"`` (default) is the above. ``"authors-code"`` is what the
    authors' released code runs (github.com/GaozhengPei/Purification, ``purification.py``):
    no DDPM step in stage 1 (impose the known region at the current level, U one-level forward
    steps, one DDIM η = 0 jump back to the next grid level) and DDIM η = 0 in stage 2, on the
    code's levels: its timestep index i is our level i + 1, so it runs levels 1000·t_l + 1 down
    to 1 and its last DDIM step ends at ᾱ = 0.9999 (the whole image is first noised to the top
    level; the first step imposes the known region); a score_sde network gets the index as its
    label (``ScoreSDEEps.index_labelled``) and the mask follows the code (``mask_convention``).
    Its defaults differ from the paper's text and between its commits (``preset``
    ``code-afa372c``: t_s = 0.1, τ = 0.85, 200 DDIM levels, U = 10; ``code-fbb99ce``: τ = 0.9,
    500 levels, U = 3; both: 10 levels for the attack's surrogate, a majority vote over 20 runs,
    the top 15 % of pixels on ImageNet); the paper does not say which its tables used.
    Options: ``settings`` (a ``HeteroSettings``) or its fields as keywords; the mask comes from
    ``classifier``.
    """

    def __init__(self, model: EpsModel, classifier: nn.Module,
                 settings: HeteroSettings | None = None, *,
                 schedule: DiscreteSchedule | None = None, **options):
        super().__init__()
        s = self.settings = module_settings(HeteroSettings, settings, options)
        self.t_large, self.t_small = s.t_large, s.t_small              # t_l, t_s
        self.tau = s.tau                                                # τ
        self.dt = s.dt                                                  # 1e-3: every level
        self.schedule = schedule if schedule is not None else DiscreteSchedule()
        if not isinstance(self.schedule, DiscreteSchedule):
            raise ValueError("HeteroPure: expected a DiscreteSchedule (DDPM steps), found "
                             f"{type(self.schedule).__name__}")
        self.mask_blocks = s.mask_blocks
        self.mask_top = s.mask_top                                      # None: threshold τ
        self.mask_normalisation = s.mask_normalisation
        self.mask_convention = s.mask_rule                              # paper | authors-code
        self.resampling = s.resampling
        self.resample_jumps = s.resample_jumps                          # U
        self.resample_stage = s.resample_stage
        self.variant = s.variant                                        # paper | authors-code
        self.ddpm_variance = check_variance(model, s.ddpm_variance)
        self.clip_denoised = s.clip_denoised
        check_models(type(self).__name__, model, classifier)
        if s.variant == "authors-code" and hasattr(model, "index_labelled"):
            model = model.index_labelled()  # score_sde given the index, as the code does
        self.model = model                  # eps(x_t, t), x_t in [−1, 1]
        self.classifier = classifier        # the defended classifier: [0, 1] images -> logits

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """The attention mask of ``x`` (N × 1 × H × W, 0/1), Eq. 4."""
        return attention_mask(self.classifier, x, self.tau, self.mask_blocks,
                              normalisation=self.mask_normalisation, top=self.mask_top,
                              convention=self.mask_convention)

    def forward(self, x: torch.Tensor, noise: NoiseSource | torch.Generator,
                gradient: str = "exact", callback: Callback | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Purify ``x`` (N×C×H×W in [0, 1]); ``gradient``: exact | checkpoint. ``mask``
        replaces the attention mask (tests, ablations); ``callback(i, t, x_t)`` after each step."""
        check_images(x)
        noise = as_noise_source(noise, x)
        mask = self.mask(x) if mask is None else mask.to(x)
        x0 = to_centered(x)
        stage1, stage2 = self.stage_grids()
        if self.variant == "authors-code":
            stage1, stage2 = (None if g is None else g + 1.0 / self.schedule.levels
                              for g in (stage1, stage2))
            start = (stage1 if stage1 is not None else stage2)[0]
            x_t = add_noise(x0, start, noise.randn_like(x0), self.schedule)
            x_t = authors_code_stages(self.model, self.schedule, x_t, stage1, stage2, noise,
                                      self.resample_jumps, gradient, callback, (x0, mask))
            return from_centered(x_t)
        x_t = self.heterogeneous_forward(x0, mask, noise.randn_like(x))
        whole = torch.cat([g for g in (stage1, stage2) if g is not None])
        if stage1 is not None:
            step, draws = self.stage_step(inpaint=True, grid=whole)
            x_t = run_steps(step, x_t, stage1, MultiDraw(noise, draws), gradient=gradient,
                            callback=callback, context=(x0, mask))
        if stage2 is not None:
            step, draws = self.stage_step(inpaint=False, grid=whole)
            offset = 0 if stage1 is None else len(stage1) - 1
            x_t = run_steps(step, x_t, stage2, MultiDraw(noise, draws), gradient=gradient,
                            callback=_shifted(callback, offset))
        return from_centered(x_t)

    def stage_grids(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The times of stage 1 (t_l down to t_s) and stage 2 (t_s down to 0), respaced by dt;
        None for a stage without a step."""
        levels = self.schedule
        stage1 = levels.grid(self.t_large, self.t_small, self.dt) \
            if levels.level(self.t_large) > levels.level(self.t_small) else None
        stage2 = levels.grid(self.t_small, 0.0, self.dt) if levels.level(self.t_small) > 0 \
            else None
        return stage1, stage2

    def heterogeneous_forward(self, x0: torch.Tensor, mask: torch.Tensor,
                              eps: torch.Tensor) -> torch.Tensor:
        """x(t_l, t_s) = M⊙x(t_l) + (1 − M)⊙x(t_s), one ε for both (Eqs. 1 and 5)."""
        strong = add_noise(x0, self.schedule.snap(self.t_large), eps, self.schedule)
        weak = add_noise(x0, self.schedule.snap(self.t_small), eps, self.schedule)
        return mask * strong + (1.0 - mask) * weak

    def stage_step(self, inpaint: bool, grid: torch.Tensor | None = None) -> tuple[Step, int]:
        """The step of stage 1 (``inpaint``) or stage 2 with its resampling, and how many noise
        draws it takes (they arrive stacked in z); ``grid``: the whole time grid (the learned
        variance's last step looks one step up)."""
        once, draws = _denoise_step(ddpm_step(self.model, self.schedule, self.ddpm_variance,
                                              clip_denoised=self.clip_denoised, grid=grid),
                                    self.schedule, inpaint)
        resample = self.resampling if inpaint or self.resample_stage == "all" else "none"
        if resample == "none":
            return once, draws
        if resample == "repaint":
            return _repaint_step(once, draws, self.schedule, self.resample_jumps)
        return _single_resample_step(once, draws, self.model, self.schedule,
                                     self.resample_jumps, inpaint)

    def extra_repr(self) -> str:
        return (f"t_large={self.t_large}, t_small={self.t_small}, tau={self.tau}, dt={self.dt}, "
                f"resampling={self.resampling}, U={self.resample_jumps}")


def authors_code_stages(model: EpsModel, schedule: DiscreteSchedule, x_t: torch.Tensor,
                        stage1: torch.Tensor | None, stage2: torch.Tensor | None,
                        noise: NoiseSource, jumps: int, gradient: str,
                        callback: Callback | None, context: tuple[torch.Tensor, ...]
                        ) -> torch.Tensor:
    """The two stages as the authors' code runs them (``variant="authors-code"``)."""
    if stage1 is not None:
        x_t = run_steps(_authors_stage1_step(model, schedule, jumps), x_t, stage1,
                        MultiDraw(noise, 2 + jumps), gradient=gradient, callback=callback,
                        context=context)
    if stage2 is not None:
        offset = 0 if stage1 is None else len(stage1) - 1
        back = ddim_step(model, schedule, eta=0.0)
        x_t = run_steps(lambda x, t, t_next, z: back(x, t, t_next, torch.zeros_like(x)), x_t,
                        stage2, noise, gradient=gradient, callback=_shifted(callback, offset))
    return x_t


def _authors_stage1_step(model: EpsModel, schedule: DiscreteSchedule, jumps: int) -> Step:
    """Stage 1 of the authors' code, n → p: impose the known region at level n (fresh ε, z[0]),
    diffuse U single levels forward (x_{k+1} = √α_{k+1} x_k + √(1 − α_{k+1}) z[i]) and jump
    back to p with one DDIM step, η = 0; no DDPM step. z[U + 1] is the code's DDIM draw, which
    η = 0 multiplies by zero: drawn so that a step takes the code's noise in the code's order."""
    back = ddim_step(model, schedule, eta=0.0)
    level = 1.0 / schedule.levels

    def step(x: torch.Tensor, t: float, t_next: float, z: torch.Tensor,
             *context: torch.Tensor) -> torch.Tensor:
        x0, mask = context
        x = _inpaint(x, known_region(x0, t, z[0], schedule), mask)
        for i in range(jumps):
            here = min(t + i * level, 1.0 - level)
            x = renoise(x, here, here + level, z[1 + i], schedule)
        far = min(t + jumps * level, 1.0)
        return back(x, far, t_next, torch.zeros_like(x))
    return step


class MultiDraw:
    """A noise source giving ``k`` draws of ``noise`` per call, stacked on a new first axis:
    one step of the heterogeneous process needs several, and the gradient modes save and
    replay the step's noise as one tensor. Each image's draws still come from its own source."""

    def __init__(self, noise: NoiseSource, k: int):
        self.noise, self.k = noise, k

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.noise.randn_like(x) for _ in range(self.k)])


def known_region(x0: torch.Tensor, t: float, eps: torch.Tensor,
                 schedule: DiscreteSchedule) -> torch.Tensor:
    """x(t)^known = √ᾱ(t) x_adv + √(1 − ᾱ(t)) ε, fresh ε at every step (Eq. 6)."""
    return add_noise(x0, torch.tensor(t, dtype=torch.float64), eps, schedule)


def renoise(x: torch.Tensor, t: float, t_to: float, eps: torch.Tensor,
            schedule: DiscreteSchedule) -> torch.Tensor:
    """Diffuse x from level t up to t_to ≥ t: √(ᾱ_to/ᾱ_t) x + √(1 − ᾱ_to/ᾱ_t) ε (Eq. 10)."""
    ratio = float(schedule.alpha_bar(t_to)) / float(schedule.alpha_bar(t))
    return ratio ** 0.5 * x + (1.0 - ratio) ** 0.5 * eps


def _denoise_step(ancestral: Step, schedule: DiscreteSchedule, inpaint: bool
                  ) -> tuple[Step, int]:
    """One DDPM step n → p (Eq. 9, ``ancestral``); with ``inpaint`` the known region is then put
    back (Eqs. 6–8). Draws: z[0] the DDPM noise, z[1] the known region's ε."""

    def step(x: torch.Tensor, t: float, t_next: float, z: torch.Tensor,
             *context: torch.Tensor) -> torch.Tensor:
        x_next = ancestral(x, t, t_next, z[0])                                # Eqs. 7, 9
        if not inpaint:
            return x_next
        x0, mask = context
        return _inpaint(x_next, known_region(x0, t_next, z[1], schedule), mask)   # Eq. 8
    return step, 2 if inpaint else 1


def _inpaint(unknown: torch.Tensor, known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x = (1 − M)⊙known + M⊙unknown (Eq. 8, roles as in Eq. 5)."""
    return mask * unknown + (1.0 - mask) * known


def _repaint_step(once: Step, draws: int, schedule: DiscreteSchedule, jumps: int) -> tuple[Step, int]:
    """RePaint's resampling (Lugmayr et al. 2022, Algorithm 1): the step n → p is taken U times,
    re-noising x_p to level n (Eq. 10) between repetitions. U network calls per step."""
    def step(x: torch.Tensor, t: float, t_next: float, z: torch.Tensor,
             *context: torch.Tensor) -> torch.Tensor:
        for u in range(jumps):
            x_next = once(x, t, t_next, z[u * draws:(u + 1) * draws], *context)
            if u < jumps - 1:
                x = renoise(x_next, t_next, t, z[jumps * draws + u], schedule)
        return x_next
    return step, jumps * draws + jumps - 1


def _single_resample_step(once: Step, draws: int, model: EpsModel, schedule: DiscreteSchedule,
                          jumps: int, inpaint: bool) -> tuple[Step, int]:
    """The paper's single-step resampling (Eq. 11, α_{t−1+u}): after the step n → p, diffuse
    x_p forward U *levels* (to level p + U, at most N) whatever the grid's spacing, as the
    authors' code does, and come back with one DDIM step, η = 0. One extra network call per
    step. In stage 1 the known region is imposed again."""
    back = ddim_step(model, schedule, eta=0.0)

    def step(x: torch.Tensor, t: float, t_next: float, z: torch.Tensor,
             *context: torch.Tensor) -> torch.Tensor:
        x_next = once(x, t, t_next, z[:draws], *context)
        far = min(t_next + jumps / schedule.levels, 1.0)
        x_far = renoise(x_next, t_next, far, z[draws], schedule)               # Eq. 10, U steps
        x_back = back(x_far, far, t_next, torch.zeros_like(x))                 # Eq. 11, η = 0
        if not inpaint:
            return x_back
        x0, mask = context
        return _inpaint(x_back, known_region(x0, t_next, z[1], schedule), mask)
    return step, draws + 1


def _shifted(callback: Callback | None, offset: int) -> Callback | None:
    if callback is None:
        return None
    return lambda i, t, x: callback(i + offset, t, x)

