"""`advpure bench gpu`: exits cleanly without CUDA; its code path runs on tiny models (CPU)."""
import json

import torch
from typer.testing import CliRunner

from advpure.benchmarks import gpu
from advpure.cli import app


def test_without_cuda_the_command_says_so_and_exits_zero(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(app, ["bench", "gpu", "--out", str(tmp_path / "gpu")])
    assert result.exit_code == 0
    assert "needs a CUDA device" in result.output and not (tmp_path / "gpu").exists()


def test_the_benchmark_code_path_on_tiny_models(tmp_path):
    text = gpu.run(tmp_path, device="cpu", quick=True, repeats=1)
    rows = json.loads((tmp_path / "gpu.json").read_text())["results"][0]
    modes = {(g["precision"], g["mode"]) for g in rows["gradients"]}
    assert modes == {(p, m) for p in ("fp32", "bf16") for m in
                     ("exact", "checkpoint", "checkpoint 25 %", "checkpoint 50 %",
                      "checkpoint 100 %")}
    assert rows["images_per_second"] > 0 and rows["eot"]["speedup"] > 0
    assert rows["projection"]["hours"] > 0
    assert "projected AutoAttack rand" in text and "EOT-20, one image" in text
