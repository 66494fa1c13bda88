"""Throughput of one digits evaluation on each executor: the local one (1 and 2 torch threads)
against a local Ray instance with 1 and 2 workers of one thread each. Every run writes its own
record store, as a user's run does; Ray's start-up is timed apart from the evaluation (a
cluster pays it once), while the workers' first shards include their imports and model loads.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from ..evaluation.config import EvalConfig
from ..evaluation.executors import LocalExecutor, RayExecutor
from ..evaluation.runner import run_evaluation
from ..reports.plots import figure

SETTINGS = (("local", 1), ("local", 2), ("ray", 1), ("ray", 2))    # (executor, threads|workers)


def bench_config(n: int, batch_size: int, steps: int) -> EvalConfig:
    """DiffPure (t* = 0.1, dt = 0.01) on digits against PGD-``steps`` × EOT 2 at ε = 0.2."""
    return EvalConfig(n=n, standard_n=n, batch_size=batch_size,
                      defense={"name": "diffpure", "dt": 0.01},
                      attacks=({"name": "pgd", "eps": 0.2, "steps": steps, "eot": 2},))


def measure(cfg: EvalConfig, executor_name: str, count: int, work_dir: Path) -> dict:
    """Wall time of one evaluation (and Ray's start-up) in a fresh run directory."""
    startup = 0.0
    if executor_name == "ray":
        import ray

        began = time.perf_counter()
        ray.init(num_cpus=count, include_dashboard=False, log_to_driver=False)
        startup = time.perf_counter() - began
        executor = RayExecutor(workers=count, threads=1)
    else:
        executor = LocalExecutor(threads=count)
    run_dir = work_dir / f"{executor_name}-{count}"
    try:
        began = time.perf_counter()
        result = run_evaluation(cfg, progress=False, out_dir=run_dir, executor=executor)
        seconds = time.perf_counter() - began
    finally:
        if executor_name == "ray":
            ray.shutdown()
    outcomes = sorted((o.seed, o.attack, o.sample_index, o.predictions) for o in result.outcomes)
    return {"executor": executor_name, "workers": count if executor_name == "ray" else 1,
            "threads": 1 if executor_name == "ray" else count, "seconds": seconds,
            "ray_startup_seconds": startup, "images_per_second": cfg.n / seconds,
            "robust_accuracy": result.accuracy("robust")["mean"], "outcomes": outcomes}


def run(out_dir: Path, n: int = 32, batch_size: int = 4, steps: int = 5) -> str:
    """Every setting once; writes executors.md, executors.json and executors.png."""
    from tqdm.auto import tqdm

    cfg = bench_config(n, batch_size, steps)
    with tempfile.TemporaryDirectory() as work:
        rows = [measure(cfg, name, count, Path(work))
                for name, count in tqdm(SETTINGS, desc="bench executors")]
    reference_seconds, reference_outcomes = rows[0]["seconds"], rows[0]["outcomes"]
    for row in rows:
        row["speedup"] = reference_seconds / row["seconds"]
        row["same_records_as_local_1_thread"] = row.pop("outcomes") == reference_outcomes
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "executors.json").write_text(json.dumps(
        {"config": cfg.model_dump(mode="json"), "rows": rows}, indent=2) + "\n")
    plot(rows, out_dir / "executors.png")
    text = report(rows, cfg)
    (out_dir / "executors.md").write_text(text + "\n![throughput](executors.png)\n")
    return text


def report(rows: list[dict], cfg: EvalConfig) -> str:
    lines = ["| executor | workers × threads | wall s | images/s | speedup | Ray start-up s | "
             "robust acc. | records = local (1 thread) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['executor']} | {r['workers']} × {r['threads']} | {r['seconds']:.1f} "
                     f"| {r['images_per_second']:.2f} | {r['speedup']:.2f}× | "
                     f"{r['ray_startup_seconds']:.1f} | {100 * r['robust_accuracy']:.1f} % | "
                     f"{'yes' if r['same_records_as_local_1_thread'] else 'no'} |")
    attack = cfg.attacks[0]
    return (f"# Executors: throughput of one digits evaluation\n\nDiffPure (t* = 0.1, dt = "
            f"{cfg.defense.dt:g}) against PGD-{attack.steps} × EOT {attack.eot} at ε = "
            f"{attack.eps:g} on {cfg.n} images, batches (shards) of {cfg.batch_size}; wall time "
            "of the evaluation with its record store, Ray's start-up apart.\n\n"
            + "\n".join(lines) + "\n")


def plot(rows: list[dict], path: Path) -> None:
    labels = [f"{r['executor']}\n{r['workers']}×{r['threads']}" for r in rows]
    with figure(path, size=(5, 3)) as (fig, axes):
        ax = axes[0, 0]
        ax.bar(labels, [r["images_per_second"] for r in rows], color="tab:blue")
        ax.set_ylabel("images / s")
        ax.set_title("digits evaluation throughput (workers × threads)")
