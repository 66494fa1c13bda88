"""``python -m advpure``: the command line (the same as ``advpure``)."""
from .cli import app

app(prog_name="advpure")
