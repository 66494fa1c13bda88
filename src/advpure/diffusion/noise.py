"""Noise sources: randomness is passed in, never global (DESIGN.md §2).

A sampler asks its noise source for one standard-normal draw shaped like the state at each
step. ``PerSampleNoise`` keeps one ``torch.Generator`` per sample (as EDM does), so an image's
noise depends only on its own seed and never on how the batch was split. ``FixedNoise``
replays pre-drawn tensors, which tests and gradient recomputation use. ``BatchNoise`` is one
generator for a whole batch of independent simulation runs.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

_SEED_HIGH = 2**62


class NoiseSource(Protocol):
    """Returns a fresh standard-normal tensor shaped like ``x`` on every call."""

    def randn_like(self, x: torch.Tensor) -> torch.Tensor: ...


class PerSampleNoise:
    """One generator per sample; draw k of sample i depends only on sample i's generator."""

    def __init__(self, generators: Sequence[torch.Generator]):
        if len(generators) == 0:
            raise ValueError("PerSampleNoise: expected at least one generator, found none")
        self.generators = list(generators)

    @classmethod
    def from_seeds(cls, seeds: Sequence[int] | torch.Tensor,
                   device: torch.device | str = "cpu") -> PerSampleNoise:
        """One generator per seed, created on ``device``."""
        return cls([torch.Generator(device=device).manual_seed(int(s)) for s in seeds])

    @staticmethod
    def draw_seeds(generator: torch.Generator, n: int) -> list[int]:
        """``n`` per-sample seeds drawn from ``generator`` (advancing it): ``from_seeds`` of
        the same seeds replays the same noise (DiffAttack's two trajectories)."""
        return torch.randint(0, _SEED_HIGH, (n,), generator=generator,
                             device=generator.device).tolist()

    @classmethod
    def spawn(cls, generator: torch.Generator, n: int,
              device: torch.device | str = "cpu") -> PerSampleNoise:
        """Draw ``n`` per-sample seeds from ``generator`` (advancing it) and wrap them."""
        return cls.from_seeds(cls.draw_seeds(generator, n), device=device)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != len(self.generators):
            raise ValueError(f"PerSampleNoise: expected a batch of {len(self.generators)} "
                             f"samples (one per generator), found {x.shape[0]}")
        draws = [torch.randn(x.shape[1:], generator=g, device=g.device, dtype=x.dtype)
                 for g in self.generators]
        return torch.stack(draws).to(x.device)


class BatchNoise:
    """One generator for the whole batch: fast, but a sample's draw depends on the batch.

    For simulations of many independent runs (the COUP toy), not for purifying images.
    """

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, generator=self.generator, dtype=x.dtype,
                           device=self.generator.device).to(x.device)


class FixedNoise:
    """Replays pre-drawn noise tensors in order; raises when they run out."""

    def __init__(self, draws: Sequence[torch.Tensor]):
        self.draws = list(draws)
        self.used = 0

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        if self.used >= len(self.draws):
            raise RuntimeError(f"FixedNoise: all {len(self.draws)} pre-drawn tensors are used")
        draw = self.draws[self.used]
        if draw.shape != x.shape:
            raise ValueError(f"FixedNoise: draw {self.used} has shape {tuple(draw.shape)}, "
                             f"expected {tuple(x.shape)}")
        self.used += 1
        return draw.to(device=x.device, dtype=x.dtype)


def as_noise_source(noise: NoiseSource | torch.Generator, x: torch.Tensor) -> NoiseSource:
    """A ``torch.Generator`` is split into per-sample generators for the batch ``x``."""
    if isinstance(noise, torch.Generator):
        return PerSampleNoise.spawn(noise, x.shape[0], device=x.device)
    if not hasattr(noise, "randn_like"):
        raise TypeError("noise: expected a torch.Generator or a noise source with randn_like(x), "
                        f"found {type(noise).__name__}")
    return noise


def uniform_like(noise: NoiseSource, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """n uniform draws on (0, 1), one per sample, from one standard-normal draw each: u = Φ(z).

    Going through the normal CDF keeps the noise-source protocol to one method and keeps the
    draw per sample (randomized t*, DiffPure App. C.4).
    """
    z = noise.randn_like(torch.empty(n, dtype=torch.float64, device=device))
    return 0.5 * (1.0 + torch.erf(z / 2.0 ** 0.5))
