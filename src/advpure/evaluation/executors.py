"""Executors: where shards run. ``local`` evaluates them one after another in this process;
``ray`` sends each to a Ray task (a local Ray instance, or a cluster at ``address``) that rebuilds
the defense and the attacks from the config's JSON. Both yield each shard's outcomes, or the
exception it raised after ``retries`` further attempts, as the shards finish; the caller (the
run's driver) is the only writer to the record store.

``threads`` pins torch's intra-op thread count where shards run: float results depend on it at
the 1e-6 level, which can flip a borderline prediction, so runs to be compared bit for bit
must use the same value (and the same batch size).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .shards import Shard, evaluate_shard
from .store import Outcome

Work = Callable[[str, Shard], list[Outcome]]
ShardResult = tuple[Shard, "list[Outcome] | Exception"]
EXECUTORS = ("local", "ray")


@contextlib.contextmanager
def pinned_threads(threads: int | None):
    """torch's intra-op thread count set to ``threads`` (None: left alone), then restored."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class LocalExecutor:
    """Shards one after another in this process."""

    retries: int = 0
    threads: int | None = None
    work: Work = evaluate_shard

    def map(self, config_json: str, shards: list[Shard]) -> Iterator[ShardResult]:
        for shard in shards:
            with pinned_threads(self.threads):
                result = _attempt(self.work, config_json, shard, self.retries)
            yield shard, result


def _attempt(work: Work, config_json: str, shard: Shard, retries: int):
    for attempt in range(retries + 1):
        try:
            return work(config_json, shard)
        except Exception as err:             # noqa: BLE001 — reported by the driver
            if attempt == retries:
                return err
    raise AssertionError("unreachable")


def _ray_task(config_json: str, shard: Shard, threads: int | None, work: Work
              ) -> list[Outcome]:
    with pinned_threads(threads):
        return work(config_json, shard)


@dataclass
class RayExecutor:
    """Each shard a Ray task with ``cpus_per_task`` CPUs and ``gpus_per_task`` GPUs, retried
    ``retries`` times when it raises or its worker dies; at most ``workers`` tasks in flight
    (default: as many as the cluster schedules). Connects to ``address`` (``auto``, or
    ``ray://host:10001``) or, without one, starts a local Ray instance with ``workers`` ×
    ``cpus_per_task`` CPUs (all CPUs without ``workers``). Threads default to the task's CPUs."""

    address: str | None = None
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    retries: int = 2
    workers: int | None = None
    threads: int | None = None
    work: Work = evaluate_shard

    def map(self, config_json: str, shards: list[Shard]) -> Iterator[ShardResult]:
        ray = self._ray()
        task = ray.remote(_ray_task).options(
            num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task,
            max_retries=self.retries, retry_exceptions=True)
        threads = self.threads or max(1, int(self.cpus_per_task))
        config_ref = ray.put(config_json)
        waiting, in_flight = list(shards), {}
        limit = self.workers or len(shards)
        while waiting or in_flight:
            while waiting and len(in_flight) < limit:
                shard = waiting.pop(0)
                in_flight[task.remote(config_ref, shard, threads, self.work)] = shard
            done, _ = ray.wait(list(in_flight), num_returns=1)
            shard = in_flight.pop(done[0])
            try:
                yield shard, ray.get(done[0])
            except Exception as err:                   # noqa: BLE001 — reported by the driver
                yield shard, getattr(err, "cause", None) or err

    def _ray(self):
        try:
            import ray
        except ImportError:
            raise RuntimeError("the ray executor needs Ray: pip install 'advpure[ray]'") from None
        if not ray.is_initialized():
            if self.address is None:
                cpus = None if self.workers is None else self.workers * self.cpus_per_task
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=self.address, log_to_driver=False)
        return ray


def make_executor(name: str, **options) -> LocalExecutor | RayExecutor:
    """``local`` or ``ray`` with its options (those that are None keep their defaults)."""
    options = {k: v for k, v in options.items() if v is not None}
    if name == "local":
        unknown = set(options) - {"retries", "threads"}
        if unknown:
            raise ValueError(f"the local executor takes no {', '.join(sorted(unknown))} "
                             "(those are Ray options: --executor ray)")
        return LocalExecutor(**options)
    if name == "ray":
        return RayExecutor(**options)
    raise ValueError(f"executor: expected one of {', '.join(EXECUTORS)}, found {name!r}")
