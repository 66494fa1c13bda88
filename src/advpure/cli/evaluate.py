"""``advpure evaluate``, ``sweep``, ``table``, ``report`` and ``models``: the engine's commands."""
from __future__ import annotations

from pathlib import Path

import typer

from .app import app
from .options import (
    bad_parameters,
    parse_list,
    reported_run_errors,
    with_eval_options,
    with_executor_options,
)


@app.command()
@with_eval_options()
@with_executor_options
def evaluate(
    out: Path = typer.Option(Path("runs/latest"), help="run directory to write"),
    config=None,
    executor=None,
) -> None:
    """Standard and robust accuracy (mean ± std over seeds); writes a run directory.

    Every finished batch is recorded at once in --out/records.sqlite: started again with the
    same config, an interrupted run resumes where it stopped.
    """
    from ..evaluation import run_evaluation
    from ..reports import results_table, write_run

    if config.defenses:
        raise typer.BadParameter("the experiment file lists several defenses: run it with "
                                 "`advpure table --config FILE`")
    with reported_run_errors():
        result = run_evaluation(config, out_dir=out, executor=executor)
    write_run(result, out)
    typer.echo(results_table([result]))
    typer.echo(f"wrote {out}")


def _sweep_help() -> str:
    from ..reports.sweep import ATTACK_SWEEPABLE, MODEL_SWEEPABLE, numeric_sweepable

    return (f"the option to vary: a numeric purifier option ({', '.join(numeric_sweepable())}); "
            f"a model ({', '.join(MODEL_SWEEPABLE)}); or an attack option set on every attack "
            f"({', '.join(ATTACK_SWEEPABLE)})")


@app.command()
@with_eval_options()
@with_executor_options
def sweep(
    param: str = typer.Option("t_star", help=_sweep_help()),
    values: str = typer.Option(..., help="comma-separated values, e.g. 0.025,0.05,0.1,0.2 "
                               "(model specs for a model)"),
    out: Path = typer.Option(Path("runs/sweep"), help="directory: one run per value, sweep.md, "
                             "sweep.json, sweep.png"),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline",
                                  help="also evaluate the undefended classifier"),
    config=None,
    executor=None,
) -> None:
    """Standard and robust accuracy against one purifier option (DiffPure Fig. 3) or model
    (AGDM Fig. 3c: one trained φ per value).

    Finished runs in --out with the same config are reused: an interrupted sweep resumes.
    """
    from ..reports.sweep import MODEL_SWEEPABLE, run_sweep, sweep_table

    kind = str if param in MODEL_SWEEPABLE else float
    with bad_parameters(), reported_run_errors():
        result = run_sweep(config, param, list(parse_list(values, kind)), out, baseline,
                           executor=executor)
    typer.echo(sweep_table(result))
    typer.echo(f"wrote {out}/sweep.md, sweep.json, sweep.png")


def _registered_purifiers() -> list[str]:
    from ..purifiers import PURIFIERS
    from ..settings import command_line

    return list(command_line(PURIFIERS))


def _first_purifier(options: dict, own: dict) -> None:
    """Without --defense, the purifier options on the command line belong to the first
    purifier of --defenses (its options; the common ones, dt or gradient, go to every row)."""
    if options["defense"] is None:
        named = [d for d in parse_list(own["defenses"], str) if d != "none"]
        options["defense"] = named[0] if named else None


@app.command()
@with_eval_options(prepare=_first_purifier)
@with_executor_options
def table(
    defenses: str = typer.Option(",".join(_registered_purifiers()), help="comma-separated "
                                 "purifiers, each at its defaults; the purifier options apply "
                                 "to the one --defense names (else the first listed), the "
                                 "common ones (dt, gradient, ensemble, …) to every row; an "
                                 "experiment file's 'defenses' list replaces them"),
    out: Path = typer.Option(Path("runs/table"), help="directory: one run per defense, "
                             "table.md, table.csv, table.json"),
    config=None,
    executor=None,
) -> None:
    """The papers' table: standard and per-attack robust accuracy for several defenses under
    the same attacks (e.g. --protocol diffpure); finished runs are reused."""
    from ..reports.table import run_table, table_configs, table_markdown

    with bad_parameters(), reported_run_errors():
        result = run_table(config, table_configs(config, list(parse_list(defenses, str))),
                           out, executor=executor)
    typer.echo(table_markdown(result, config))
    typer.echo(f"wrote {out}/table.md, table.csv, table.json")


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="a run directory (with records.sqlite)"),
    out: Path = typer.Option(None, help="where to write the tables (default: RUN_DIR)"),
) -> None:
    """Rebuild a run's tables (results.md, .json, .csv) from its record store alone."""
    from ..reports.report import load_run, report_text, write_run

    with bad_parameters():
        result = load_run(run_dir)
    write_run(result, out or run_dir)
    typer.echo(report_text(result))
    typer.echo(f"wrote {out or run_dir}/results.md, results.json, results.csv")


@app.command()
def models(
    specs: list[str] = typer.Argument(None, help="specs to load and check (none: list the forms)"),
) -> None:
    """List the model specs advpure understands, or load the given ones with every check
    (keys, shapes, parameter count) and say what they are."""
    from ..models.registry import catalog, check_spec

    if not specs:
        typer.echo(catalog())
        return
    for spec in specs:
        try:
            typer.echo(check_spec(spec))
        except (ValueError, FileNotFoundError) as err:
            raise typer.BadParameter(str(err)) from None
