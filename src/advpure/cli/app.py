"""The ``advpure`` command and its groups; each command lives in the module of its group."""
from __future__ import annotations

import shlex
import sys

import typer

app = typer.Typer(help="Diffusion-based adversarial purification and its adaptive evaluation.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
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
