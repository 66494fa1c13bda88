"""Evaluation protocols: statistics by hand, the record store, reports, protocols, experiment
files."""
import csv
import json
import math
import shutil

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from advpure.cli import app
from advpure.evaluation import AttackConfig, EvalConfig
from advpure.evaluation.config import config_from_flat, read_experiment_file
from advpure.evaluation.protocols import protocol_attacks
from advpure.evaluation.results import EvalResult
from advpure.evaluation.stats import (papers_rule, single_draw_correct, vote_correct,
                                      wilson_interval)
from advpure.evaluation.store import Outcome, RecordStore


def test_wilson_interval_by_hand():
    low, high = wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)   # the textbook example
    z = 1.959963984540054
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    half = z / (1 + z * z / 10) * (0.8 * 0.2 / 10 + z * z / 400) ** 0.5
    assert (low, high) == pytest.approx((centre - half, centre + half))
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_votes_worst_case_and_papers_rule_by_hand():
    assert single_draw_correct([1, 1, 2], 1) == pytest.approx(2 / 3)
    assert vote_correct([1, 1, 2], 1) == 1.0 and vote_correct([1, 2], 1) == 0.5  # half a vote
    assert vote_correct([1, 2, 3], 1) == pytest.approx(1 / 3) and vote_correct([1, 2, 2], 1) == 0
    assert vote_correct([2, 2, 1, 3], 1) == 0.0
    assert papers_rule({"standard": 0.6, "rand": 0.55}) == 0.55


def fixed_result() -> EvalResult:
    """Two seeds, three images, two AutoAttack versions, two draws each."""
    cfg = EvalConfig(n=3, seeds=(0, 1), draws=2, attacks=(
        AttackConfig(name="autoattack", eps=0.1), AttackConfig(name="autoattack", eps=0.1,
                                                              version="rand")))
    std, rand = (a.key() for a in cfg.attacks)
    preds = {  # (seed, attack) -> predictions of images 10, 11, 12 (labels 1, 2, 3)
        (0, "clean"): [(1, 1), (2, 2), (3, 0)], (1, "clean"): [(1, 1), (2, 2), (3, 3)],
        (0, std): [(1, 0), (2, 2), (0, 0)], (1, std): [(1, 1), (0, 0), (3, 3)],
        (0, rand): [(1, 1), (0, 2), (3, 3)], (1, rand): [(1, 1), (2, 2), (0, 3)]}
    outcomes = [Outcome(seed, attack, 10 + k, 1 + k, p, 0.1)
                for (seed, attack), rows in preds.items() for k, p in enumerate(rows)]
    return EvalResult(cfg, [10, 11, 12], [std, rand], outcomes)


def test_aggregation_on_fixed_records():
    r = fixed_result()
    std, rand = r.attacks
    assert r.accuracy("standard") == pytest.approx({"mean": (2.5 / 3 + 1) / 2,
                                                    "std": pytest.approx(0.1178511), "seeds": 2})
    # seed 0: standard 0.5,1,0 → 0.5; seed 1: standard 1,0,1 → 0.667
    assert r.accuracy(std)["mean"] == pytest.approx((0.5 + 2 / 3) / 2)
    # worst case on fresh draws: the attack chosen on draw 1, draw 2 scored; a tie goes to the
    # attack strongest on draw 1 over the images (here both 2/3 in each seed: the first).
    # seed 0: image 10 std (tie) → 0, 11 rand → 1, 12 std → 0; seed 1: 10 std → 1, 11 std → 0,
    # 12 rand → 1
    assert r.accuracy("robust")["mean"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert r.autoattack_papers_rule()["mean"] == pytest.approx((0.5 + 2 / 3) / 2)
    # all draws, vote, any iterate: the per-image minimum over all R draws (survives every attack)
    for seed in r.config.seeds:
        assert r.robust_correct(seed, "all_draws") == [min(a, b) for a, b in zip(
            r.correct(seed, std, "all_draws"), r.correct(seed, rand, "all_draws"))]
    assert r.draws_scored("robust") == 1 and r.draws_scored("robust", "all_draws") == 2
    # votes, a tie half a vote: seed 0 rand 1, ½, 1; seed 1 rand 1, 1, ½
    assert r.accuracy(rand, "vote")["mean"] == pytest.approx(2.5 / 3)
    # the image is the unit: per-image worst case averaged over the seeds, (0 + 1) / 2, … →
    # 0.5 each: 1.5 of 3 images, not 3 of 6 pairs; no spread, so the effective n is n
    by_image = r.interval("robust")
    assert r.per_image("robust") == pytest.approx([0.5, 0.5, 0.5])
    assert (by_image["ci_low"], by_image["ci_high"]) == pytest.approx(wilson_interval(1.5, 3))
    assert by_image["n"] == 3 and by_image["n_effective"] == 3


def test_the_store_round_trips_a_run(tmp_path):
    r = fixed_result()
    store = RecordStore(tmp_path / "records.sqlite")
    run_id = store.begin_run(r.config.model_dump_json())
    store.add(run_id, r.outcomes)
    back = store.outcomes(run_id)
    assert back == r.outcomes
    assert store.run(run_id)["config_hash"] == store.runs()[0]["config_hash"]
    store.close()


def test_report_on_a_copied_run_directory_reproduces_the_tables(tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["evaluate", "--defense", "diffpure", "--dt", "0.05",
                                      "--n", "6", "--seeds", "0,1", "--draws", "3", "--attack",
                                      "pgd", "--eps", "0.2", "--steps", "2", "--eot", "2",
                                      "--out", str(run)])
    assert result.exit_code == 0, result.output
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    for name in ("results.md", "results.csv", "results.json"):
        (copy / name).unlink()
    result = CliRunner().invoke(app, ["report", str(copy)])
    assert result.exit_code == 0, result.output
    for name in ("results.md", "results.csv"):
        assert (copy / name).read_text() == (run / name).read_text()
    original, rebuilt = (json.loads((d / "results.json").read_text()) for d in (run, copy))
    for summary in (original, rebuilt):
        for seed in summary["per_seed"]:
            seed.pop("seconds")
    assert original == rebuilt
    bad = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert bad.exit_code != 0 and "records.sqlite" in bad.output


def test_protocols_cap_budgets_and_say_so():
    cfg = EvalConfig(protocol="diffpure", max_steps=5, max_eot=2, max_queries=10)
    full = protocol_attacks("diffpure", "digits")
    used = cfg.resolved_attacks()
    assert [a.name for a in used] == ["autoattack", "autoattack", "bpda"]
    assert all(a.steps <= 5 and a.eot_copies() <= 2 for a in used)
    assert full[1].eot_copies() == 20 and full[2].step_size == pytest.approx(0.05)
    lines = cfg.budget_reductions()
    assert any("EOT 2 of 20" in line and "5 of 100 steps" in line for line in lines)
    assert EvalConfig(protocol="agdm").budget_reductions() == []
    cifar = protocol_attacks("leekim", "cifar10")[0]
    assert (cifar.eps, cifar.step_size, cifar.steps, cifar.eot) == pytest.approx(
        (8 / 255, 0.007, 200, 20))


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ValidationError, match="either a protocol or attacks"):
        EvalConfig(protocol="coup", attacks=(AttackConfig(name="pgd"),))
    with pytest.raises(ValidationError, match="cap a protocol's budgets"):
        EvalConfig(max_steps=3)
    with pytest.raises(ValueError, match="attack 'pgd' takes no option version='rand'"):
        AttackConfig(name="pgd", version="rand")
    with pytest.raises(ValueError, match="standard version has no EOT"):
        AttackConfig(name="autoattack", eot=4)
    with pytest.raises(ValidationError, match="needs a purifier"):
        EvalConfig(attacks=(AttackConfig(name="diffusion"),))
    legacy = EvalConfig.model_validate({"attack": {"name": "pgd", "eps": 0.1}})
    assert [a.eps for a in legacy.attacks] == [0.1]
    base = {"attacks": [{"name": "pgd", "eps": 0.1}, {"name": "apgd", "eps": 0.1}]}
    with pytest.raises(ValueError, match="lists 2 attacks"):
        config_from_flat({"eps": 0.2}, base)


def test_experiment_files_yaml_and_their_errors(tmp_path):
    good = tmp_path / "exp.yaml"
    good.write_text("dataset: digits\nn: 4\ndefense: {name: diffpure, dt: 0.05}\n"
                    "attacks:\n  - {name: pgd, eps: 0.2, steps: 1}\n  - {name: transfer, eps: 0.2,"
                    " steps: 1}\nseeds: [0]\n")
    cfg = config_from_flat({}, read_experiment_file(good))
    assert [a.name for a in cfg.attacks] == ["pgd", "transfer"]
    broken = tmp_path / "broken.yaml"
    broken.write_text("dataset: digits\nattacks: [name: pgd\n")
    with pytest.raises(ValueError, match="broken.yaml: not valid YAML"):
        read_experiment_file(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(ValueError, match="expected a mapping of fields"):
        read_experiment_file(scalar)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("attacks:\n  - {name: pgd, epsilon: 0.2}\n")
    result = CliRunner().invoke(app, ["evaluate", "--config", str(wrong)])
    assert result.exit_code != 0
    assert "attacks: [0] attack 'pgd' takes no option epsilon=0.2" in \
        " ".join(result.output.replace("│", " ").split())
    result = CliRunner().invoke(app, ["evaluate", "--config", str(good), "--out",
                                      str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "pgd-linf(eps=0.2, 1 steps, EOT 1) + transfer-linf(eps=0.2, 1 steps)" in result.output


def test_a_protocol_runs_from_the_command_line(tmp_path):
    result = CliRunner().invoke(app, ["evaluate", "--protocol", "coup", "--max-steps", "2",
                                      "--max-eot", "2", "--max-queries", "5", "--n", "4",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "run" / "results.md").read_text()
    assert "min of standard and rand (papers' rule)" in report
    assert "**Reduced budgets** against protocol `coup`" in report


def test_standard_accuracy_on_the_whole_split_robust_on_a_nested_subset(tmp_path):
    from advpure.evaluation import run_evaluation

    cfg = EvalConfig(n=6, defense={"name": "diffpure", "dt": 0.05},
                     attacks=(AttackConfig(name="pgd", eps=0.2, steps=1),))
    result = run_evaluation(cfg, progress=False, out_dir=tmp_path)
    assert len(result.standard_indices) == 359 and len(result.subset_indices) == 6
    assert set(result.subset_indices) <= set(result.standard_indices)
    assert len(result.correct(0, "clean")) == 359
    same = run_evaluation(cfg.model_copy(update={"standard_n": 6}), progress=False)
    assert same.standard_indices == same.subset_indices == result.subset_indices
    assert same.correct(0, "clean") == result.correct(0, "clean", on_subset=True)
    default = EvalConfig(attacks=(AttackConfig(name="pgd", steps=1),))   # n: 512 or the split
    undefended = run_evaluation(default, progress=False)
    assert len(undefended.subset_indices) == 359 == len(undefended.standard_indices)
    assert undefended.config.n == 359                        # recorded as run
    with pytest.raises(ValueError, match="n: expected at most 359"):   # never clamped
        run_evaluation(default.replace(n=5000), progress=False)
    with pytest.raises(ValidationError, match="standard_n >= n"):
        EvalConfig(n=10, standard_n=5)


def test_sweep_over_the_eot_count_and_the_table_of_defenses(tmp_path):
    common = ["--dt", "0.05", "--n", "4", "--standard-n", "4", "--attack", "pgd", "--eps",
              "0.2", "--steps", "1"]
    result = CliRunner().invoke(app, ["sweep", "--defense", "diffpure", "--param", "eot",
                                      "--values", "1,2", "--no-baseline", *common,
                                      "--out", str(tmp_path / "eot")])
    assert result.exit_code == 0, result.output
    runs = json.loads((tmp_path / "eot" / "sweep.json").read_text())["runs"]
    assert [r["config"]["attacks"][0]["eot"] for r in runs] == [1, 2]
    assert not (tmp_path / "eot" / "undefended").exists()
    result = CliRunner().invoke(app, ["table", "--defenses", "none,diffpure", *common,
                                      "--out", str(tmp_path / "table")])
    assert result.exit_code == 0, result.output
    table = json.loads((tmp_path / "table" / "table.json").read_text())
    assert [r["defense"] for r in table["rows"]] == ["none", "diffpure(t*=0.1, dt=0.05)"]
    for row in table["rows"]:               # one attack: the worst case is that attack
        for kind in ("single_draw", "vote", "all_draws"):
            assert row[f"{kind}: worst case (ours)"] == \
                row[f"{kind}: pgd-linf(eps=0.2, 1 steps, EOT 1)"]
        assert float(row["seconds: pgd-linf(eps=0.2, 1 steps, EOT 1)"]) >= 0
    with open(tmp_path / "table" / "table.csv") as f:       # long form, numbers only
        rows = list(csv.DictReader(f))
    assert {r["kind"] for r in rows} == {"single_draw", "vote", "all_draws", "any_iterate"}
    for row in rows:
        assert int(row["images"]) == 4 and int(row["draws"]) == 1 and int(row["seeds"]) == 1
        assert 0.0 <= float(row["ci_low"]) <= float(row["mean"]) <= float(row["ci_high"]) <= 1
    markdown = (tmp_path / "table" / "table.md").read_text()
    assert "## All-draws accuracy" in markdown and "## Compute time per attack" in markdown
    for text in (markdown, (tmp_path / "eot" / "sweep.md").read_text()):
        assert "robust accuracy on 4 images, standard accuracy on 4" in text
        assert "None" not in text


def test_saved_adversarial_images_come_back_with_the_grid_and_files_list_defenses(tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["evaluate", "--defense", "diffpure", "--dt", "0.05",
                                      "--n", "4", "--standard-n", "4", "--attack", "pgd",
                                      "--eps", "0.2", "--steps", "1", "--save-adversarial",
                                      "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert "grid.png" in (run / "results.md").read_text()
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "grid.png").unlink()
    assert CliRunner().invoke(app, ["report", str(copy)]).exit_code == 0
    assert (copy / "grid.png").read_bytes() == (run / "grid.png").read_bytes()
    exp = tmp_path / "table.yaml"
    exp.write_text("n: 4\nstandard_n: 4\nattacks: [{name: pgd, eps: 0.2, steps: 1}]\n"
                   "defenses:\n  - {name: none}\n  - {name: diffpure, dt: 0.05, t_star: 0.05}\n")
    result = CliRunner().invoke(app, ["table", "--config", str(exp), "--out",
                                      str(tmp_path / "table")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "table" / "table.json").read_text())["rows"]
    assert [r["defense"] for r in rows] == ["none", "diffpure(t*=0.05, dt=0.05)"]
    refused = CliRunner().invoke(app, ["evaluate", "--config", str(exp)])
    assert refused.exit_code != 0 and "advpure table --config" in refused.output


def _small_run(tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["evaluate", "--n", "3", "--standard-n", "3", "--draws", "2",
                                      "--attack", "pgd", "--eps", "0.2", "--steps", "1",
                                      "--out", str(run)])
    assert result.exit_code == 0, result.output
    return run


def test_a_tampered_store_is_refused_naming_the_rows(tmp_path):
    import sqlite3

    run = _small_run(tmp_path)
    with sqlite3.connect(run / "records.sqlite") as db:     # flip one stored outcome
        db.execute("UPDATE outcomes SET single_draw = 1 - single_draw, vote = 1 - vote "
                   "WHERE rowid = (SELECT MIN(rowid) FROM outcomes WHERE attack != 'clean')")
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code != 0
    output = " ".join(result.output.replace("│", " ").split())
    assert "1 stored outcome(s) disagree with their own predictions" in output
    assert "row " in output and "refusing to report" in output


def test_a_corrupt_store_and_an_empty_one_say_what_to_do(tmp_path):
    run = _small_run(tmp_path)
    (run / "records.sqlite").write_bytes(b"not a database" * 100)
    result = CliRunner().invoke(app, ["report", str(run)])
    output = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code != 0 and "is corrupt" in output and "another --out" in output
    (run / "records.sqlite").unlink()
    RecordStore(run / "records.sqlite").close()
    result = CliRunner().invoke(app, ["report", str(run)])
    output = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code != 0 and "holds no run" in output and "command again" in output


def test_results_csv_holds_numbers(tmp_path):
    import csv

    run = _small_run(tmp_path)
    with open(run / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["accuracy"] for r in rows] == ["standard", "pgd-linf(eps=0.2, 1 steps, EOT 1)",
                                             "robust"]
    for row in rows:
        for key, value in row.items():
            if key not in ("defense", "accuracy"):
                assert 0.0 <= float(value) <= max(1.0, float(row["images"]))
    markdown = (run / "results.md").read_text()
    assert "± 0.0" not in markdown and "seed 0; 2 purification draws per final" in markdown


def test_without_an_attack_there_is_no_robust_column(tmp_path):
    run = tmp_path / "clean"
    result = CliRunner().invoke(app, ["evaluate", "--n", "3", "--standard-n", "3",
                                      "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert "robust" not in (run / "results.md").read_text().split("\n\n")[1]
    assert "robust=" not in result.output
    assert "robust" not in (run / "results.csv").read_text()


def test_a_budget_sweep_says_when_the_attack_has_not_converged():
    from advpure.evaluation.stats import detectable_effect
    from advpure.reports.sweep import Sweep, convergence_note

    def summary(correct):
        return {"per_seed": [{"adv_correct": correct}],
                "robust_accuracy": {"mean": sum(correct) / len(correct), "std": 0.0, "seeds": 1}}
    falling = Sweep("steps", [10, 20, 40], [summary([1.0] * 10), summary([0.0] * 10),
                                            summary([0.0] * 10)], None)
    note = convergence_note(falling)
    # 10 images lost, none gained: two-sided p = 2·½¹⁰ = 0.00195
    assert "Not converged" in note and "from steps 10 to 20" in note and "p = 0.002" in note
    assert "from steps 10 to 40" in note and "from steps 20 to 40" not in note
    level = Sweep("eot", [1, 2], [summary([1.0, 0.0] * 5), summary([0.0, 1.0] * 5)], None)
    quiet = convergence_note(level)
    assert "No significant fall" in quiet and "levelled" not in quiet
    assert f"detects a fall of {100 * detectable_effect(10, 0.01):.0f} points" in quiet
    # a gradual fall: 3 images per step, never significant between neighbours (2·½³ = 0.25)
    # but 9 of 9 end to end (2·½⁹ = 0.0039)
    gradual = Sweep("steps", [5, 10, 20, 40], [summary([1.0] * 9 + [0.0] * (9 - k) + [1.0] * k)
                                               for k in (9, 6, 3, 0)], None)
    note = convergence_note(gradual)
    assert "from steps 5 to 40" in note and "from steps 5 to 10" not in note
    assert convergence_note(Sweep("t_star", [0.1, 0.2], falling.summaries[:2], None)) == ""


def test_the_demo_grid_captions_are_the_recorded_predictions():
    from advpure.studies.demo import recorded_captions

    r = fixed_result()
    seed, attack = r.config.seeds[0], r.attacks[0]
    recorded = {o.sample_index: o for o in r.outcomes if o.seed == seed and o.attack == attack}
    captions = recorded_captions(r, r.subset_indices)
    for index, caption in zip(r.subset_indices, captions):
        o = recorded[index]
        right = sum(p == o.label for p in o.predictions)
        assert caption == f"pred. {' '.join(map(str, o.predictions))} ({right}/{len(o.predictions)})"


def test_report_rebuilds_a_store_whose_rows_are_out_of_order(tmp_path):
    """A Ray run may write the standard-only images first: the robust subset is the attacked
    images, not the first n rows."""
    import json
    import sqlite3

    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["evaluate", "--n", "2", "--standard-n", "4", "--draws", "2",
                                      "--attack", "pgd", "--eps", "0.2", "--steps", "1",
                                      "--out", str(run)])
    assert result.exit_code == 0, result.output
    before = json.loads((run / "results.json").read_text())
    with sqlite3.connect(run / "records.sqlite") as db:      # the same rows, written backwards
        db.execute("CREATE TABLE shuffled AS SELECT * FROM outcomes ORDER BY rowid DESC")
        db.execute("DELETE FROM outcomes")
        db.execute("INSERT INTO outcomes SELECT * FROM shuffled")
        db.execute("DROP TABLE shuffled")
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    after = json.loads((run / "results.json").read_text())
    assert after["subset_indices"] == before["subset_indices"]
    assert after["accuracies"] == before["accuracies"]


def test_effective_n_holm_and_the_sign_test_by_hand():
    from advpure.evaluation.stats import (accuracy_summary, clopper_pearson, effective_n, holm,
                                          images_for_power, paired_sign_test, sign_test_power)

    # means 0.25, 0.75 (p̂ = ½, s² = 1/16): n_eff = 2·¼/(1/16) = 8, capped by the 2·8 draws
    assert effective_n([0.25, 0.75], observations=8) == pytest.approx(8.0)
    assert effective_n([0.25, 0.75], observations=2) == pytest.approx(4.0)   # the cap
    assert effective_n([1.0, 0.0, 1.0, 1.0]) == pytest.approx(4.0)           # 0/1: n itself
    assert effective_n([0.5, 0.5]) == 2.0 and effective_n([1.0, 1.0]) == 2.0  # s² = 0, p̂ = 1
    summary = accuracy_summary([0.25, 0.75], observations=8)
    assert (summary["ci_low"], summary["ci_high"]) == pytest.approx(wilson_interval(4, 8))
    # Holm: sorted p 0.01, 0.02, 0.04 times 3, 2, 1, made monotone
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    # the sign test and its interval agree: 8 of 8 one way, p = 2/256, the interval excludes ½
    tested = paired_sign_test([0.0] * 8 + [1.0], [1.0] * 9)
    assert tested["p_value"] == pytest.approx(2 / 256)
    assert tested["share_low"] > 0.5 and clopper_pearson(8, 8)[1] == 1.0
    tied = paired_sign_test([0.0] * 5 + [1.0] * 3, [1.0] * 5 + [0.0] * 3)
    assert tied["p_value"] >= 0.05 and tied["share_low"] < 0.5 < tied["share_high"]
    # power at α = 0.01: 8 images one way are needed (2/256 < 0.01 < 2/128)
    assert sign_test_power(64, 0.10, 0.01) == pytest.approx(1 - sum(
        math.comb(64, k) * 0.1 ** k * 0.9 ** (64 - k) for k in range(8)))
    n = images_for_power(0.10, 0.01)
    assert sign_test_power(n, 0.10, 0.01) >= 0.8 > sign_test_power(n - 1, 0.10, 0.01)
