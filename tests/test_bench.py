"""The benchmark commands run end to end on tiny settings (their figures go in notes, not here)."""
import json

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
                                      "--workloads", "digits", "--steps", "2",
                                      "--modes", "exact,checkpoint", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "gradients.json").read_text())
    assert {(r["mode"], r["steps"]) for r in rows} == {("bare", 1), ("exact", 2), ("checkpoint", 2)}
    assert all(r["seconds"] > 0 and r["peak_bytes"] >= 0 for r in rows)
    assert (tmp_path / "gradients.png").is_file() and "checkpoint/exact" in result.output


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
