"""Resuming on the record store, the local and Ray executors, retries, the run-directory lock."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from advpure.cli import app
from advpure.evaluation import EvalConfig, run_evaluation
from advpure.evaluation.executors import LocalExecutor, RayExecutor, make_executor
from advpure.reports.report import load_run
from advpure.evaluation.runner import ShardsFailed
from advpure.evaluation.shards import evaluate_shard
from advpure.evaluation.store import STORE_NAME, RecordStore, RunDirectoryBusy, RunLock

# small digits runs: DiffPure at dt 0.05 against PGD-2; batch 2, so many shards
SMALL = dict(n=6, standard_n=10, seeds=(0, 1), batch_size=2,
             defense={"name": "diffpure", "dt": 0.05},
             attacks=({"name": "pgd", "eps": 0.2, "steps": 2},))
# a run long enough to be killed in the middle: 2 seeds × 12 shards of 2 images
KILLED = ["--defense", "diffpure", "--dt", "0.02", "--attack", "pgd", "--eps", "0.2",
          "--steps", "3", "--eot", "2", "--n", "24", "--standard-n", "24", "--batch-size",
          "2", "--seeds", "0,1", "--threads", "1"]


def records(run_dir: Path) -> list[tuple]:
    """Every (seed, attack, sample index, predictions) row of the run directory's store."""
    with sqlite3.connect(run_dir / STORE_NAME) as connection:
        return connection.execute("SELECT seed, attack, sample_index, predictions "
                                  "FROM outcomes").fetchall()


def by_key(result) -> dict[tuple, tuple]:
    return {(o.seed, o.attack, o.sample_index): o.predictions for o in result.outcomes}


def count_rows(run_dir: Path) -> int:
    try:
        with sqlite3.connect(run_dir / STORE_NAME, timeout=0.1) as connection:
            return connection.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0]
    except sqlite3.Error:
        return 0


def start_evaluate(run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "advpure", "evaluate", *KILLED,
                             "--out", str(run_dir)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_numbers(tmp_path):
    run_dir = tmp_path / "run"
    expected_rows = 2 * (24 + 24)                       # seeds × (clean + PGD) per image
    process = start_evaluate(run_dir)
    deadline = time.monotonic() + 300
    while count_rows(run_dir) < 8 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read()
    busy = CliRunner().invoke(app, ["evaluate", *KILLED, "--out", str(run_dir)])
    assert busy.exit_code == 1
    assert f"in use by another advpure process (pid {process.pid})" in busy.output
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = count_rows(run_dir)
    assert 8 <= partial < expected_rows                 # killed in the middle

    again = subprocess.run([sys.executable, "-m", "advpure", "evaluate", *KILLED,
                            "--out", str(run_dir)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    rows = records(run_dir)
    keys = [row[:3] for row in rows]
    assert len(keys) == len(set(keys)) == expected_rows     # every sample exactly once
    with RecordStore(run_dir / STORE_NAME) as store:
        assert len(store.runs()) == 1                       # resumed, not a second run

    config = EvalConfig.model_validate_json((run_dir / "config.json").read_text())
    uninterrupted = run_evaluation(config, progress=False, executor=LocalExecutor(threads=1))
    resumed = load_run(run_dir)
    assert by_key(resumed) == by_key(uninterrupted)
    summary = json.loads((run_dir / "results.json").read_text())
    assert summary["robust_accuracy"] == uninterrupted.accuracy("robust")
    assert summary["standard_accuracy"] == uninterrupted.accuracy("standard")


def test_a_second_writer_is_refused_and_a_changed_config_is_a_new_run(tmp_path):
    cfg = EvalConfig(**SMALL)
    with RunLock(tmp_path):
        with pytest.raises(RunDirectoryBusy, match=f"pid {os.getpid()}"):
            run_evaluation(cfg, progress=False, out_dir=tmp_path)
    first = run_evaluation(cfg, progress=False, out_dir=tmp_path)
    rows = len(records(tmp_path))
    again = run_evaluation(cfg, progress=False, out_dir=tmp_path)      # nothing left to do
    assert len(records(tmp_path)) == rows and by_key(again) == by_key(first)
    changed = cfg.model_copy(update={"defense": cfg.defense.model_copy(update={"dt": 0.1})})
    other = run_evaluation(changed, progress=False, out_dir=tmp_path)
    with RecordStore(tmp_path / STORE_NAME) as store:
        assert len(store.runs()) == 2
    assert len(records(tmp_path)) == 2 * rows
    assert len(other.outcomes) == len(first.outcomes)                  # not a mix of the two


def flaky(marker_dir: Path, fail: dict, config_json: str, shard):
    """``evaluate_shard``, except that the shards in ``fail`` raise: those marked 'once' on
    their first attempt only (a marker file remembers it across processes), the others always."""
    mode = fail.get((shard.seed, shard.start, shard.attacked))
    if mode == "always":
        raise RuntimeError(f"broken shard {shard}")
    marker = marker_dir / f"{shard.seed}-{shard.start}-{shard.attacked}"
    if mode == "once" and not marker.exists():
        marker.touch()
        raise RuntimeError(f"transient failure of {shard}")
    return evaluate_shard(config_json, shard)


def retried_then_reported(tmp_path: Path, executor_of) -> None:
    """A shard failing once is retried; one always failing is reported, not lost, and the run
    started again completes to the plain run's outcomes."""
    import functools

    cfg = EvalConfig(**SMALL)
    plain = run_evaluation(cfg, progress=False, executor=LocalExecutor(threads=1))
    fail = {(0, 2, True): "once", (1, 2, False): "always"}   # the last shard always fails
    work = functools.partial(flaky, tmp_path, fail)
    with pytest.raises(ShardsFailed, match=r"(?s)1 of 10 shards failed.*seed 1, standard images"):
        run_evaluation(cfg, progress=False, out_dir=tmp_path / "run",
                       executor=executor_of(work))
    assert (tmp_path / "0-2-True").exists()                # the transient failure happened
    assert len(records(tmp_path / "run")) == 2 * (6 * 2 + 4) - 2
    resumed = run_evaluation(cfg, progress=False, out_dir=tmp_path / "run",
                             executor=executor_of(evaluate_shard))
    assert by_key(resumed) == by_key(plain)


def test_the_local_executor_retries_and_reports_a_failing_shard(tmp_path):
    retried_then_reported(tmp_path, lambda work: LocalExecutor(retries=1, threads=1, work=work))


@pytest.fixture(scope="module")
def local_ray():
    """A Ray instance with 2 CPUs inside the test process; this module's functions travel to
    its workers by value (they cannot import the test module)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def test_the_ray_executor_gives_the_local_records(local_ray, tmp_path):
    cfg = EvalConfig(**SMALL)
    local = run_evaluation(cfg, progress=False, out_dir=tmp_path / "local",
                           executor=LocalExecutor(threads=1))
    sharded = run_evaluation(cfg, progress=False, out_dir=tmp_path / "ray",
                             executor=RayExecutor(workers=2, threads=1))
    assert sorted(records(tmp_path / "ray")) == sorted(records(tmp_path / "local"))
    assert sharded.accuracy("robust") == local.accuracy("robust")


def test_the_ray_executor_retries_and_reports_a_failing_shard(local_ray, tmp_path):
    retried_then_reported(tmp_path, lambda work: RayExecutor(workers=2, retries=1, threads=1,
                                                             work=work))


def test_executor_options_are_checked():
    assert isinstance(make_executor("ray", workers=2, address=None), RayExecutor)
    with pytest.raises(ValueError, match="Ray options"):
        make_executor("local", gpus_per_task=1)
    with pytest.raises(ValueError, match="local, ray"):
        make_executor("dask")
    result = CliRunner().invoke(app, ["evaluate", "--executor", "local", "--workers", "2"])
    assert result.exit_code != 0 and "Ray options" in result.output
