"""Run an evaluation: standard and robust accuracy of a (defended) classifier over seeds, shard by
shard through an executor, every finished shard recorded at once. With a run directory the run
resumes: shards whose outcomes are in its record store under the same config are skipped, so an
interrupted run started again ends with every sample recorded exactly once and the numbers of
an uninterrupted run."""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import data
from .config import DEFAULT_N, EvalConfig
from .executors import LocalExecutor, RayExecutor
from .experiment import describe, evaluation_subsets
from .results import EvalResult
from .shards import Shard, ShardEvaluator, shard_evaluator, plan_shards
from .store import STORE_NAME, Outcome, RecordStore, RunError, RunInterrupted, RunLock


class ShardsFailed(RunError):
    """Shards that raised after their retries; the others are recorded."""


class RunRecord:
    """The outcomes of one run so far: in the run directory's record store (resumed when it
    holds a run of the same config) or, without a directory, in memory."""

    def __init__(self, cfg: EvalConfig, store: RecordStore | None):
        self.cfg, self.store = cfg, store
        self.outcomes: list[Outcome] = []
        self.images: dict[str, dict[int, torch.Tensor]] = {}   # first seed's, computed now
        self.run_id = None if store is None else self._open_run(cfg.model_dump_json())
        self.done = set() if store is None else store.recorded(self.run_id)

    def _open_run(self, config_json: str) -> str:
        run_id = self.store.find_run(config_json)
        if run_id is not None:
            return run_id
        if self.store.runs():
            tqdm.write(f"{self.store.path}: the config differs from the run(s) recorded there; "
                       "starting a new run beside them (theirs stay in the store)")
        return self.store.begin_run(config_json)

    def is_done(self, shard: Shard, attacks: list[str]) -> bool:
        return shard.keys(attacks) <= self.done

    def add(self, outcomes: list[Outcome]) -> None:
        """Record one shard's outcomes (one transaction); adversarial images are kept in the
        store only with ``save_adversarial``."""
        stored = outcomes if self.cfg.save_adversarial else \
            [dataclasses.replace(o, x_adv=None) for o in outcomes]
        if self.store is not None:
            self.store.add(self.run_id, stored)
        else:
            self.outcomes += stored
        self.done |= {(o.seed, o.attack, o.sample_index) for o in outcomes}
        for o in outcomes:
            if o.seed == self.cfg.seeds[0] and o.x_adv is not None:
                self.images.setdefault(o.attack, {})[o.sample_index] = o.x_adv

    def all_outcomes(self) -> list[Outcome]:
        return self.outcomes if self.store is None else self.store.outcomes(self.run_id)

    def adversarial(self, subset: list[int], attacks: list[str]
                    ) -> dict[tuple[int, str], torch.Tensor]:
        """The first seed's adversarial images per attack in subset order, where every image of
        the subset has one: computed in this session or stored (``save_adversarial``)."""
        seed, found = self.cfg.seeds[0], {}
        for attack in attacks:
            images = self.images.get(attack, {})
            if images and len(images) < len(subset) and self.cfg.save_adversarial:
                shape = tuple(next(iter(images.values())).shape)
                images = images | self.store.adversarial(self.run_id, seed, attack, shape)
            if subset and all(i in images for i in subset):
                found[(seed, attack)] = torch.stack([images[i] for i in subset])
        return found


class RobustTally:
    """The running robust accuracy (single draw, worst case over the attacks) for the bar."""

    def __init__(self, attacks: list[str]):
        self.attacks = attacks                 # none: no robust accuracy to show
        self.correct, self.count = 0.0, 0

    def add(self, outcomes: list[Outcome]) -> None:
        worst: dict[tuple[int, int], float] = {}
        for o in outcomes:
            if o.attack in self.attacks:
                key = (o.seed, o.sample_index)
                worst[key] = min(worst.get(key, 1.0), o.single_draw)
        self.correct += sum(worst.values())
        self.count += len(worst)

    def postfix(self) -> dict[str, str]:
        return {"robust": f"{100 * self.correct / self.count:.1f}%"} if self.count else {}


def run_evaluation(cfg: EvalConfig, progress: bool = True, out_dir: Path | None = None,
                   executor: LocalExecutor | RayExecutor | None = None) -> EvalResult:
    """Evaluate ``cfg`` for every seed: every attack on the robust subset, clean inputs on the
    standard set, shard by shard on ``executor`` (default: this process). With ``out_dir``
    every shard's outcomes go to its record store (``records.sqlite``) as it finishes, and a run
    of the same config recorded there is resumed; a second process writing into the same
    directory is refused (``RunDirectoryBusy``)."""
    executor = executor or LocalExecutor()
    cfg = with_subset_size(cfg)
    size = split_size(cfg)
    return run_planned(cfg, preflight(cfg, executor, size), executor, out_dir, progress)


def split_size(cfg: EvalConfig) -> int:
    """The number of images in the evaluated split (an error naming missing data)."""
    return len(data.labels(cfg.dataset, cfg.split, cfg.data_root))


def with_subset_size(cfg: EvalConfig) -> EvalConfig:
    """``cfg`` with the default ``n`` made explicit (512, or the whole split when smaller), so
    that the run records the size it ran."""
    return cfg if cfg.n is not None else cfg.replace(n=min(DEFAULT_N, split_size(cfg)))


def run_planned(cfg: EvalConfig, size: int, executor, out_dir: Path | None,
                progress: bool = True) -> EvalResult:
    """The run of ``cfg`` on a split of ``size`` images, its inputs checked: shards planned,
    those recorded skipped, the others run on ``executor`` and recorded as they finish."""
    robust, standard = evaluation_subsets(cfg, size)
    shards = plan_shards(cfg, robust, standard[~torch.isin(standard, robust)])
    attacks = [a.key() for a in cfg.resolved_attacks()]
    if out_dir is not None:
        check_writable(Path(out_dir))
    with _run_directory(out_dir) as store:
        record = RunRecord(cfg, store)
        pending = [s for s in shards if not record.is_done(s, attacks)]
        _run_shards(cfg, pending, record, attacks, executor, progress, shards)
        outcomes = record.all_outcomes()
        adversarial = record.adversarial(robust.tolist(), attacks)
    return EvalResult(cfg, robust.tolist(), attacks, outcomes, adversarial=adversarial,
                      standard_indices=standard.tolist())


def preflight(cfg: EvalConfig, executor, size: int) -> int:
    """Everything a run can refuse before any work or any file: a split of ``size`` images too
    small for ``n``, models that do not load or do not fit the data (kind, shape, classes).
    Returns ``size``. The local executor keeps the models loaded here for the run."""
    for field, asked in (("n", cfg.n), ("standard_n", cfg.standard_n)):
        if asked is not None and asked > size:
            raise ValueError(f"{field}: expected at most {size} (the {cfg.dataset} {cfg.split} "
                             f"split), found {asked}: lower --{field.replace('_', '-')}")
    x, _ = data.load(cfg.dataset, cfg.split, root=cfg.data_root, indices=torch.tensor([0]))
    evaluator = ShardEvaluator(cfg) if not isinstance(executor, LocalExecutor) else \
        shard_evaluator(cfg.model_dump_json())
    check_fits(evaluator, x, cfg)
    return size


def check_fits(evaluator: ShardEvaluator, x: torch.Tensor, cfg: EvalConfig) -> None:
    """The classifier and the eps-model take the data's images (the eps-model at
    ``purify_size`` where set) and the classifier has the dataset's classes."""
    from ..data.profiles import PROFILES
    from ..models.contract import contract_of

    classifier = contract_of(evaluator.classifier)
    if classifier is not None:
        classifier.check(x, None)
        classes = PROFILES[cfg.dataset].classes
        if classifier.classes is not None and classifier.classes != classes:
            raise ValueError(f"classifier: expected {classes} classes ({cfg.dataset}), found "
                             f"{classifier.classes} in {classifier.spec}: a model of another "
                             "dataset? give --classifier SPEC")
    purifier = evaluator.defense.purifier
    eps = contract_of(getattr(purifier, "purifier", purifier), ("model",)) \
        if purifier is not None else None
    if eps is not None:
        size = getattr(cfg.defense, "purify_size", None)
        eps.check(x if size is None else torch.nn.functional.interpolate(x, size=size), None)


def check_writable(out_dir: Path) -> None:
    """The run directory can be created and written, or a ValueError that says so."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".advpure-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"--out {out_dir}: expected a directory advpure can create and write, "
                         f"found {err.strerror or err}: choose another --out") from None


@contextlib.contextmanager
def _run_directory(out_dir: Path | None):
    if out_dir is None:
        yield None
        return
    with RunLock(out_dir):
        store = RecordStore(Path(out_dir) / STORE_NAME)
        try:
            yield store
        finally:
            store.close()


def _run_shards(cfg: EvalConfig, pending: list[Shard], record: RunRecord, attacks: list[str],
                executor, progress: bool, planned: list[Shard]) -> None:
    """Run ``pending`` on ``executor``, recording each shard as it finishes. A shard that still
    fails after its retries is reported at the end (``ShardsFailed``) with the others recorded;
    when the first shard to finish fails, the error is raised at once (it is almost surely
    the config's, not the shard's). Ctrl-C ends the run with what it recorded
    (``RunInterrupted``)."""
    failures, succeeded = [], False
    tally = RobustTally(attacks)
    tally.add(record.all_outcomes())
    with phase_bars(cfg, planned, pending, progress) as bars:
        bars[True].set_postfix(tally.postfix())
        try:
            for shard, result in executor.map(cfg.model_dump_json(), pending):
                if isinstance(result, Exception):
                    if not succeeded:
                        raise result
                    failures.append((shard, result))
                    tqdm.write(f"shard failed ({shard}): {type(result).__name__}: {result}")
                    continue
                succeeded = True
                record.add(result)
                tally.add(result)
                bars[shard.attacked].update(len(shard.indices))
                bars[True].set_postfix(tally.postfix())
        except KeyboardInterrupt:
            raise RunInterrupted(interrupted_message(record)) from None
    if failures:
        lines = "\n".join(f"  {shard}: {type(err).__name__}: {err}" for shard, err in failures)
        raise ShardsFailed(f"{len(failures)} of {len(pending)} shards failed after their "
                           f"retries (the others are recorded; run again to retry these):\n"
                           f"{lines}")


def interrupted_message(record: RunRecord) -> str:
    """What Ctrl-C leaves: the outcomes recorded, and how to go on."""
    if record.store is None:
        return "interrupted; nothing was recorded (no run directory): give out_dir to resume"
    count = len(record.done)
    return (f"interrupted; {count} outcomes recorded in {record.store.path}; run the same "
            "command to resume")


@contextlib.contextmanager
def phase_bars(cfg: EvalConfig, planned: list[Shard], pending: list[Shard], progress: bool):
    """One progress bar per phase — the attacked robust subset, then the clean-only standard
    images — each counting images over every seed, so that each ETA is its own phase's."""
    def images(shards, attacked):
        return sum(len(s.indices) for s in shards if s.attacked == attacked)

    bars = {}
    for position, (attacked, label) in enumerate(((True, "attacked"), (False, "clean"))):
        total = images(planned, attacked)
        if total or attacked:
            bars[attacked] = tqdm(total=total, initial=total - images(pending, attacked),
                                  desc=f"{label}: {describe(cfg)}" if attacked else
                                  f"{label}: standard images", unit="img", position=position,
                                  disable=not progress, leave=True)
    try:
        yield bars
    finally:
        for bar in bars.values():
            bar.close()
