"""Run directories and experiment files written by advpure 0.1.0 (one config model with every
field of every purifier and attack) still load: ``advpure report`` rebuilds the same tables."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from advpure.cli import app
from advpure.evaluation.config import EvalConfig
from advpure.evaluation.stats import wilson_interval

DATA = Path(__file__).parent / "data"


def test_a_0_1_0_run_directory_reports_the_same_tables(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(DATA / "legacy-0.1.0-run", run)
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    old = (run / "results-0.1.0.md").read_text().splitlines()
    new = (run / "results.md").read_text().splitlines()
    unlogged = "Attacks that keep no log of their draws"     # 0.1.0 kept no attack_broken
    assert any(line.startswith(unlogged) for line in new)
    new = [line for k, line in enumerate(new) if not line.startswith(unlogged)
           and not (line == "" and k + 1 < len(new) and new[k + 1].startswith(unlogged))]
    assert len(old) == len(new)

    def numbers(line: str) -> str:         # the intervals are over images since 0.1.0
        return re.sub(r" \[[0-9.]+, [0-9.]+\]", "", line)
    for before, now in zip(old, new):      # the same numbers; all-draws accuracy and
        if before.startswith("|---"):      # DiffHammer's rule added since
            assert now in (before, before + "---|---|")
        elif before.startswith("|") and before.count("|") == 4:
            assert numbers(now).rsplit(" |", 3)[0] + " |" == numbers(before)
        elif before.startswith("Dataset"):          # "seeds 0, 1, 1 purification draw(s)"
            assert now.split("; seeds")[0] == before.split(", seeds")[0]
            assert "; seeds 0, 1; 1 purification draw per final" in now
        elif not before.startswith("Mean ± sample std"):
            assert now.startswith(before.removesuffix("."))
    # 4 images × 2 seeds, all correct: 0.1.0 pooled 8 pairs ([67.6, 100]); now 4 images
    low, _ = wilson_interval(4, 4)
    assert f"[{100 * low:.1f}, 100.0]" in "\n".join(new) and "[67.6, 100.0]" in "\n".join(old)


def test_a_0_1_0_config_reads_as_the_new_settings():
    old = json.loads((DATA / "legacy-0.1.0-config.json").read_text())
    cfg = EvalConfig.model_validate(old)
    assert cfg.defense.name == "hetero" and cfg.defense.tau == 0.7 and cfg.defense.t_large == 0.2
    assert [a.key() for a in cfg.attacks] == [
        "stadv(bound=0.05, 2 steps)", "autoattack-linf(rand, eps=0.1, 20 steps, EOT 20)",
        "square-linf(eps=0.0314, 100 queries)"]
    assert EvalConfig.model_validate(cfg.model_dump()) == cfg     # the new form round-trips


def test_a_0_1_0_option_that_mattered_is_named():
    old = json.loads((DATA / "legacy-0.1.0-config.json").read_text())
    old["defense"]["sampler"] = "ode"          # 0.1.0 refused it too; now named, not dropped
    with pytest.raises(ValueError, match="purifier 'hetero' takes no option sampler='ode'"):
        EvalConfig.model_validate(old)
