"""The ``advpure`` command and its groups; each command lives in the module of its group."""
from __future__ import annotations

import shlex
import sys

import click
import typer
import typer.core

VERBOSE = {"on": False}       # -v: tracebacks instead of one-line errors


def user_errors() -> tuple[type[BaseException], ...]:
    """What a user's input causes (wrong flags, files, data, models): one line, no traceback."""
    from .._checks import InputTypeError
    from ..evaluation.store import RunError

    return (ValueError, OSError, RunError, InputTypeError)


class ReportingGroup(typer.core.TyperGroup):
    """The ``advpure`` group: a user error ends the command with its message on one line and
    exit status 2 (``-v``: the traceback); Ctrl-C says what was kept, exit status 130."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as err:
            if VERBOSE["on"]:
                raise
            typer.echo(f"\n{err or 'interrupted'}", err=True)
            raise typer.Exit(130) from None
        except (typer.BadParameter, *user_errors()) as err:
            if VERBOSE["on"]:
                raise
            text = err.message if isinstance(err, typer.BadParameter) else str(err)
            message = " ".join(text.split()) or type(err).__name__
            typer.echo(f"Error: {message} (-v shows the traceback)", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(help="Diffusion-based adversarial purification and its adaptive evaluation.",
                  no_args_is_help=True, pretty_exceptions_enable=False, cls=ReportingGroup)


@app.callback()
def _options(verbose: bool = typer.Option(False, "--verbose", "-v", help="show the traceback "
                                          "of an error instead of its one-line message")) -> None:
    VERBOSE["on"] = verbose
train_app = typer.Typer(help="Train the embedded default's models.", no_args_is_help=True)
app.add_typer(train_app, name="train")
toy_app = typer.Typer(help="The papers' closed-form toy experiments.", no_args_is_help=True)
app.add_typer(toy_app, name="toy")
case_app = typer.Typer(help="The papers' case-study figures.", no_args_is_help=True)
app.add_typer(case_app, name="case-study")
bench_app = typer.Typer(help="Benchmarks and numerical checks: print and save their figures.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def command_line() -> str:
    """The command as typed, for the metadata of what it writes."""
    return "advpure " + " ".join(shlex.quote(a) for a in sys.argv[1:])
