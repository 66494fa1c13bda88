"""One reverse-SDE step of each bench workload: the bytes its whole and its selective graph
keep (diffusion.budget.graph_bytes), and the first-call timing of bf16 autocast against fp32."""
import warnings
import torch
from advpure.accelerate import Autocast
from advpure.benchmarks.gradients import WORKLOADS, build_model
from advpure.diffusion import VPSchedule, reverse_sde_step
from advpure.diffusion.budget import graph_bytes

torch.set_num_threads(1)
for name, batch in (("digits", 64), ("unet32", 8)):
    w = WORKLOADS[name]
    model = build_model(w, "cpu")
    x = torch.rand(batch, *w.shape).requires_grad_(True)
    step = reverse_sde_step(model, VPSchedule())
    whole = graph_bytes(lambda: step(x, 0.1, 0.099, torch.randn_like(x)), x.device)[1]
    lean = graph_bytes(lambda: step(x, 0.1, 0.099, torch.randn_like(x)), x.device, True)[1]
    fast = Autocast(model, torch.bfloat16)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        fast(x.detach(), torch.full((batch,), 0.1))
    print(f"{name} batch {batch}: whole graph {whole / 2**20:.1f} MiB, selective "
          f"{lean / 2**20:.1f} MiB ({100 * lean / whole:.0f} %); bf16 "
          f"{1e3 * fast.speed['bf16']:.1f} ms vs fp32 {1e3 * fast.speed['fp32']:.1f} ms per call "
          f"({fast.speed['bf16'] / fast.speed['fp32']:.1f}×); warned: {[str(m.message)[:60] for m in said]}")
