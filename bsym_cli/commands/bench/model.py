"""``bsym bench model``: throughput, memory, efficiency and bf16 agreement of BrainSymphony.

Every batch size runs in a fresh subprocess so its peak resident memory is its own. Efficiency is
subjects/s x the published reference FLOP count per subject / the machine's fp32 matmul rate measured in the
same run, so it is comparable across machines. The ceiling is what this machine could reach if the softmax
exponentials and the matrix products that no exact rewrite removes were the only work, each at its measured
rate: 1 / (exponentials / exp rate + those FLOPs / matmul rate).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    import torch

    from brainsymphony import BrainSymphonyConfig

#: Targets of docs/architecture.md ("Performance budget").
TARGET_EFFICIENCY = 0.6
TARGET_PEAK_GB = 1.5
TARGET_BF16_COSINE = 0.999
#: Throughput over the authors' implementation, fp32, same machine and run.
TARGET_OVER_AUTHORS = 12


def matmul_rate(*, device: str = "cpu", size: int = 2048, repeats: int = 10, dtype: str = "float32") -> float:
    """Measured matrix-multiply rate, FLOP/s, of (size x size) @ (size x size) on ``device`` in ``dtype``."""
    import torch

    a = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
    b = torch.randn(size, size, device=device, dtype=getattr(torch, dtype))
    for _ in range(2):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2.0 * size**3 * repeats / (time.perf_counter() - start)


def exp_rate(*, device: str = "cpu", elements: int = 1 << 18, repeats: int = 200, dtype: str = "float32") -> float:
    """Measured exponentials per second in ``dtype``, in place on a buffer that fits in the cache (as the
    Perceiver's streamed chunks are meant to)."""
    import torch

    values = torch.full((elements,), -1.0, device=device, dtype=getattr(torch, dtype))
    for _ in range(5):
        values.exp_().fill_(-1.0)
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        values.exp_().fill_(-1.0)
    _sync(device)
    with_fill = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        values.fill_(-1.0)
    _sync(device)
    return elements * repeats / max(with_fill - (time.perf_counter() - start), 1e-9)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _inputs(config: BrainSymphonyConfig, batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random BOLD (B, R, T) and symmetric connectome (B, R, R) on ``device``."""
    import torch

    generator = torch.Generator().manual_seed(1)
    fmri = torch.randn(batch, config.n_regions, config.n_timepoints, generator=generator).to(device)
    sc = torch.randn(batch, config.n_regions, config.n_regions, generator=generator).to(device) * 0.5
    return fmri, (sc + sc.transpose(1, 2)) / 2


def _median_seconds(embed: Callable[[], object], device: str, repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``embed`` after one warm-up call (a shared machine's slow
    passes do not move it)."""
    embed()
    seconds = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        embed()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def _peak_gb(device: str) -> float:
    """Peak memory of this process: allocated on a GPU, resident on the CPU."""
    import resource

    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def _worker(batch: int, device: str, precision: str, repeats: int, threads: int, stream: str = "compiled") -> dict:
    """Run inside a fresh process: time the published model at one batch size; report peak memory.

    ``stream="pytorch"`` runs the Perceiver's PyTorch key stream even where the compiled one is built.
    """
    import torch

    from brainsymphony import BrainSymphony, BrainSymphonyConfig
    from brainsymphony.fused_stream import fused_stream_applies
    from bsym_cli.levels.runtime import freed_memory_kept

    torch.set_num_threads(threads)
    with freed_memory_kept():  # as the app's model stage runs it
        torch.manual_seed(0)
        config = BrainSymphonyConfig.published()
        model = BrainSymphony(config).eval().to(device)
        model.perceiver.fused_stream = stream == "compiled"
        fmri, sc = _inputs(config, batch, device)

        def embed():
            with (
                torch.inference_mode(),
                torch.autocast(device.split(":")[0], torch.bfloat16, enabled=precision == "bf16"),
            ):
                return model(fmri=fmri, sc=sc)

        elapsed = _median_seconds(embed, device, repeats)
        result = {"batch": batch, "device": device, "precision": precision, "subjects_per_s": batch / elapsed}
        with torch.inference_mode():  # where the model ran
            compiled = stream == "compiled" and fused_stream_applies(fmri)
        result["key_stream"] = "compiled" if compiled else "pytorch"
        if precision == "bf16":
            out = embed()
            with torch.inference_mode():
                exact = model(fmri=fmri, sc=sc)
            cosines = []
            for name in ("functional", "structural", "fused"):
                a = getattr(out, name).float().flatten(1)
                b = getattr(exact, name).float().flatten(1)
                cosines.append(float(torch.nn.functional.cosine_similarity(a, b, dim=1).min()))
            result["min_cosine_to_fp32"] = min(cosines)
        result["peak_gb"] = _peak_gb(device)
        return result


def _authors_worker(batch: int, device: str, repeats: int, threads: int, checkout: str) -> dict:
    """Run inside a fresh process: time the authors' implementation from ``checkout`` as :func:`_worker` times
    ours (published configuration, fp32, the same inputs)."""
    import torch

    from brainsymphony import BrainSymphonyConfig
    from bsym_cli.commands.bench.authors import authors_batch, load_authors_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = BrainSymphonyConfig.published()
    model = load_authors_model(Path(checkout), config).to(device)
    inputs = authors_batch(*_inputs(config, batch, device))

    def embed():
        with torch.inference_mode():
            return model(inputs)

    elapsed = _median_seconds(embed, device, repeats)
    return {"batch": batch, "device": device, "subjects_per_s": batch / elapsed, "peak_gb": _peak_gb(device)}


def _run_fresh(call: str, threads: int, what: str) -> dict:
    """The JSON result of ``call`` (a worker call of this module) run in a fresh Python process."""
    code = f"import json; import bsym_cli.commands.bench.model as bench; print(json.dumps(bench.{call}))"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise click.ClickException(f"benchmark worker ({what}) failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _matching_run(runs: list[dict], device: str, batch: int, precision: str, key_stream: str) -> dict | None:
    """The run of ``runs`` with these settings, or None."""
    wanted = (device, batch, precision, key_stream)
    return next((r for r in runs if (r["device"], r["batch"], r["precision"], r["key_stream"]) == wanted), None)


@click.command("model")
@click.option("--batches", default="1,4,16", show_default=True, help="Comma-separated batch sizes.")
@click.option(
    "--repeats", default=5, show_default=True, help="Timed forward passes per batch size (the median is reported)."
)
@click.option("--threads", type=int, default=None, help="CPU threads (default: all available cores).")
@click.option("--bf16-batch", default=4, show_default=True, help="Batch size of the bf16 comparison.")
@click.option(
    "--authors-code",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A checkout of the authors' repository (github.com/Moein-Khajehnejad/BrainSymphony): time their"
    " implementation too, in the same run.",
)
@click.option(
    "--authors-batches",
    default="1,4",
    show_default=True,
    help="Batch sizes of the authors' code (it needs about 1.2 GB a subject).",
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write JSON.")
def model(
    batches: str,
    repeats: int,
    threads: int | None,
    bf16_batch: int,
    authors_code: Path | None,
    authors_batches: str,
    json_path: Path | None,
) -> None:
    """Throughput, peak memory, efficiency and bf16 agreement of the published configuration; with
    ``--authors-code``, the authors' implementation beside it."""
    import torch

    from brainsymphony import BrainSymphonyConfig
    from brainsymphony.flops import PUBLISHED_REFERENCE_FLOPS, exponentials, reference_flops, unavoidable_matmul_flops
    from brainsymphony.fused_stream import fused_stream_available
    from brainsymphony.precision import resolve_precision
    from bsym_cli.commands.bench.authors import authors_checkout

    threads = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    config = BrainSymphonyConfig.published()
    flops = reference_flops(config)
    exps, kept_flops = exponentials(config)["total"], unavoidable_matmul_flops(config)
    report: dict = {"threads": threads, "reference_flops_per_subject": flops["total"], "flops_parts": flops, "runs": []}
    report["authors_runs"] = []
    if authors_code is not None:
        authors_code = authors_checkout(authors_code)  # before any timing; resolved, as workers run elsewhere
        authors_batches = [int(b) for b in authors_batches.split(",")]
    else:
        authors_batches = []
    click.echo(f"analytic reference FLOPs per subject: {flops['total'] / 1e9:.2f} G (published configuration: 32.6 G)")
    for device in devices:
        rate = matmul_rate(device=device)
        report[f"matmul_flops_{device}"] = rate
        click.echo(f"{device}: measured fp32 matmul rate {rate / 1e9:.1f} GFLOP/s ({threads} threads)")
        exp_per_s, bf16_rate = exp_rate(device=device), matmul_rate(device=device, dtype="bfloat16")
        bf16_exp_per_s = exp_rate(device=device, dtype="bfloat16")
        ceiling = {
            "fp32": 1.0 / (exps / exp_per_s + kept_flops / rate),
            "bf16": 1.0 / (exps / exp_per_s + kept_flops / bf16_rate),  # the softmax stays fp32, as in the model
            "bf16_softmax_too": 1.0 / (exps / bf16_exp_per_s + kept_flops / bf16_rate),
        }
        report[f"ceiling_{device}"] = {
            "exp_per_s": exp_per_s,
            "bf16_exp_per_s": bf16_exp_per_s,
            "bf16_matmul_flops": bf16_rate,
            **ceiling,
        }
        click.echo(
            f"  ceiling: {exps / 1e6:.0f} M softmax exponentials per subject at {exp_per_s / 1e9:.2f} G/s"
            f" + {kept_flops / 1e9:.2f} GFLOP of matmuls no exact rewrite removes, at {rate / 1e9:.0f} GFLOP/s fp32"
            f" or {bf16_rate / 1e9:.0f} bf16: at most {ceiling['fp32']:.1f} subjects/s fp32,"
            f" {ceiling['bf16']:.1f} bf16 ({ceiling['bf16'] / ceiling['fp32']:.2f}x); with bf16 exponentials too"
            f" ({bf16_exp_per_s / 1e9:.2f} G/s) {ceiling['bf16_softmax_too']:.1f}"
            f" ({ceiling['bf16_softmax_too'] / ceiling['fp32']:.2f}x)"
        )
        # the reference row: the PyTorch key stream, where the compiled one runs
        runs = [(int(b), "fp32", "compiled") for b in batches.split(",")] + [(bf16_batch, "bf16", "compiled")]
        stream_built = device == "cpu" and fused_stream_available()
        if stream_built:
            runs.append((bf16_batch, "fp32", "pytorch"))
        for batch, precision, stream in runs:
            call = f"_worker({batch}, {device!r}, {precision!r}, {repeats}, {threads}, {stream!r})"
            result = _run_fresh(call, threads, f"batch {batch}, {device}, {precision}")
            result["efficiency"] = result["subjects_per_s"] * PUBLISHED_REFERENCE_FLOPS / rate
            report["runs"].append(result)
            label = f"{precision} batch {batch:>3}" + (", PyTorch key stream" if stream == "pytorch" else "")
            line = (
                f"  {device} {label}: {result['subjects_per_s']:7.2f} subjects/s,"
                f" efficiency {result['efficiency']:.2f} (target >= {TARGET_EFFICIENCY}),"
                f" peak {result['peak_gb']:.2f} GB (target <= {TARGET_PEAK_GB}),"
                f" {result['subjects_per_s'] / ceiling[precision]:.2f} of the ceiling"
            )
            if "min_cosine_to_fp32" in result:
                line += f", cosine to fp32 {result['min_cosine_to_fp32']:.5f} (target >= {TARGET_BF16_COSINE})"
                fp32 = _matching_run(report["runs"], device, batch, "fp32", result["key_stream"])
                if fp32 is not None:
                    result["speedup_over_fp32"] = result["subjects_per_s"] / fp32["subjects_per_s"]
                    line += f", {result['speedup_over_fp32']:.2f}x fp32"
            if stream == "pytorch":
                compiled = _matching_run(report["runs"], device, batch, "fp32", "compiled")
                if compiled is not None:
                    result["compiled_speedup"] = compiled["subjects_per_s"] / result["subjects_per_s"]
                    line += f"; the compiled stream is {result['compiled_speedup']:.2f}x faster"
            click.echo(line)
        for batch in authors_batches:
            call = f"_authors_worker({batch}, {device!r}, {repeats}, {threads}, {str(authors_code)!r})"
            result = _run_fresh(call, threads, f"the authors' code, batch {batch}, {device}")
            report["authors_runs"].append(result)
            line = (
                f"  {device} the authors' code, fp32 batch {batch:>3}: {result['subjects_per_s']:7.2f} subjects/s,"
                f" peak {result['peak_gb']:.2f} GB"
            )
            ours = _matching_run(report["runs"], device, batch, "fp32", "compiled" if stream_built else "pytorch")
            if ours is not None:
                result["bsym_speedup"] = ours["subjects_per_s"] / result["subjects_per_s"]
                line += f"; bsym-app is {result['bsym_speedup']:.1f}x faster"
                line += f" (target >= {TARGET_OVER_AUTHORS:g}x at batch 4)"
            click.echo(line)
        auto = resolve_precision("auto", device)
        report[f"precision_auto_{device}"] = auto
        click.echo(f"  bsym-app --precision auto uses {auto} on this {device}")
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2))
        click.echo(f"wrote {json_path}")
