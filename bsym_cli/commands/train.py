"""``bsym pretrain`` and ``bsym finetune``: train the model on a corpus, write weight and head bundles.

Inputs are a work directory (``-w`` of participant runs, whose model stage caches every participant's windows
and connectome), a corpus ``.npz`` file, or the simulated ``demo-sim`` corpus (``--recipe demo-sim``); see
:mod:`pipelines.model.corpus` and docs/pretraining.md.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from bsym_cli.utils.errors import OptionError
from pipelines.dmri.connectome import SIGNED_TRANSFORM


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """A documented, reproducible pretraining run on a simulated corpus.

    Attributes
    ----------
    name : str
    n_subjects, windows_per_subject : int
        Size of the simulated corpus.
    corpus_seed, seed : int
        Seeds of the simulation and of the training.
    stream_epochs, perceiver_epochs, joint_epochs : int
        Epochs of the three stages of :meth:`brainsymphony.pretraining.PretrainConfig.stagewise`.
    learning_rate : float
    batch_size : int
    holdout_fraction : float
    """

    name: str
    n_subjects: int
    windows_per_subject: int
    corpus_seed: int
    seed: int
    stream_epochs: int
    perceiver_epochs: int
    joint_epochs: int
    learning_rate: float
    batch_size: int
    holdout_fraction: float


#: Recipes of ``--recipe``. ``demo-sim`` made the bundle shipped in the package (about 12 min on 2 CPU cores).
RECIPES = {
    "demo-sim": Recipe(
        name="demo-sim",
        n_subjects=300,
        windows_per_subject=1,
        corpus_seed=2025,
        seed=0,
        stream_epochs=2,
        perceiver_epochs=4,
        joint_epochs=0,
        learning_rate=1e-3,
        batch_size=4,
        holdout_fraction=0.1,
    ),
}
STORAGE_DTYPES = ("float32", "float16", "bfloat16")


@click.command()
@click.argument("corpus", required=False, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out", "out", required=True, type=click.Path(path_type=Path), help="Weight bundle to write (folder, or .tar)."
)
@click.option(
    "--recipe",
    type=click.Choice(sorted(RECIPES)),
    default=None,
    help="Simulate the recipe's corpus and use its schedule (CORPUS is then not needed).",
)
@click.option(
    "--mode",
    type=click.Choice(["multimodal", "functional", "structural"]),
    default="multimodal",
    show_default=True,
    help="Streams of the model.",
)
@click.option(
    "--init-weights",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Start from this bundle instead of random weights.",
)
@click.option(
    "--schedule",
    type=click.Choice(["stagewise", "joint"]),
    default="stagewise",
    show_default=True,
    help="Streams first, then the Perceiver, then all together; or everything from the start.",
)
@click.option("--stream-epochs", type=int, default=None, help="Epochs of the stream stage [recipe or 3].")
@click.option("--perceiver-epochs", type=int, default=None, help="Epochs of the Perceiver stage [recipe or 2].")
@click.option("--joint-epochs", type=int, default=None, help="Epochs of the joint stage [recipe or 1].")
@click.option("--learning-rate", type=float, default=None, help="Peak learning rate [recipe or 1e-3].")
@click.option("--batch-size", type=int, default=None, help="Windows per step [recipe or 4].")
@click.option("--holdout-fraction", type=float, default=None, help="Subjects held out [recipe or 0.1].")
@click.option(
    "--holdout-max-windows", type=int, default=16, show_default=True, help="Held-out windows scored after every epoch."
)
@click.option("--n-subjects", type=int, default=None, help="Override the recipe's number of simulated subjects.")
@click.option("--seed", type=int, default=None, help="Training seed [recipe or 0].")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="Autocast on CUDA (CPU always runs fp32).",
)
@click.option("--threads", type=int, default=2, show_default=True, help="CPU threads of torch.")
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoint file [OUT.checkpoint.pt]; written every epoch and --checkpoint-every steps.",
)
@click.option("--checkpoint-every", type=int, default=50, show_default=True, help="Steps between checkpoints.")
@click.option("--resume", is_flag=True, help="Continue exactly from --checkpoint.")
@click.option(
    "--storage-dtype",
    type=click.Choice(STORAGE_DTYPES),
    default="float32",
    show_default=True,
    help="dtype of the stored weights (float16 halves the file; the R^2 it costs is reported).",
)
@click.option("--name", default=None, help="Bundle name [OUT's name].")
@click.option(
    "--save-corpus",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the (simulated) corpus as a corpus .npz.",
)
@click.option(
    "--report", type=click.Path(path_type=Path), default=None, help="Training report JSON [OUT.training.json]."
)
def pretrain(
    corpus: Path | None,
    out: Path,
    recipe: str | None,
    mode: str,
    init_weights: Path | None,
    schedule: str,
    stream_epochs: int | None,
    perceiver_epochs: int | None,
    joint_epochs: int | None,
    learning_rate: float | None,
    batch_size: int | None,
    holdout_fraction: float | None,
    holdout_max_windows: int,
    n_subjects: int | None,
    seed: int | None,
    device: str,
    precision: str,
    threads: int,
    checkpoint: Path | None,
    checkpoint_every: int,
    resume: bool,
    storage_dtype: str,
    name: str | None,
    save_corpus: Path | None,
    report: Path | None,
) -> None:
    """Self-supervised pretraining on CORPUS (a work directory or a corpus .npz), or --recipe demo-sim."""
    import torch

    from brainsymphony import BrainSymphony, BrainSymphonyConfig, load_bundle
    from brainsymphony.pretraining import PretrainConfig, Pretrainer, inference_model, objectives_for
    from bsym_cli.utils.logs import get_logger
    from pipelines.model.corpus import read_corpus, save_corpus_file
    from simulation.corpus import simulate_corpus

    log = get_logger()
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # denormal floats slow CPU training down many times over
    base = RECIPES[recipe] if recipe else None
    if corpus is None and base is None:
        raise OptionError("bsym pretrain: give CORPUS (a work directory or corpus .npz) or --recipe demo-sim.")

    def pick(value, field: str, default):
        return value if value is not None else getattr(base, field) if base else default

    started = time.perf_counter()
    if corpus is not None:
        data = read_corpus(corpus)
        source = f"corpus {corpus}"
    else:
        count = pick(n_subjects, "n_subjects", 0)
        click.echo(f"simulating the {base.name} corpus: {count} subjects ...", err=True)
        data = simulate_corpus(count, seed=base.corpus_seed, windows_per_subject=base.windows_per_subject)
        source = (
            f"{count} subjects x {base.windows_per_subject} window(s) simulated by `bsym pretrain --recipe "
            f"{base.name}` (corpus seed {base.corpus_seed})"
        )
    simulated_s = time.perf_counter() - started
    if save_corpus is not None:
        save_corpus_file(data, save_corpus)
    if init_weights is not None:
        start_model, start_meta = load_bundle(init_weights)
        config = start_model.config.replace(mask_tokens=True)
        model = BrainSymphony(config)
        model.load_state_dict(start_model.state_dict(), strict=False)
    else:
        config = BrainSymphonyConfig.published(
            mode=mode,
            mask_tokens=True,
            n_timepoints=data.windows.shape[2] if data.windows is not None else 200,
            n_regions=data.sc.shape[1] if data.windows is None else data.windows.shape[1],
        )
        start_meta = None
    seed_value = pick(seed, "seed", 0)
    torch.manual_seed(seed_value)
    model = BrainSymphony(config) if init_weights is None else model
    training = data.training_set(functional=config.has_functional, structural=config.has_structural)
    objectives = objectives_for(config)
    common = dict(
        batch_size=pick(batch_size, "batch_size", 4),
        seed=seed_value,
        precision=precision,
        holdout_fraction=pick(holdout_fraction, "holdout_fraction", 0.1),
        checkpoint_every=checkpoint_every,
        holdout_max_windows=holdout_max_windows,
    )
    rate = pick(learning_rate, "learning_rate", 1e-3)
    if schedule == "stagewise":
        plan = PretrainConfig.stagewise(
            stream_epochs=pick(stream_epochs, "stream_epochs", 3),
            perceiver_epochs=pick(perceiver_epochs, "perceiver_epochs", 2),
            joint_epochs=pick(joint_epochs, "joint_epochs", 1),
            learning_rate=rate,
            objectives=objectives,
            **common,
        )
    else:
        plan = PretrainConfig.joint(
            epochs=pick(joint_epochs, "joint_epochs", 3), learning_rate=rate, objectives=objectives, **common
        )
    device = _device(device)
    checkpoint = checkpoint or out.with_name(out.name + ".checkpoint.pt")
    progress = _ProgressLine()
    trainer = Pretrainer(
        model,
        training,
        config=plan,
        device=device,
        on_step=progress.step,
        on_epoch=progress.epoch,
        checkpoint_path=checkpoint,
    )
    initial = trainer.evaluate()  # the freshly seeded model, also before a resume
    click.echo(f"random initialisation, held-out: {_fmt(initial)}", err=True)
    if resume:
        trainer.load_checkpoint(checkpoint)
        click.echo(f"resumed from {checkpoint} at step {trainer.position.step}/{trainer.total_steps()}", err=True)
    click.echo(
        f"training {len(trainer.train_index)} windows (held out {len(trainer.heldout_index)}) on {device}, "
        f"{trainer.total_steps()} steps, stages {[s.name for s in plan.stages]}",
        err=True,
    )
    train_started = time.perf_counter()
    history = trainer.run()
    train_s = time.perf_counter() - train_started
    final = inference_model(trainer.model)
    trained = trainer.evaluate()
    stored_model, stored_eval = final, trained
    if storage_dtype != "float32":
        stored_model = copy.deepcopy(final).to(getattr(torch, storage_dtype))
        trainer.model.load_state_dict({k: v.float() for k, v in stored_model.state_dict().items()}, strict=False)
        stored_eval = trainer.evaluate()
    summary = {
        "source": source,
        "recipe": asdict(base) if base else None,
        "pretrain_config": plan.to_dict(),
        "model_config": config.replace(mask_tokens=False).to_dict(),
        "device": str(device),
        "threads": threads,
        "seconds_simulation": round(simulated_s, 1),
        "seconds_training": round(train_s, 1),
        "heldout_random_init": initial,
        "heldout_trained_float32": trained,
        f"heldout_stored_{storage_dtype}": stored_eval,
        "history": [asdict(h) for h in history],
    }
    meta = _write_bundle(
        stored_model, out, name or out.name.removesuffix(".tar"), data, summary, start_meta, storage_dtype
    )
    report = report or out.with_name(out.name + ".training.json")
    report.write_text(json.dumps(summary, indent=2, default=float) + "\n")
    log.info("wrote %s (sha256 %s) and %s", out, meta.sha256, report)
    click.echo(
        f"wrote {out} (weights sha256 {meta.sha256}); held-out trained: {_fmt(trained)}; "
        f"stored {storage_dtype}: {_fmt(stored_eval)}; report {report}",
        err=True,
    )


def _write_bundle(model, out: Path, name: str, data, summary: dict[str, Any], start_meta, storage_dtype: str):
    from brainsymphony import save_bundle

    atlas, labels_hash = "unknown", None
    if data.labels_sha256:  # the corpus knows its atlas (the demo-sim corpus does)
        atlas, labels_hash = data.atlas or "unknown", data.labels_sha256
    elif start_meta is not None:
        atlas, labels_hash = start_meta.atlas, start_meta.labels_sha256
    trained, initial = summary["heldout_trained_float32"], summary["heldout_random_init"] or {}
    scores = (
        f"held-out masked-region R^2 {trained.get('r2_masked_regions', float('nan')):.3f} "
        f"(per-region mean baseline {trained.get('r2_region_mean_baseline', float('nan')):.3f}, random "
        f"initialisation {initial.get('r2_masked_regions', float('nan')):.3f}); held-out masked-edge R^2 "
        f"{trained.get('r2_masked_edges', float('nan')):.3f}"
    )
    stages = ", ".join(
        f"{s['name']} {s['epochs']} epoch(s) lr {s['learning_rate']:g}" for s in summary["pretrain_config"]["stages"]
    )
    notes = [
        "NOT the BrainSymphony authors' weights: trained by bsym-app on simulated data only; for real "
        "studies import the published weights (`bsym weights import-official`).",
        f"stored as {storage_dtype}",
        "fusion gate neutral (g = 0.5; no pretraining objective trains it)",
        "mask tokens of the spatial/temporal streams dropped after pretraining (inference config)",
        scores,
    ]
    return save_bundle(
        model,
        out,
        name=name,
        atlas=atlas,
        labels_sha256=labels_hash,
        tr=data.t_r,
        sc_transform=SIGNED_TRANSFORM,
        licence="Apache-2.0 (bsym-app)",
        source="bsym-app self-supervised pretraining (`bsym pretrain"
        + (f" --recipe {summary['recipe']['name']}" if summary["recipe"] else "")
        + "`)",
        training=f"{summary['source']}; masked objectives; stages: {stages}; {scores}",
        notes=notes,
    )


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise OptionError(f"--device {name}: CUDA is not available on this machine; use --device cpu.")
    return name


def _fmt(values: dict[str, float] | None) -> str:
    if not values:
        return "n/a"
    return ", ".join(f"{k} {v:.3f}" for k, v in values.items())


class _ProgressLine:
    """A one-line progress display (stage, epoch, step, loss, windows/s) on stderr."""

    def __init__(self, *, every_s: float = 20.0) -> None:
        self.tty = sys.stderr.isatty()
        self.every_s = every_s
        self.last = 0.0

    def step(self, info) -> None:
        now = time.perf_counter()
        if not self.tty and now - self.last < self.every_s and info.batch != info.batches:
            return
        self.last = now
        text = (
            f"{info.stage} epoch {info.epoch}/{info.epochs} batch {info.batch}/{info.batches} "
            f"step {info.step}/{info.total_steps} loss {info.loss:.4f} {info.samples_per_s:.2f} windows/s"
        )
        click.echo(("\r" + text) if self.tty else text, err=True, nl=not self.tty)

    def epoch(self, log) -> None:
        losses = ", ".join(f"{k} {v:.4f}" for k, v in log.train_loss.items())
        click.echo(
            f"{chr(10) if self.tty else ''}{log.stage} epoch {log.epoch} done in {log.seconds:.0f} s; "
            f"train {losses}; held-out {_fmt(log.heldout)}",
            err=True,
        )


@click.command()
@click.argument("corpus", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--targets",
    "targets_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TSV with participant_id and the target column (e.g. the BIDS participants.tsv).",
)
@click.option("--target", required=True, help="Column of --targets to predict.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Head bundle folder to write.")
@click.option(
    "--weights",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Encoder bundle [the packaged default].",
)
@click.option(
    "--embedding",
    type=click.Choice(["fused", "functional", "structural"]),
    default=None,
    help="Subject embedding the head reads [fused for multimodal bundles, else the bundle's stream].",
)
@click.option(
    "--method",
    type=click.Choice(["probe", "full"]),
    default="probe",
    show_default=True,
    help="probe: frozen encoder, ridge (classifier) head with nested CV; full: fine-tune encoder and head.",
)
@click.option(
    "--task",
    type=click.Choice(["auto", "regression", "classification"]),
    default="auto",
    show_default=True,
    help="auto: classification for text or few-valued integer targets.",
)
@click.option("--epochs", type=int, default=10, show_default=True, help="Epochs of full fine-tuning.")
@click.option("--learning-rate", type=float, default=1e-4, show_default=True, help="Encoder rate (full).")
@click.option("--head-learning-rate", type=float, default=1e-2, show_default=True, help="Head rate (full).")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Windows per step (full).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--threads", type=int, default=2, show_default=True, help="CPU threads of torch.")
def finetune(
    corpus: Path,
    targets_file: Path,
    target: str,
    out: Path,
    weights: Path | None,
    embedding: str | None,
    method: str,
    task: str,
    epochs: int,
    learning_rate: float,
    head_learning_rate: float,
    batch_size: int,
    seed: int,
    device: str,
    threads: int,
) -> None:
    """Fit a prediction head on CORPUS (work directory or corpus .npz) for --target; write a --head bundle."""
    import hashlib

    import pandas as pd
    import torch

    from brainsymphony import load_bundle, save_bundle
    from brainsymphony.finetune import FinetuneConfig, subject_embeddings
    from brainsymphony.finetune import finetune as run_finetune
    from bsym_cli.levels.model_stage import default_bundle_path
    from pipelines.group.probes import run_probe, target_task
    from pipelines.heads import LinearHead, save_head
    from pipelines.model.corpus import read_corpus

    torch.set_num_threads(threads)
    weights = weights or default_bundle_path()
    if weights is None:
        raise OptionError("bsym finetune: the package ships no weight bundle; pass --weights BUNDLE.")
    model, meta = load_bundle(weights)
    cfg = model.config
    embedding = embedding or ("fused" if cfg.mode == "multimodal" else cfg.mode)
    data = read_corpus(corpus)
    table = pd.read_csv(targets_file, sep="\t", dtype={"participant_id": str}, na_values="n/a")
    if "participant_id" not in table.columns or target not in table.columns:
        raise OptionError(
            f"--targets {targets_file}: needs columns participant_id and {target!r}; it has {list(table.columns)}."
        )
    values = dict(zip(table["participant_id"].str.removeprefix("sub-"), table[target], strict=True))
    per_subject = np.array([values.get(s, None) for s in data.subject_ids], dtype=object)
    training = data.training_set(functional=cfg.has_functional, structural=cfg.has_structural)
    present = np.array([v is not None and not (isinstance(v, float) and np.isnan(v)) for v in per_subject])
    if present.sum() < 5:
        raise OptionError(
            f"--targets {targets_file}: only {int(present.sum())} corpus subject(s) have a value of "
            f"{target!r}; fine-tuning needs at least 5. Check that participant_id matches "
            f"the corpus subjects (e.g. {data.subject_ids[:3]})."
        )
    observed = np.array([v for v in per_subject[present]])
    task = target_task(observed) if task == "auto" else task
    from pipelines.model.features import feature_names as names_of

    feature_names = names_of(embedding, cfg.width)
    provenance = {
        "corpus": str(corpus),
        "weights": str(weights),
        "weights_sha256": meta.sha256,
        "method": method,
        "embedding": embedding,
        "seed": seed,
    }
    if method == "probe":
        subjects, features = subject_embeddings(model, training, embedding=embedding, device=_device(device))
        keep = present[subjects]
        result = run_probe(
            features[keep],
            per_subject[subjects][keep].astype(str if task == "classification" else float),
            name=target,
            feature_names=feature_names,
            seed=seed,
        )
        head = result.head
        head.metadata.update(provenance)
        save_head(head, out)
        click.echo(f"wrote {out} (linear probe, nested CV): {json.dumps(result.metrics)}", err=True)
        return
    config = FinetuneConfig(
        task=task,
        embedding=embedding,
        epochs=epochs,
        learning_rate=learning_rate,
        head_learning_rate=head_learning_rate,
        batch_size=batch_size,
        seed=seed,
    )
    result = run_finetune(model, training, per_subject, config=config, device=_device(device))
    encoder_path = out.with_name(out.name + "-encoder")
    encoder_meta = save_bundle(
        result.model,
        encoder_path,
        name=f"{meta.name}-finetuned-{target}",
        atlas=meta.atlas,
        labels_sha256=meta.labels_sha256,
        tr=meta.tr,
        scaling_median=meta.scaling_median,
        scaling_iqr=meta.scaling_iqr,
        sc_transform=meta.sc_transform,
        licence=meta.licence,
        source=f"{meta.source}; fine-tuned by `bsym finetune --method full` on {corpus}",
        training=f"{meta.training}; then supervised fine-tuning for {target!r}",
        notes=[*meta.notes, f"use only with the head fitted with it ({out})"],
    )
    head = LinearHead(
        target=target,
        task=task,
        features=feature_names,
        mean=result.mean,
        scale=result.scale,
        weight=result.weight,
        bias=result.bias,
        classes=result.classes,
        metadata={
            **provenance,
            "metrics": result.metrics,
            "best_epoch": result.best_epoch,
            "history": result.history,
            "n_subjects": int(present.sum()),
            "encoder": str(encoder_path),
            "encoder_sha256": encoder_meta.sha256,
            "note": f"fitted on a fine-tuned encoder: run bsym-app with --weights {encoder_path} --head {out}",
        },
    )
    save_head(head, out)
    digest = hashlib.sha256((out / "head.safetensors").read_bytes()).hexdigest()
    click.echo(f"wrote {out} (head sha256 {digest}) and encoder {encoder_path}: {json.dumps(result.metrics)}", err=True)
