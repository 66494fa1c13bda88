"""The registries are the one source of truth: a purifier or an attack added as one module plus
one registry line appears in configs, describe, tables and the CLI; the table keeps every
common option for every row."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import blur_plugin
import pytest

from advpure.settings import command_line
from advpure.attacks import ATTACKS
from advpure.evaluation.config import EvalConfig, config_from_flat
from advpure.evaluation.experiment import describe
from advpure.purifiers import PURIFIERS, PurifierSettings
from advpure.reports.table import run_table, table_configs

TESTS = Path(__file__).parent


@pytest.fixture
def plugin(monkeypatch):
    blur_plugin.register(monkeypatch_dict(monkeypatch, PURIFIERS),
                         monkeypatch_dict(monkeypatch, ATTACKS))


def monkeypatch_dict(monkeypatch, registry: dict) -> dict:
    """A view whose assignments are undone after the test."""
    class Undoing(dict):
        def __setitem__(self, key, value):
            monkeypatch.setitem(registry, key, value)
    return Undoing()


def test_a_registered_purifier_and_attack_are_configs_and_labels(plugin):
    cfg = EvalConfig.model_validate({"defense": {"name": "blur", "sigma": 0.5, "gradient": "bpda"},
                                     "attacks": [{"name": "noise", "eps": 0.1}]})
    assert describe(cfg) == "blur(σ=0.5) [bpda gradient] vs noise-linf(eps=0.1)"
    assert EvalConfig.model_validate(cfg.model_dump()) == cfg
    with pytest.raises(ValueError, match="purifier 'blur' takes no option tau=0.5"):
        EvalConfig.model_validate({"defense": {"name": "blur", "tau": 0.5}})
    flat = config_from_flat({"defense": "blur", "sigma": 2.0, "attack": "noise", "eps": 0.3})
    assert flat.defense.sigma == 2.0 and flat.attacks[0].key() == "noise-linf(eps=0.3)"


def test_a_registered_purifier_is_a_row_of_the_table(plugin, tmp_path):
    base = config_from_flat({"defense": "blur", "sigma": 0.5, "n": 4, "standard_n": 4,
                             "attack": "noise", "eps": 0.1, "batch_size": 4})
    configs = table_configs(base, ["none", "blur"])
    table = run_table(base, configs, tmp_path, progress=False)
    assert [row["defense"] for row in table["rows"]] == ["none", "blur(σ=0.5)"]
    assert "blur(σ=0.5)" in (tmp_path / "table.md").read_text()


def test_a_registered_purifier_and_attack_are_flags(tmp_path):
    code = ("import sys; sys.path.insert(0, sys.argv.pop(1)); import blur_plugin; "
            "blur_plugin.register(); from advpure.cli import app; app(prog_name='advpure')")
    env = os.environ | {"COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-c", code, str(TESTS), "evaluate", "--help"],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert "--sigma" in out and "blur: standard deviation of the Gaussian" in out
    assert "gdmp | lm | blur" in out and "lf | noise" in out


def test_the_table_keeps_every_common_option_for_every_row():
    """The bug of 0.1.0: `advpure table` dropped purify_size for every row but the first."""
    base = config_from_flat({"defense": "diffpure", "dt": 0.05, "purify_size": 16,
                             "gradient": "checkpoint", "ensemble": 2, "diffusion": "builtin:x"})
    rows = table_configs(base, list(command_line(PURIFIERS)))
    fields = [f for f in PurifierSettings.model_fields if f != "name"]
    assert "purify_size" in fields
    common = {f: getattr(base.defense, f) for f in fields}
    for cfg in rows[1:]:
        kept = {f: v for f, v in common.items() if f != "dt" or cfg.defense.name != "lm"}
        assert {f: getattr(cfg.defense, f) for f in kept} == kept, cfg.defense.name
    assert rows[0].defense.name == "none"


def test_the_table_cli_gives_the_purifier_flags_to_the_first_purifier(tmp_path):
    from typer.testing import CliRunner

    from advpure.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["table", "--defenses", "none,coup", "--guidance-scale", "0",
                                 "--dt", "0.05", "--n", "2", "--standard-n", "2",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "table.json").read_text())["rows"]
    assert [r["defense"] for r in rows] == ["none", "coup(t*=0.1, λ=0, dt=0.05)"]
