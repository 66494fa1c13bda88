"""``advpure bench precision``: how far a bf16 (or fp16) attack gradient is from fp32's.

For every registered purifier at its digits defaults with ``dt = 1e-2`` (GDMP's a = 100), the
gradient of the cross-entropy through purifier and classifier on the same images with the same
noise, in fp32 and under autocast: the cosine between the two gradients, the fraction of pixels
where their signs agree (what an ℓ∞ step uses; also weighted by |∇| in fp32, since pixels with
gradients near 1e-10 flip sign on rounding alone), and the time of each (on a CPU informative
only: bf16 matrix products are not faster there).
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

PURIFIERS = {"diffpure": {}, "coup": {}, "agdm": {}, "hetero": {}, "gdmp": {"guidance_scale": 100}}


def gradient(name: str, options: dict, precision: str, x, y) -> tuple[torch.Tensor, float]:
    from ..evaluation import DefenseConfig
    from ..evaluation.experiment import Defense
    from ..models import load_classifier

    classifier = load_classifier("builtin:digits-cnn")
    cfg = DefenseConfig(name=name, dt=0.01, precision=precision, **options)
    defended = Defense.build(cfg, classifier).model(classifier, torch.Generator().manual_seed(0))
    xi = x.clone().requires_grad_(True)
    start = time.perf_counter()
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(defended(xi), y), xi)
    return grad, time.perf_counter() - start


def run(out_dir: Path, precision: str = "bf16", n: int = 16, repeats: int = 2) -> str:
    from .. import data

    x, y = data.load("digits", "test", indices=torch.arange(n))
    rows = []
    for name, options in PURIFIERS.items():
        runs = {p: [gradient(name, options, p, x, y) for _ in range(repeats)]
                for p in ("fp32", precision)}
        ref, low = runs["fp32"][0][0].flatten(), runs[precision][0][0].flatten()
        rows.append({"purifier": name, "precision": precision,
                     "cosine": float(torch.nn.functional.cosine_similarity(ref, low, dim=0)),
                     "sign_agreement": float((ref.sign() == low.sign()).float().mean()),
                     "weighted_sign_agreement": float((ref.abs() * (ref.sign() == low.sign()))
                                                      .sum() / ref.abs().sum()),
                     "fp32_seconds": statistics.median(t for _, t in runs["fp32"]),
                     "low_seconds": statistics.median(t for _, t in runs[precision])})
    lines = [f"# {precision} against fp32: one attack gradient on {n} digits", "",
             f"| purifier | cosine | sign agreement | ∇-weighted | fp32 s | {precision} s | "
             f"{precision} / fp32 time |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['purifier']} | {r['cosine']:.4f} | {100 * r['sign_agreement']:.1f} % | "
              f"{100 * r['weighted_sign_agreement']:.2f} % | "
              f"{r['fp32_seconds']:.2f} | {r['low_seconds']:.2f} | "
              f"{r['low_seconds'] / r['fp32_seconds']:.2f} |" for r in rows]
    text = "\n".join(lines) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "precision.md").write_text(text)
    (out_dir / "precision.json").write_text(json.dumps(rows, indent=2) + "\n")
    return text
