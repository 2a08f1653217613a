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
    names = ("functional", "structural", "fused", "reconstruction", "perceiver_region_attention")
    generator = torch.Generator().manual_seed(3)
    nudged_fmri = fmri * (1 + 1e-6 * torch.randn(fmri.shape, generator=generator))
    nudged_sc = sc * (1 + 1e-6 * torch.randn(sc.shape, generator=generator))
    with torch.inference_mode():
        cpu = model(fmri=fmri, sc=sc, attention=True)
        # How much float32 rounding-sized input changes move the outputs: the published signed softmax is
        # discontinuous at S = 0 (a near-zero score that flips sign moves A_ij by 2 / denominator), so the
        # structural stream is sensitive at the 1e-3 level whatever the device.
        nudged = model(fmri=nudged_fmri, sc=nudged_sc, attention=True)
        exact = model.double()(fmri=fmri.double(), sc=sc.double(), attention=True)
    model = model.float().cuda()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with torch.inference_mode():
        gpu = model(fmri=fmri.cuda(), sc=sc.cuda(), attention=True)
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    print(f"{'output':<28}{'|cuda-cpu|':>12}{'|cpu-f64|':>12}{'input 1e-6':>12}  (max abs differences)")
    failed = []
    for name in names:
        ref = getattr(cpu, name)
        cuda_cpu = float((getattr(gpu, name).cpu() - ref).abs().max())
        cpu_f64 = float((ref.double() - getattr(exact, name)).abs().max())
        sensitivity = float((getattr(nudged, name) - ref).abs().max())
        if cuda_cpu > 3 * max(cpu_f64, sensitivity) + 1e-6:
            failed.append(name)
        print(f"{name:<28}{cuda_cpu:>12.2e}{cpu_f64:>12.2e}{sensitivity:>12.2e}")
    print(f"{'batch':>6}{'fp32 subj/s':>14}{'bf16 subj/s':>14}{'peak GB':>10}")
    for batch in (1, 16):
        torch.cuda.reset_peak_memory_stats()
        fmri, sc = (t.cuda() for t in _inputs(batch, config, seed=2))
        fp32 = _throughput(model, fmri, sc, bf16=False)
        bf16 = _throughput(model, fmri, sc, bf16=True)
        print(f"{batch:>6}{fp32:>14.1f}{bf16:>14.1f}{torch.cuda.max_memory_allocated() / 1e9:>10.2f}")
    ok = not failed
    print(
        "CUDA vs CPU agreement (within 3x the float32 rounding and input sensitivity of each output):",
        "OK" if ok else f"FAILED for {', '.join(failed)}",
    )
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
