"""``smartset detect train``, ``detect predict``, ``study dacolt`` and ``study scale``:
parse, call :mod:`smartset.detection.train` / :mod:`smartset.detection.studies`, render.
Registered on ``detect_app`` and learn's ``study_app`` when imported (by
``smartset.detection._cli``); importing it does not import torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from smartset._cli_common import (JsonOption, WorkspaceOption, handle_errors, open_workspace,
                                  print_json, show_progress)
from smartset._cli_common import out as console
from smartset.detection._cli import _clean, _fmt, _print_table, detect_app
from smartset.learn._cli import study_app

VersionOption = Annotated[Optional[str], typer.Option(
    help="Version to use (default: the live catalog).")]


def _progress(enabled: bool):
    if not enabled:
        return None

    def report(epoch, epochs, loss):
        import sys

        print(f"epoch {epoch}/{epochs}: loss {loss:.4f}", file=sys.stderr, flush=True)
    return report


@detect_app.command("train")
@handle_errors
def train_command(
    version: VersionOption = None,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training images.")] = 30,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, cosine decay).")] = 2e-3,
    size: Annotated[Optional[int], typer.Option(min=32, help="Side every image is resized to (default: the images' own size, when they share one).")] = None,
    stride: Annotated[int, typer.Option(help="Output stride of the heads: 8, or 4 for very small objects (slower).")] = 8,
    policy: Annotated[Optional[str], typer.Option(help="Online box-aware augmentation: a named policy (knife-light, whale-scale, detection-basic, ...) or a policy file.")] = None,
    preprocess: Annotated[Optional[str], typer.Option(help="'dacolt': brightness-guided CLAHE + gamma at learning time, kept with the model for test time.")] = None,
    train_conditions: Annotated[Optional[str], typer.Option(help="Comma-separated lighting conditions to train on (the held-out test keeps all).")] = None,
    test_fraction: Annotated[float, typer.Option(help="Held-out share of the scenes when the version has no test split.")] = 0.25,
    seed: Annotated[int, typer.Option(help="Seed of the split, the order, the augmentation and the new layers.")] = 0,
    resume: Annotated[Optional[int], typer.Option(help="Continue the killed 'detect train' run N from its last checkpoint (its own settings).")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda (default: cuda when present).")] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train a detector (CenterNet heads on EfficientNet-Lite0 features) on a version's
    boxes; evaluate it on held-out images; record the run and its model.pt."""
    from smartset.detection.train import train

    ws = open_workspace(workspace)
    result = train(ws, version, seed=seed, epochs=epochs, batch_size=batch_size, lr=lr,
                   size=size, stride=stride, policy=policy, preprocess=preprocess,
                   test_fraction=test_fraction,
                   train_conditions=train_conditions.split(",") if train_conditions else None,
                   resume_run=resume, device=device, progress=_progress(show_progress(as_json)))
    if as_json:
        print_json(_clean(result))
        return
    test = result.get("test")
    console.print(f"run {result['run_id']}: {result['config']['n_train']} training images, "
                  f"{len(result['history'])} epochs in {result['train_seconds']} s -> "
                  f"{result['checkpoint']}")
    if test:
        console.print(f"held-out ({test['images']} images): mAP@0.5 {_fmt(test['map50'])}, "
                      f"mAP@[.5:.95] {_fmt(test['map'])}, F1 {_fmt(test['f1'])} at score >= "
                      f"{test['score_threshold']}, counting F1 {_fmt(test['counting_f1'])}")
        import pandas as pd

        _print_table(pd.DataFrame(test["table"]))


@detect_app.command("predict")
@handle_errors
def predict_command(
    model: Annotated[str, typer.Argument(help="A 'detect train' run id or a model.pt path.")],
    version: VersionOption = None,
    folder: Annotated[Optional[Path], typer.Option(help="Detect in this folder's images instead of a version's.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="COCO results file (default: reports/detect/run-N-predictions.json).")] = None,
    yolo: Annotated[Optional[Path], typer.Option(help="Also write YOLO .txt files (class cx cy w h score) to this folder.")] = None,
    score_threshold: Annotated[float, typer.Option(help="Detections scoring less are left out.")] = 0.05,
    preprocess: Annotated[str, typer.Option(help="Test-time preprocessing: 'model' (the model's own), 'dacolt' or 'none'.")] = "model",
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda (default: cuda when present).")] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Detect objects with a trained detector; COCO results JSON (and YOLO txt) that
    'detect evaluate' reads."""
    from smartset.detection.train import predict

    result = predict(open_workspace(workspace), model, version, folder=folder, out=out,
                     yolo=yolo, score_threshold=score_threshold, preprocess=preprocess,
                     device=device)
    print_json(result) if as_json else console.print(
        f"{result['predictions']} detections on {result['images']} images -> {result['coco']}"
        + (f" and {result['yolo']}" if result.get("yolo") else ""))


@study_app.command("dacolt")
@handle_errors
def study_dacolt_command(
    version: VersionOption = None,
    seeds: Annotated[int, typer.Option(min=1, help="Runs per arm, seeds SEED..SEED+N-1.")] = 3,
    epochs: Annotated[int, typer.Option(min=1)] = 20,
    train_conditions: Annotated[str, typer.Option(help="Comma-separated conditions the models learn from ('all', the default and the knife study's setting: every one); the test holds every condition.")] = "all",
    size: Annotated[Optional[int], typer.Option(min=32, help="Input side (default: the images' own).")] = None,
    test_fraction: Annotated[float, typer.Option()] = 0.25,
    seed: Annotated[int, typer.Option()] = 0,
    jobs: Annotated[int, typer.Option(min=1, help="Models trained at once in worker processes (the same models: every arm of a seed shares its split, epochs and initial weights).")] = 1,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """The knife study: plain training vs DaCoT (dacolt at test time only) vs DaCoLT
    (darkening, a lamp's uneven light and CLAHE at learning time, the same CLAHE + gamma at
    learning and test time), per condition x object size, over seeds (mean ± std); CSV,
    markdown and a plot under reports/study-dacolt/."""
    from smartset.detection.studies import study_dacolt_workspace

    result = study_dacolt_workspace(
        open_workspace(workspace), version, seeds=list(range(seed, seed + seeds)),
        epochs=epochs, size=size, test_fraction=test_fraction,
        train_conditions=None if train_conditions == "all" else train_conditions.split(","),
        jobs=jobs, progress=show_progress(as_json))
    _render_study(result, as_json)


@study_app.command("scale")
@handle_errors
def study_scale_command(
    version: VersionOption = None,
    seeds: Annotated[int, typer.Option(min=1)] = 3,
    epochs: Annotated[int, typer.Option(min=1)] = 20,
    scales: Annotated[str, typer.Option(help="Comma-separated test resolutions as fractions of the training one.")] = "1,0.5",
    size: Annotated[Optional[int], typer.Option(min=32, help="Training input side (default: the images' own).")] = None,
    test_fraction: Annotated[float, typer.Option()] = 0.25,
    seed: Annotated[int, typer.Option()] = 0,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """The whale study: train at one resolution, test at lower ones, without and with
    scale augmentation (whale-scale); presence F1 and counting F1 over seeds."""
    from smartset.detection.studies import study_scale_workspace

    result = study_scale_workspace(
        open_workspace(workspace), version, seeds=list(range(seed, seed + seeds)),
        epochs=epochs, scales=[float(s) for s in scales.split(",")], size=size,
        test_fraction=test_fraction, progress=show_progress(as_json))
    _render_study(result, as_json)


def _render_study(result: dict, as_json: bool) -> None:
    if as_json:
        print_json(_clean({k: v for k, v in result.items() if k != "frame"}))
        return
    console.print(result["markdown"])
    console.print(f"table: {result['csv']}\nplot: {result['plot']}")


__all__ = ["train_command", "predict_command", "study_dacolt_command", "study_scale_command"]
