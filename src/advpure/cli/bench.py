"""``advpure bench``: benchmarks and numerical checks that print and save their figures."""
from __future__ import annotations

from pathlib import Path

import typer

from .app import bench_app
from .options import parse_list


@bench_app.command("gradients")
def bench_gradients(
    out: Path = typer.Option(Path("bench/gradients"), help="directory for the table and plot"),
    workloads: str = typer.Option("digits,unet32", help="digits (batch 64) and/or unet32 (batch 4)"),
    steps: str = typer.Option("10,20,50,100,200", help="numbers of reverse steps N"),
    modes: str = typer.Option("exact,checkpoint,adjoint", help="gradient modes"),
    cap_gb: float = typer.Option(16.0, help="memory cap: above it a mode is 'out of memory'"),
    repeats: int = typer.Option(2, help="timed runs per configuration (after one untimed)"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    budgets: str = typer.Option("", help="checkpoint memory budgets as fractions of exact's "
                                "graphs, e.g. 0.1,0.25,0.5,1 (none: not run)"),
    threads: int = typer.Option(0, min=0, help="torch threads per measurement (0: torch's "
                                "default)"),
    batch: int = typer.Option(0, min=0, help="images per gradient (0: the workload's own)"),
) -> None:
    """Time (÷ exact's) and peak memory of exact, checkpoint and adjoint gradients against N,
    and of checkpoint at memory budgets with the policy each step took."""
    from ..benchmarks import gradients

    names = parse_list(workloads, str)
    unknown = [w for w in names if w not in gradients.WORKLOADS]
    if unknown:
        raise typer.BadParameter(f"expected workloads among {', '.join(gradients.WORKLOADS)}, "
                                 f"found {', '.join(unknown)}")
    report = gradients.run(out, names, parse_list(steps, int), parse_list(modes, str),
                           cap_gb, repeats, device, threads=threads or None,
                           budgets=parse_list(budgets, float) if budgets else (),
                           batch=batch or None)
    typer.echo(report)
    typer.echo(f"wrote {out}/gradients.md, gradients.json, gradients.png")


@bench_app.command("gpu")
def bench_gpu(
    out: Path = typer.Option(Path("bench/gpu"), help="directory for gpu.md and gpu.json"),
    device: str = typer.Option("cuda", help="the CUDA device"),
    repeats: int = typer.Option(2, min=1, help="timed runs per setting (after a warm-up)"),
) -> None:
    """On a CUDA device: purification images/s, one attack gradient (exact, checkpoint, memory
    budgets; fp32 and bf16) for the full-size NCSN++ with a WRN-28-10, the digits and the small
    CIFAR-10 models, EOT-20 batched vs sequential, and the projected DiffPure AutoAttack-rand
    protocol on 512 images."""
    import torch

    if not torch.cuda.is_available():
        typer.echo("advpure bench gpu needs a CUDA device, and torch sees none here "
                   "(torch.cuda.is_available() is False): nothing measured.")
        raise typer.Exit(0)
    from ..benchmarks import gpu

    typer.echo(gpu.run(out, device, repeats=repeats))
    typer.echo(f"wrote {out}/gpu.md, gpu.json")


@bench_app.command("precision")
def bench_precision(
    out: Path = typer.Option(Path("bench/precision"), help="directory for the table"),
    precision: str = typer.Option("bf16", help="bf16 or fp16, against fp32"),
    n: int = typer.Option(16, min=1, help="digits images"),
    repeats: int = typer.Option(2, min=1, help="timed runs per precision"),
) -> None:
    """Every purifier's attack gradient under autocast against fp32: cosine, sign agreement,
    time (on a CPU informative only)."""
    from ..benchmarks import precision as bench

    typer.echo(bench.run(out, precision, n, repeats))
    typer.echo(f"wrote {out}/precision.md, precision.json")


@bench_app.command("analytic")
def bench_analytic(
    out: Path = typer.Option(Path("bench/analytic"), help="directory for the table and plot"),
    t_star: float = typer.Option(0.1, help="diffusion time t*"),
) -> None:
    """DiffPure App. B.5: gradient error against Eq. 31 for each mode and step size."""
    from ..benchmarks import analytic

    typer.echo(analytic.run(out, t_star))
    typer.echo(f"wrote {out}/analytic.md, analytic.json, analytic.png")


@bench_app.command("executors")
def bench_executors(
    out: Path = typer.Option(Path("bench/executors"), help="directory for the table and plot"),
    n: int = typer.Option(32, min=1, help="digits images (robust and standard)"),
    batch_size: int = typer.Option(4, min=1, help="images per shard"),
    steps: int = typer.Option(5, min=1, help="PGD iterations (EOT 2)"),
) -> None:
    """Throughput of a digits evaluation: the local executor (1 and 2 threads) against a local
    Ray instance with 1 and 2 single-thread workers."""
    from ..benchmarks import executors

    typer.echo(executors.run(out, n, batch_size, steps))
    typer.echo(f"wrote {out}/executors.md, executors.json, executors.png")


@bench_app.command("statistics")
def bench_statistics(
    out: Path = typer.Option(Path("bench/statistics"), help="directory for the table"),
    images: int = typer.Option(64, min=8, help="images per synthetic evaluation"),
    trials: int = typer.Option(400, min=10, help="simulated evaluations per setting"),
    seed: int = typer.Option(0, help="seed of the simulation"),
) -> None:
    """The report's statistical rules on synthetic defenses of known truth: interval coverage
    and width, the audit's WARN/FAIL false alarms and power, "strongest attack" false alarms
    (raw and Holm) and the worst case's bias."""
    from ..benchmarks import statistics

    typer.echo(statistics.run(out, images, trials, seed))
    typer.echo(f"wrote {out}/statistics.md, statistics.json")


@bench_app.command("resampling")
def bench_resampling(
    out: Path = typer.Option(Path("bench/resampling"), help="directory for the table and plot"),
    workloads: str = typer.Option("digits,unet32", help="digits (batch 64) and/or unet32 (one "
                                  "3×32×32 image, as the paper's figure)"),
    jumps: str = typer.Option("1,5,10,20", help="resampling U"),
    modes: str = typer.Option("exact,checkpoint", help="gradient modes"),
    steps: int = typer.Option(10, min=2, help="sampling steps from t_l (paper: 10)"),
    cap_gb: float = typer.Option(16.0, help="memory cap: above it a setting is 'out of memory'"),
    repeats: int = typer.Option(2, help="timed runs per configuration (after one untimed)"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
) -> None:
    """Time and peak memory of one attack gradient: U-step against single-step resampling
    (Pei et al. supplement §7)."""
    from ..benchmarks import resampling

    names = parse_list(workloads, str)
    unknown = [w for w in names if w not in resampling.BATCH]
    if unknown:
        raise typer.BadParameter(f"expected workloads among {', '.join(resampling.BATCH)}, "
                                 f"found {', '.join(unknown)}")
    report = resampling.run(out, names, parse_list(jumps, int), parse_list(modes, str),
                            cap_gb, repeats, device, steps=steps)
    typer.echo(report)
    typer.echo(f"wrote {out}/resampling.md, resampling.json, resampling.png")
