import json

import pytest
from typer.testing import CliRunner

import advpure
from advpure.cli import app


def test_evaluate_writes_a_run_directory(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "evaluate", "--out", str(out), "--n", "8", "--defense", "diffpure", "--dt", "0.05",
        "--attack", "pgd", "--eps", "0.2", "--steps", "2", "--eot", "2", "--seeds", "0,1"])
    assert result.exit_code == 0, result.output
    assert "robust accuracy" in result.output
    summary = json.loads((out / "results.json").read_text())
    assert summary["config"]["defense"]["name"] == "diffpure"
    assert len(summary["per_seed"]) == 2 and len(summary["per_seed"][0]["adv_correct"]) == 8
    assert 0 <= summary["robust_accuracy"]["mean"] <= summary["standard_accuracy"]["mean"] + 0.5
    assert (out / "results.md").read_text().startswith("# advpure evaluation")
    assert json.loads((out / "config.json").read_text())["seeds"] == [0, 1]


def test_evaluate_rejects_bad_seeds():
    result = CliRunner().invoke(app, ["evaluate", "--seeds", "a,b"])
    output = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code != 0 and "seeds.0: expected a valid integer" in output


def test_train_classifier_writes_a_loadable_checkpoint(tmp_path):
    result = CliRunner().invoke(app, ["train", "classifier", "--out", str(tmp_path / "clf"),
                                      "--steps", "20", "--width", "4"])
    assert result.exit_code == 0, result.output
    clf = advpure.load_classifier(str(tmp_path / "clf.json"))
    meta = json.loads((tmp_path / "clf.json").read_text())["meta"]
    assert meta["training"]["steps"] == 20 and "test_accuracy" in meta
    assert clf(advpure.data.load("digits")[0][:2]).shape == (2, 10)


def test_train_diffusion_writes_a_loadable_checkpoint(tmp_path):
    result = CliRunner().invoke(app, ["train", "diffusion", "--out", str(tmp_path / "dm"),
                                      "--steps", "3", "--base", "8"])
    assert result.exit_code == 0, result.output
    assert advpure.load_diffusion(str(tmp_path / "dm")) is not None


@pytest.mark.slow
def test_demo_runs_and_shows_diffpure_helping(tmp_path):
    from advpure.studies.demo import DemoSettings, run_demo

    report = run_demo(tmp_path, DemoSettings(), progress=False)
    assert (tmp_path / "grid.png").is_file() and (tmp_path / "sweep" / "sweep.png").is_file()
    undefended = json.loads((tmp_path / "undefended" / "results.json").read_text())
    diffpure = json.loads((tmp_path / "diffpure" / "results.json").read_text())
    assert undefended["standard_accuracy"]["mean"] >= 0.95
    assert undefended["robust_accuracy"]["mean"] < 0.10
    assert diffpure["robust_accuracy"]["mean"] >= undefended["robust_accuracy"]["mean"] + 0.20
    assert "Reduced settings" in report


def test_evaluate_takes_a_gradient_mode_and_checks_the_surrogate_step(tmp_path):
    args = ["evaluate", "--out", str(tmp_path), "--n", "4", "--defense", "diffpure", "--dt", "0.05",
            "--attack", "pgd", "--steps", "1"]
    missing = CliRunner().invoke(app, args + ["--gradient", "surrogate"])
    assert missing.exit_code != 0
    assert "expected surrogate_dt exactly when gradient is 'surrogate'" in " ".join(
        missing.output.replace("│", " ").split())
    result = CliRunner().invoke(app, args + ["--gradient", "surrogate", "--surrogate-dt", "0.1"])
    assert result.exit_code == 0, result.output
    assert "[surrogate gradient]" in result.output
    assert json.loads((tmp_path / "config.json").read_text())["defense"]["surrogate_dt"] == 0.1


def test_evaluate_takes_sampler_options_and_an_experiment_file(tmp_path):
    first = tmp_path / "first"
    result = CliRunner().invoke(app, [
        "evaluate", "--out", str(first), "--n", "4", "--defense", "diffpure", "--sampler", "ddim",
        "--ddim-eta", "0.5", "--t-star", "0.07", "--dt", "0.01", "--t-star-delta", "0.02"])
    assert result.exit_code == 0, result.output
    assert "diffpure-ddim(t*=0.07±0.02, dt=0.01, ddim_eta=0.5)" in result.output
    again = tmp_path / "again"                   # the written config reruns, a flag overrides
    result = CliRunner().invoke(app, ["evaluate", "--config", str(first / "config.json"),
                                      "--ddim-eta", "0", "--out", str(again)])
    assert result.exit_code == 0, result.output
    cfg = json.loads((again / "config.json").read_text())
    assert cfg["defense"]["sampler"] == "ddim" and cfg["defense"]["ddim_eta"] == 0.0 and cfg["n"] == 4


@pytest.mark.parametrize("args,message", [
    (["--sampler", "sde", "--ddim-eta", "0.5"], "sampler 'sde' takes options t_end, grid, noising, found ddim_eta"),
    (["--sampler", "ddpm", "--gradient", "adjoint"], "'adjoint' needs a continuous-time solver"),
    (["--sampler", "ld", "--t-star", "0.1"], "sampler 'ld' has no t*"),
    (["--sampler", "heun"], "defense.sampler: expected 'sde', 'ode', 'ld', 'ddpm' or 'ddim'"),
])
def test_evaluate_rejects_inconsistent_sampler_options(args, message):
    result = CliRunner().invoke(app, ["evaluate", "--defense", "diffpure"] + args)
    assert result.exit_code != 0 and message in " ".join(result.output.replace("│", " ").split())


def test_sweep_writes_table_plot_and_resumes(tmp_path):
    args = ["sweep", "--param", "t_star", "--values", "0.05,0.1", "--out", str(tmp_path),
            "--n", "4", "--defense", "diffpure", "--dt", "0.05", "--attack", "pgd", "--eps", "0.2",
            "--steps", "1", "--seeds", "0,1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| 0.05 |" in result.output and "| undefended |" in result.output
    for name in ("sweep.md", "sweep.json", "sweep.png", "t_star=0.05/results.json",
                 "t_star=0.1/results.json", "undefended/results.json"):
        assert (tmp_path / name).is_file(), name
    runs = json.loads((tmp_path / "sweep.json").read_text())["runs"]
    assert [r["config"]["defense"]["t_star"] for r in runs] == [0.05, 0.1]
    resumed = CliRunner().invoke(app, args)
    assert resumed.exit_code == 0 and resumed.output.count("reusing") == 3, resumed.output
    bad = CliRunner().invoke(app, args[:1] + ["--param", "sampler", "--values", "0.1", "--defense",
                                              "diffpure"])
    assert bad.exit_code != 0 and "expected a numeric purifier option" in bad.output
    no_attack = CliRunner().invoke(app, args[:1] + ["--param", "eot", "--values", "2",
                                                    "--defense", "diffpure"])
    assert no_attack.exit_code != 0 and "found no attack" in no_attack.output
