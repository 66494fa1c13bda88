"""Mixed precision, ``torch.compile`` and channels-last for the networks of a defense.

Only the network calls change: the eps-model and the classifier run under ``torch.autocast``
(bf16 or fp16 matrix products and convolutions) and hand back outputs in the caller's dtype, so
the sampler's state, the noise and the time arithmetic stay in float32 (float64 where they are).
Autocast is not faster everywhere (a CPU without bf16 units emulates it: issue 33 measured an
attack gradient 25× slower): its first call times the network both ways and warns once where
fp32 is the faster, keeping the precision asked for. ``torch.compile`` is tried on the first
call and, where it fails, the network runs eagerly with one warning saying why.
"""
from __future__ import annotations

import time
import warnings
from contextlib import nullcontext

import torch
from torch import nn

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
GRAD_SCALE = {torch.bfloat16: 1.0, torch.float16: 2.0 ** 12}   # fp16: keep gradients off zero
SLOWER = 1.1            # autocast at this multiple of fp32's time or more: say so


class ScaledGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``scale``. Around an fp16 network
    (×S where the gradient enters it, ×1/S where it leaves) it keeps the backward pass's small
    values above fp16's underflow, as a loss scaler does in training — the gradient is
    unchanged up to rounding."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def _cast_back(out, dtype: torch.dtype):
    if isinstance(out, tuple):
        return tuple(_cast_back(o, dtype) for o in out)
    return out.to(dtype) if torch.is_tensor(out) and out.is_floating_point() else out


class Autocast(nn.Module):
    """``model`` under ``torch.autocast(dtype)``, its outputs cast back to the input's dtype.
    Attributes the sampler reads (``learned_variance``) pass through; ``eps_and_variance`` is
    autocast too. In fp16 the gradient is scaled by 2¹² through the network (``ScaledGradient``):
    without it most of an attack gradient's pixels underflow to zero.

    The first call times calls in fp32 and under autocast (``speed``: the faster of two each,
    after a warm-up; forward and input gradient where the call builds a graph, as an attack's) and warns once where autocast is ``SLOWER`` or more, naming
    fp32 as the faster choice; the precision stays as asked. A compiled network is not timed
    (each variant would compile anew)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype
        self.speed: dict[str, float] | None = None    # seconds per call, fp32 and autocast

    def _run(self, fn, x: torch.Tensor, *args):
        if self.speed is None and not isinstance(self.model, Compiled):
            self.speed = self.time_both(fn, x, *args)
        scale = GRAD_SCALE[self.dtype]
        if scale != 1.0 and torch.is_grad_enabled():
            x = ScaledGradient.apply(x, 1.0 / scale)
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            out = fn(x, *args)
        out = _cast_back(out, x.dtype)
        if scale != 1.0 and torch.is_grad_enabled():
            out = tuple(ScaledGradient.apply(o, scale) for o in out) if isinstance(out, tuple) \
                else ScaledGradient.apply(out, scale)
        return out

    def time_both(self, fn, x: torch.Tensor, *args) -> dict[str, float]:
        """{"fp32": s, precision: s} per call; warns where autocast is the slower."""
        name = next(k for k, v in PRECISIONS.items() if v == self.dtype)
        with_gradient = torch.is_grad_enabled() and x.is_floating_point()

        def seconds(cast: bool) -> float:
            def call():
                xi = x.detach().requires_grad_(with_gradient)
                with torch.set_grad_enabled(with_gradient), \
                        torch.autocast(x.device.type, self.dtype) if cast else nullcontext():
                    out = fn(xi, *args)
                out = out[0] if isinstance(out, tuple) else out
                if with_gradient and out.requires_grad:
                    torch.autograd.grad(out.float().sum(), xi, allow_unused=True)
            call()                                              # warm-up
            return min(_timed(call, x) for _ in range(2))
        speed = {"fp32": seconds(False), name: seconds(True)}
        if speed[name] >= SLOWER * speed["fp32"]:
            warnings.warn(
                f"precision {name}: {type(self.model).__name__} runs "
                f"{speed[name] / speed['fp32']:.1f}× slower under autocast than in fp32 on this "
                f"{x.device.type} ({1e3 * speed[name]:.1f} ms against {1e3 * speed['fp32']:.1f} "
                f"ms per call, timed on its first call); precision fp32 is the faster choice "
                f"here. Keeping {name} as asked.", stacklevel=3)
        return speed

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        return self._run(self.model, x, *args)

    def eps_and_variance(self, x: torch.Tensor, t: torch.Tensor):
        return self._run(self.model.eps_and_variance, x, t)

    @property
    def learned_variance(self) -> bool:
        return getattr(self.model, "learned_variance", False)

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}"


class Compiled(nn.Module):
    """``torch.compile(model)``, falling back to ``model`` itself (with one warning) when
    compiling or running the compiled graph fails; ``channels_last`` converts the weights and
    the inputs to the channels-last memory format first (convolutions on GPUs)."""

    def __init__(self, model: nn.Module, channels_last: bool = False):
        super().__init__()
        self.model, self.channels_last = model, channels_last
        if channels_last:
            model.to(memory_format=torch.channels_last)
        self.__dict__["_compiled"] = None      # not a submodule: the same weights
        self.fallback: str | None = None       # why compilation was given up, if it was

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.fallback is None:
            try:
                if self._compiled is None:
                    self.__dict__["_compiled"] = torch.compile(self.model)
                return self._compiled(x, *args)
            except Exception as err:               # any backend failure: run eagerly
                self.fallback = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                warnings.warn(f"torch.compile of {type(self.model).__name__} failed "
                              f"({self.fallback}); running it eagerly (compile=False runs "
                              "eagerly without the attempt)", stacklevel=2)
        return self.model(x, *args)

    @property
    def learned_variance(self) -> bool:
        return getattr(self.model, "learned_variance", False)

    def eps_and_variance(self, x: torch.Tensor, t: torch.Tensor):
        return self.model.eps_and_variance(x, t)


def _timed(fn, x: torch.Tensor) -> float:
    """Seconds of ``fn()`` (CUDA: synchronised on ``x``'s device)."""
    cuda = x.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(x.device)
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize(x.device)
    return time.perf_counter() - start


def accelerated(model: nn.Module, precision: str = "fp32", compile: bool = False,
                channels_last: bool = False) -> nn.Module:
    """``model`` compiled and/or under autocast as asked (``model`` itself for the defaults)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, found "
                         f"{precision!r}")
    if compile or channels_last:
        model = Compiled(model, channels_last) if compile else \
            model.to(memory_format=torch.channels_last)
    if PRECISIONS[precision] is not None:
        model = Autocast(model, PRECISIONS[precision])
    return model
