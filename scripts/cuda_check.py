"""CUDA check of BrainSymphony: CUDA vs CPU outputs and GPU throughput (run once on a GPU machine).

Usage: python scripts/cuda_check.py    (finishes in well under 3 minutes on an H100)
"""

from __future__ import annotations

import sys
import time

import torch

from brainsymphony import BrainSymphony, BrainSymphonyConfig


def _inputs(batch: int, config: BrainSymphonyConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    fmri = torch.randn(batch, config.n_regions, config.n_timepoints, generator=generator)
    sc = torch.randn(batch, config.n_regions, config.n_regions, generator=generator) * 0.5
    return fmri, (sc + sc.transpose(1, 2)) / 2


def _throughput(model, fmri, sc, *, bf16: bool, repeats: int = 5) -> float:
    def run():
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=bf16):
            return model(fmri=fmri, sc=sc)

    run()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    torch.cuda.synchronize()
    return fmri.shape[0] * repeats / (time.perf_counter() - start)


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device; nothing to check")
        return 1
    torch.manual_seed(0)
    config = BrainSymphonyConfig.published()
    model = BrainSymphony(config).eval()
    fmri, sc = _inputs(2, config, seed=1)
    with torch.inference_mode():
        cpu = model(fmri=fmri, sc=sc, attention=True)
    model = model.cuda()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with torch.inference_mode():
        gpu = model(fmri=fmri.cuda(), sc=sc.cuda(), attention=True)
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    print(f"{'output':<28}{'max |cuda - cpu|':>18}")
    worst = 0.0
    for name in ("functional", "structural", "fused", "reconstruction", "perceiver_region_attention"):
        diff = float((getattr(gpu, name).cpu() - getattr(cpu, name)).abs().max())
        worst = max(worst, diff) if name != "reconstruction" else worst
        print(f"{name:<28}{diff:>18.2e}")
    print(f"{'batch':>6}{'fp32 subj/s':>14}{'bf16 subj/s':>14}{'peak GB':>10}")
    for batch in (1, 16):
        torch.cuda.reset_peak_memory_stats()
        fmri, sc = (t.cuda() for t in _inputs(batch, config, seed=2))
        fp32 = _throughput(model, fmri, sc, bf16=False)
        bf16 = _throughput(model, fmri, sc, bf16=True)
        print(f"{batch:>6}{fp32:>14.1f}{bf16:>14.1f}{torch.cuda.max_memory_allocated() / 1e9:>10.2f}")
    ok = worst < 1e-3
    print("CUDA vs CPU agreement:", "OK" if ok else f"FAILED (worst embedding difference {worst:.2e})")
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
