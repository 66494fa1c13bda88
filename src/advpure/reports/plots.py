"""The one plotting helper: a headless matplotlib figure saved and closed in one place."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def figure(path: Path, rows: int = 1, cols: int = 1, size: tuple[float, float] = (5.5, 4.0),
           dpi: int = 120) -> Iterator[tuple[object, object]]:
    """``(fig, axes)`` with ``axes`` a rows × cols array, drawn headless (Agg); when the block
    ends the figure is laid out tightly and saved to ``path`` (its folder created), and it is
    closed whatever happens (after an error nothing is saved)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    try:
        yield fig, axes
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
