"""What a new user trips over (issue 25): defaults that follow the dataset, one line for every
user error, nothing silently coerced, the one-call API, and the small things (Ctrl-C, one bar
per phase, no run.lock left, the demo's records, --help's order)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import advpure
from advpure.attacks import ATTACKS
from advpure.cli import app
from advpure.evaluation import EvalConfig, run_evaluation
from advpure.evaluation.config import AttackConfig, DefenseConfig, config_from_flat
from advpure.evaluation.executors import LocalExecutor
from advpure.evaluation.runner import phase_bars
from advpure.evaluation.shards import evaluate_shard, plan_shards
from advpure.evaluation.store import RunInterrupted
from advpure.models.checkpoint import checkpoint_paths
from advpure.models.registry import WEIGHTS_DIR
from advpure.purifiers import DiffPure

RUNNER = CliRunner()


def cli(*args: str):
    return RUNNER.invoke(app, [str(a) for a in args])


def one_line_error(result, *phrases: str) -> str:
    """The command failed with exit status 2 and one 'Error: …' line holding ``phrases``."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, result.output
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def digits():
    x, y = advpure.data.load("digits", "test")
    return x[:4], y[:4]


@pytest.fixture(scope="module")
def clf():
    return advpure.load_classifier("builtin:digits-cnn")


# ---------------------------------------------------------------- defaults follow the dataset

def test_models_and_eps_default_to_the_datasets():
    cifar = config_from_flat({"dataset": "cifar10", "defense": "agdm", "attack": "pgd"})
    assert cifar.classifier == "builtin:cifar10-resnet18"
    assert cifar.defense.diffusion == "builtin:cifar10-unet-small"
    assert cifar.defense.guidance_classifier == "builtin:cifar10-guidance"
    assert cifar.attacks[0].eps == pytest.approx(8 / 255)
    digits = config_from_flat({"attack": "pgd"})
    assert (digits.classifier, digits.attacks[0].eps) == ("builtin:digits-cnn", 0.2)
    assert config_from_flat({"attack": "pgd", "norm": "l2"}).attacks[0].eps == 1.0
    assert config_from_flat({"dataset": "cifar10", "attack": "apgd", "norm": "l2"}
                            ).attacks[0].eps == 0.5
    imagenet = EvalConfig(dataset="imagenet", classifier="resnet50:x",
                          attacks=(AttackConfig(name="pgd"),))
    assert imagenet.attacks[0].eps == pytest.approx(4 / 255)
    saved = json.loads(digits.model_dump_json())          # config.json says what ran
    assert saved["attacks"][0]["eps"] == 0.2 and saved["classifier"] == "builtin:digits-cnn"
    assert EvalConfig.model_validate(saved) == digits


def test_a_dataset_without_shipped_models_asks_for_them():
    with pytest.raises(ValueError, match="no classifier model ships for cifar100; give "
                                         "--classifier SPEC"):
        config_from_flat({"dataset": "cifar100"})


def test_a_model_for_other_images_is_refused_before_any_work(tmp_path):
    out = tmp_path / "run"
    result = cli("evaluate", "--classifier", "builtin:cifar10-resnet18", "--n", "2",
                 "--out", out)
    one_line_error(result, "builtin:cifar10-resnet18 (classifier): expected images N×3×32×32, "
                           "found N×1×8×8")
    assert not out.exists()
    cfg = EvalConfig(n=2, defense=DefenseConfig(name="diffpure",
                                                diffusion="builtin:cifar10-unet-small"))
    with pytest.raises(ValueError, match="cifar10-unet-small \\(diffusion\\): expected images "
                                         "N×3×32×32"):
        run_evaluation(cfg, progress=False, out_dir=out)
    assert not out.exists()


# ---------------------------------------------------------------- one line per user error

def test_missing_data_is_one_line(tmp_path):
    result = cli("evaluate", "--dataset", "cifar10", "--data-root", tmp_path / "nowhere",
                 "--n", "2", "--out", tmp_path / "run")
    one_line_error(result, "cifar10: expected a directory 'cifar-10-batches-py'", "nowhere")
    result = cli("evaluate", "--dataset", "cifar10", "--n", "2", "--out", tmp_path / "run")
    one_line_error(result, "expected --data-root DIR")
    assert not (tmp_path / "run").exists()


def test_a_model_of_the_wrong_kind_is_one_line_and_no_run_directory(tmp_path):
    out = tmp_path / "run"
    one_line_error(cli("evaluate", "--classifier", "builtin:digits-unet", "--out", out),
                   "expected a classifier model, found a diffusion", "give it as --diffusion")
    one_line_error(cli("evaluate", "--defense", "diffpure", "--diffusion", "builtin:digits-cnn",
                       "--out", out), "expected a diffusion model, found a classifier")
    trained = tmp_path / "cnn"
    for path in checkpoint_paths(WEIGHTS_DIR / "digits-cnn"):
        shutil.copy(path, trained.with_suffix(path.suffix))
    one_line_error(cli("evaluate", "--defense", "diffpure", "--diffusion", trained, "--out", out),
                   "expected a diffusion checkpoint, found a classifier one")
    assert not out.exists()


def copied_checkpoint(tmp_path: Path) -> Path:
    stem = tmp_path / "cnn"
    for path in checkpoint_paths(WEIGHTS_DIR / "digits-cnn"):
        shutil.copy(path, stem.with_suffix(path.suffix))
    return stem


@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
def test_a_damaged_safetensors_file_is_named(tmp_path, damage):
    stem = copied_checkpoint(tmp_path)
    weights = stem.with_suffix(".safetensors")
    content = weights.read_bytes()
    weights.write_bytes(content[:len(content) // 2] if damage == "truncated" else
                        bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).tolist()))
    with pytest.raises(ValueError, match="expected a safetensors file .* truncated or corrupt"):
        advpure.load_classifier(str(stem))
    one_line_error(cli("evaluate", "--classifier", stem, "--out", tmp_path / "run"),
                   "truncated or corrupt")


def test_a_random_torch_file_never_suggests_weights_only_false(tmp_path):
    junk = tmp_path / "Standard.pt"
    junk.write_bytes(bytes(torch.randint(0, 256, (2048,), dtype=torch.uint8).tolist()))
    line = one_line_error(cli("models", f"wrn-28-10:{junk}"), "expected a PyTorch checkpoint "
                          "of tensors, found an unreadable file")
    assert "weights_only" not in line


def test_a_checkpoint_config_that_does_not_fit_its_family(tmp_path):
    stem = copied_checkpoint(tmp_path)
    record = json.loads(stem.with_suffix(".json").read_text())
    record["config"]["depth"] = 28
    stem.with_suffix(".json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="expected a small-cnn config with fields among "
                                         "in_channels, num_classes, width"):
        advpure.load_classifier(str(stem))


def test_an_unwritable_out_is_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    one_line_error(cli("evaluate", "--n", "2", "--out", blocker / "run"),
                   "expected a directory advpure can create and write", "choose another --out")


def test_a_flat_experiment_file_says_how_to_nest(tmp_path):
    flat = tmp_path / "flat.yaml"
    flat.write_text("attack: pgd\neps: 0.2\n")
    result = cli("evaluate", "--config", flat, "--dry-run")
    assert result.exit_code == 2 and "expected a mapping with its name and options, such as " \
        "attacks: [{name: pgd, eps: 0.2}], found 'pgd'" in " ".join(result.output.split())
    flat.write_text("defense: {name: diffpure}\nt_star: 0.2\n")
    result = cli("evaluate", "--config", flat, "--dry-run")
    assert "t_star: expected it inside the defense's mapping" in " ".join(result.output.split())


def test_labels_the_classifier_does_not_have(digits, clf):
    x, y = digits
    with pytest.raises(ValueError, match="expected labels 0 … 9 .*10 classes.*found 12"):
        advpure.attacks.pgd(clf, x, torch.tensor([12, 1, 2, 3]), eps=0.2, steps=1)
    with pytest.raises(ValueError, match="found 12"):
        advpure.evaluate(clf, x, torch.tensor([12, 1, 2, 3]), progress=False)


def test_a_classifier_where_the_eps_model_goes(clf):
    with pytest.raises(ValueError, match="DiffPure: the eps-model .*expected an eps-model "
                                         "\\(diffusion\\), found the classifier "
                                         "builtin:digits-cnn"):
        DiffPure(clf, t_star=0.1, dt=0.05)
    dm = advpure.load_diffusion("builtin:digits-unet")
    with pytest.raises(ValueError, match="PurifiedClassifier: the classifier: expected a "
                                         "classifier, found the diffusion"):
        advpure.PurifiedClassifier(DiffPure(dm, t_star=0.1, dt=0.05), dm)


def test_verbose_shows_the_traceback(tmp_path):
    result = RUNNER.invoke(app, ["-v", "evaluate", "--n", "5000", "--out", str(tmp_path / "r")])
    assert isinstance(result.exception, ValueError)       # raised, not reported in one line
    assert "expected at most 359" in str(result.exception)


# ---------------------------------------------------------------- nothing silently coerced

@pytest.mark.parametrize("shape,message", [((2, 1, 32, 32), "expected images N×1×8×8, found "
                                            "N×1×32×32"),
                                           ((2, 3, 8, 8), "expected images N×1×8×8, found "
                                            "N×3×8×8")])
def test_images_of_another_shape_are_refused(clf, shape, message):
    x = torch.rand(shape)
    with pytest.raises(ValueError, match=message):
        clf(x)                                              # the bare classifier too
    with pytest.raises(ValueError, match=message):
        advpure.attacks.pgd(clf, x, torch.zeros(2, dtype=torch.long), eps=0.2, steps=1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_images_of_another_dtype_are_refused(clf, digits, dtype):
    x, y = digits
    with pytest.raises(ValueError, match=f"expected float32 images .*found "
                                         f"{str(dtype).removeprefix('torch.')}"):
        clf(x.to(dtype))
    dm = advpure.load_diffusion("builtin:digits-unet")
    defense = advpure.PurifiedClassifier(DiffPure(dm, t_star=0.1, dt=0.05), clf)
    with pytest.raises(ValueError, match="expected float32 images"):
        advpure.attacks.pgd(defense, x.to(dtype), y, eps=0.2, steps=1)


def test_dt_larger_than_the_time_crossed_is_refused():
    with pytest.raises(ValueError, match="dt: expected at most 0.1, .*found 0.5"):
        DefenseConfig(name="diffpure", t_star=0.1, dt=0.5)
    with pytest.raises(ValueError, match="dt: expected at most 0.07"):
        DefenseConfig(name="agdm", dt=0.1)
    assert DefenseConfig(name="diffpure", sampler="ld", dt=0.5).dt == 0.5   # LD has no t*


def test_n_larger_than_the_split_is_refused(tmp_path):
    one_line_error(cli("evaluate", "--n", "5000", "--out", tmp_path / "run"),
                   "n: expected at most 359 (the digits test split), found 5000")
    assert not (tmp_path / "run").exists()


def test_linf_eps_of_one_or_more_is_refused():
    with pytest.raises(ValueError, match="eps: expected an ℓ∞ budget below 1 .* found 8; on "
                                         "the 0–255 scale write 8/255"):
        AttackConfig(name="pgd", eps=8)
    assert AttackConfig(name="pgd", norm="l2", eps=1.5).eps == 1.5


def test_values_just_above_one_are_shown_as_they_are(digits, clf):
    x, y = digits
    x = x.clone()
    x[0, 0, 0, 0] = 1 + 1e-6
    with pytest.raises(ValueError, match="found 1 outside, min .* and max 1.00000095 "
                                         "\\(rounding\\? clamp them"):
        advpure.attacks.pgd(clf, x, y, eps=0.2, steps=1)


# ---------------------------------------------------------------- the one-call API

class GaussianBlur(torch.nn.Module):
    """A user's defense: a 3×3 Gaussian blur in front of the digits CNN."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier
        kernel = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (kernel[:, None] * kernel[None, :] / 16)[None, None])

    def forward(self, x):
        return self.classifier(torch.nn.functional.conv2d(x, self.kernel, padding=1))


def test_evaluate_a_users_defense_with_records_and_resume(tmp_path, digits, clf):
    x, y = digits
    pgd = ATTACKS["pgd"](eps=0.2, steps=2)
    result = advpure.evaluate(GaussianBlur(clf), x, y, attacks=[pgd], seeds=(0, 1),
                              out=tmp_path / "run", progress=False)
    assert result.accuracy("standard")["seeds"] == 2
    assert 0 <= result.accuracy("robust")["mean"] <= result.accuracy("standard")["mean"]
    for name in ("records.sqlite", "results.md", "results.json", "results.csv", "config.json"):
        assert (tmp_path / "run" / name).is_file()
    assert not (tmp_path / "run" / "run.lock").exists()
    report = cli("report", tmp_path / "run")                 # rebuilt from the records alone
    assert report.exit_code == 0 and "GaussianBlur" in report.output
    again = advpure.evaluate(GaussianBlur(clf), x, y, attacks=[pgd], seeds=(0, 1),
                             out=tmp_path / "run", progress=False)   # resumed: nothing to run
    assert again.accuracy("robust") == result.accuracy("robust")
    with pytest.raises(ValueError, match="needs eps"):
        advpure.evaluate(GaussianBlur(clf), x, y, attacks=["pgd"], progress=False)
    with pytest.raises(ValueError, match="bpda attacks a part of the defense"):
        advpure.evaluate(GaussianBlur(clf), x, y, attacks=[{"name": "bpda", "eps": 0.2}],
                         progress=False)


def outcomes_by_position(result, positions: dict[int, int]) -> dict:
    return {(o.seed, o.attack, positions[o.sample_index]): o.predictions
            for o in result.outcomes}


def test_evaluate_reproduces_the_command_line_on_diffpure(tmp_path):
    """The same DiffPure, classifier, images and seeds: the same predictions, image by image."""
    out = tmp_path / "cli"
    result = cli("evaluate", "--n", "4", "--standard-n", "4", "--defense", "diffpure",
                 "--dt", "0.05", "--attack", "pgd", "--eps", "0.2", "--steps", "2", "--eot", "2",
                 "--seeds", "0,1", "--draws", "2", "--batch-size", "2", "--out", out)
    assert result.exit_code == 0, result.output
    from advpure.reports.report import load_run

    by_cli = load_run(out)
    x, y = advpure.data.load("digits", "test")
    x, y, idx = advpure.data.fixed_subset(x, y, n=4, seed=0)
    dm = advpure.load_diffusion("builtin:digits-unet")
    clf = advpure.load_classifier("builtin:digits-cnn")
    defense = advpure.PurifiedClassifier(DiffPure(dm, t_star=0.1, dt=0.05), clf)
    by_api = advpure.evaluate(defense, x, y, attacks=[ATTACKS["pgd"](eps=0.2, steps=2, eot=2)],
                              seeds=(0, 1), draws=2, batch_size=2, progress=False)
    cli_outcomes = outcomes_by_position(by_cli, {int(i): k for k, i in enumerate(idx)})
    api_outcomes = outcomes_by_position(by_api, {k: k for k in range(4)})
    assert len(cli_outcomes) == 4 * 2 * 2 and cli_outcomes == api_outcomes
    assert by_api.accuracy("robust") == by_cli.accuracy("robust")


# ---------------------------------------------------------------- the small things

def test_ctrl_c_says_what_was_recorded(tmp_path):
    cfg = EvalConfig(n=4, standard_n=4, batch_size=2, attacks=(AttackConfig(name="pgd",
                                                                             steps=1),))
    calls = []

    def interrupted_after_one(config_json, shard):
        calls.append(shard)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate_shard(config_json, shard)

    with pytest.raises(RunInterrupted, match="interrupted; 4 outcomes recorded in .*records."
                                             "sqlite; run the same command to resume"):
        run_evaluation(cfg, progress=False, out_dir=tmp_path / "run",
                       executor=LocalExecutor(work=interrupted_after_one))
    assert not (tmp_path / "run" / "run.lock").exists()
    resumed = run_evaluation(cfg, progress=False, out_dir=tmp_path / "run")
    assert len(resumed.outcomes) == 8


def test_the_command_line_reports_ctrl_c(monkeypatch, tmp_path):
    def interrupted(*args, **kwargs):
        raise RunInterrupted("interrupted; 3 outcomes recorded in x; run the same command to "
                             "resume")
    monkeypatch.setattr(advpure.evaluation, "run_evaluation", interrupted)
    result = cli("evaluate", "--n", "2", "--out", tmp_path / "run")
    assert result.exit_code == 130
    assert "interrupted; 3 outcomes recorded" in result.output and "Traceback" not in \
        result.output


def test_one_progress_bar_per_phase():
    cfg = EvalConfig(n=4, standard_n=10, batch_size=3, seeds=(0, 1))
    shards = plan_shards(cfg, torch.arange(4), torch.arange(4, 10))
    with phase_bars(cfg, shards, shards[1:], progress=False) as bars:
        assert (bars[True].total, bars[False].total) == (2 * 4, 2 * 6)
        assert (bars[True].n, bars[False].n) == (3, 0)    # the first shard: recorded before


def test_the_demo_keeps_records_that_advpure_report_rebuilds(tmp_path):
    from advpure.studies.demo import DemoSettings, run_demo

    run_demo(tmp_path, DemoSettings(n=4, steps=1, eot=1, seeds=(0,), sweep=(0.1,)),
             progress=False)
    for run in ("undefended", "diffpure"):
        assert (tmp_path / run / "records.sqlite").is_file()
        assert not (tmp_path / run / "run.lock").exists()
        rebuilt = cli("report", tmp_path / run)
        assert rebuilt.exit_code == 0, rebuilt.output
        assert (tmp_path / run / "grid.png").is_file()           # kept adversarial images


def test_help_lists_the_core_options_first_and_plain_defaults():
    text = cli("evaluate", "--help").output
    panels = [text.index(p) for p in ("Evaluation", "Defense (", "Attack (", "Executor")]
    assert panels == sorted(panels)
    assert "0.0313725" not in text and "(0,)" not in text
    assert "--data-dir" not in cli("train", "diffusion", "--help").output
