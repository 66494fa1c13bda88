"""The benchmark commands run end to end on tiny settings (their figures go in notes, not here)."""
import json

import pytest
from typer.testing import CliRunner

from advpure.benchmarks import analytic
from advpure.cli import app


def test_analytic_rows_compare_every_mode_with_eq31_and_the_discretisation():
    rows = analytic.analytic_rows(t_star=0.1, variances=(0.05,), steps=(1e-2, 1e-3))
    assert [r["dt"] for r in rows] == [1e-2, 1e-3]
    assert rows[1]["adjoint_vs_eq31"] < rows[0]["adjoint_vs_eq31"]
    assert max(r["exact_vs_discretised"] for r in rows) < 1e-12
    assert "| 0.05 | 1e-03 |" in analytic.format_table(rows)


def test_bench_gradients_measures_each_configuration_in_its_own_process(tmp_path):
    result = CliRunner().invoke(app, ["bench", "gradients", "--out", str(tmp_path),
                                      "--workloads", "digits", "--steps", "4", "--batch", "4",
                                      "--threads", "1", "--modes", "exact,checkpoint",
                                      "--budgets", "0.5,1", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "gradients.json").read_text())
    assert [(r["mode"], r["steps"], r.get("budget")) for r in rows] == [
        ("bare", 1, None), ("exact", 4, None), ("checkpoint", 4, None),
        ("checkpoint", 4, 0.5), ("checkpoint", 4, 1.0)]
    assert all(r["seconds"] > 0 and r["peak_bytes"] >= 0 and r["batch"] == 4 for r in rows)
    assert all(r["bitwise"] for r in rows[2:])                # DiffPure: exact's, bit for bit
    half, full = rows[3]["policies"], rows[4]["policies"]
    assert full == {"graph": 4, "selective": 0, "input": 0}
    assert half["selective"] >= 1 and sum(half.values()) == 4
    assert (tmp_path / "gradients.png").is_file()
    assert "| N | exact | checkpoint | budget 50 % | budget 100 % | gradients against exact's |" \
        in result.output and "| bit for bit |" in result.output


def test_bench_gradients_reports_out_of_memory_at_the_cap(tmp_path):
    result = CliRunner().invoke(app, ["bench", "gradients", "--out", str(tmp_path),
                                      "--workloads", "digits", "--steps", "2,4",
                                      "--modes", "exact", "--repeats", "1", "--cap-gb", "0.01"])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "gradients.json").read_text())
    exact = [r for r in rows if r["mode"] == "exact"]
    assert all(r.get("oom") for r in exact) and exact[1].get("skipped")
    assert "out of memory (not run)" in result.output


def test_bench_resampling_compares_u_step_with_single_step(tmp_path):
    result = CliRunner().invoke(app, ["bench", "resampling", "--out", str(tmp_path),
                                      "--workloads", "digits", "--jumps", "1,2", "--steps", "4",
                                      "--modes", "checkpoint", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "resampling.json").read_text())
    assert {(r["method"], r["jumps"]) for r in rows} == {
        ("repaint", 1), ("repaint", 2), ("single", 1), ("single", 2)}
    assert all(r["seconds"] > 0 and r["peak_bytes"] >= 0 for r in rows)
    assert (tmp_path / "resampling.png").is_file() and "time saved" in result.output


@pytest.mark.slow
def test_bench_executors_times_local_and_ray_on_the_same_records(tmp_path):
    pytest.importorskip("ray")
    result = CliRunner().invoke(app, ["bench", "executors", "--out", str(tmp_path), "--n", "4",
                                      "--batch-size", "2", "--steps", "1"])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "executors.json").read_text())["rows"]
    assert [(r["executor"], r["workers"], r["threads"]) for r in rows] == [
        ("local", 1, 1), ("local", 1, 2), ("ray", 1, 1), ("ray", 2, 1)]
    assert all(r["seconds"] > 0 for r in rows)
    # one thread per worker: Ray's records are the single-thread local run's, bit for bit
    assert rows[2]["same_records_as_local_1_thread"] and rows[3]["same_records_as_local_1_thread"]
    assert (tmp_path / "executors.png").is_file()


def test_bench_statistics_simulates_every_rule(tmp_path):
    result = CliRunner().invoke(app, ["bench", "statistics", "--out", str(tmp_path),
                                      "--images", "16", "--trials", "10"])
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "statistics.json").read_text())
    assert len(figures["intervals"]) == 9 and len(figures["audit"]) == 2
    for row in figures["intervals"]:
        assert 0.0 <= row["effective_coverage"] <= 1.0
        assert row["effective_width"] <= row["plain_width"] + 1e-12    # never wider
    honest, masked = figures["audit"]
    assert honest["predicted_power"] is None and 0.0 < masked["predicted_power"] < 1.0
    strongest = figures["strongest"]
    assert strongest["some_holm_p_below_0.05"] <= strongest["some_raw_p_below_0.05"]
    assert "Strongest attack and worst case" in (tmp_path / "statistics.md").read_text()
