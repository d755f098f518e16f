"""``smartset baseline | train | predict | evaluate | models | study``: thin commands over
:mod:`smartset.learn`. Registered on the main app by :func:`register`; importing this
module does not import torch (the commands do, when run)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from smartset._cli_common import (JsonOption, RayAddressOption, WorkspaceOption, handle_errors,
                                  open_workspace, out, print_json, show_progress, use_ray_address)

VersionOption = Annotated[Optional[str], typer.Option(help="Data set version (default: the live catalog).")]
SizeOption = Annotated[Optional[int], typer.Option(
    help="Resize images to SIZE x SIZE (needed when their sizes differ).")]
ModeOption = Annotated[Optional[str], typer.Option(help="L (gray) or RGB (default: gray if all images are).")]
SeedOption = Annotated[int, typer.Option(help="Seed of the split, the folds and training.")]


def _fmt(value, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(title: str, rows: list[dict], columns: list[str]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column in columns[:1] else "right")
    for row in rows:
        table.add_row(*[_fmt(row.get(c, "")) for c in columns])
    return table


@handle_errors
def models_command(as_json: JsonOption = False) -> None:
    """List the networks 'smartset train' knows."""
    from smartset.learn.models import available_models

    models = available_models()
    if as_json:
        print_json(models)
        return
    out.print(_table("models", [{"model": k, "description": v} for k, v in models.items()],
                     ["model", "description"]))


@handle_errors
def baseline_command(workspace: WorkspaceOption = None, version: VersionOption = None,
                     size: SizeOption = None, mode: ModeOption = None,
                     k: Annotated[int, typer.Option(help="Neighbours of the kNN baselines.")] = 3,
                     test_fraction: Annotated[float, typer.Option(help="Held-out share when the version has no test split.")] = 0.2,
                     seed: SeedOption = 0, as_json: JsonOption = False) -> None:
    """Dummy, kNN and linear-probe baselines: the numbers every model must beat."""
    from smartset.learn._workspace import baselines

    ws = open_workspace(workspace)
    result = baselines(ws, version, size=size, mode=mode, k=k, test_fraction=test_fraction,
                       seed=seed, progress=show_progress(as_json))
    if as_json:
        print_json(result)
        return
    columns = ["baseline", "accuracy", "macro_f1", "seconds"] if "accuracy" in result["baselines"][0] \
        else ["baseline", "mae", "rmse"]
    out.print(_table(f"baselines (run {result['run_id']}; train {result['n_train']}, held out "
                     f"{result['n_test']}: {result['holdout']})", result["baselines"], columns))


@handle_errors
def train_command(
    workspace: WorkspaceOption = None, version: VersionOption = None,
    model: Annotated[str, typer.Option(help="Network (see 'smartset models').")] = "lenet",
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    lr: Annotated[float, typer.Option(help="Learning rate (Adam, cosine schedule).")] = 1e-3,
    weight_decay: Annotated[float, typer.Option()] = 0.0,
    augment: Annotated[Optional[str], typer.Option(help="Online augmentation policy (a name from 'smartset augment list' or a policy file).")] = None,
    class_weight: Annotated[Optional[str], typer.Option(help="'balanced' weighs classes by inverse frequency.")] = None,
    balanced_sampling: Annotated[bool, typer.Option(help="Sample classes evenly in each epoch.")] = False,
    val_fraction: Annotated[float, typer.Option(help="Share of the training data held out for early stopping.")] = 0.0,
    patience: Annotated[Optional[int], typer.Option(help="Stop after this many epochs without a better validation loss.")] = None,
    init_from: Annotated[Optional[Path], typer.Option(help="Checkpoint whose backbone to start from (transfer learning; the head is replaced).")] = None,
    trainable_blocks: Annotated[int, typer.Option(help="With --init-from: backbone blocks to train (0 = frozen backbone, -1 = all: fine-tuning).")] = -1,
    backbone_lr_scale: Annotated[float, typer.Option(help="Learning-rate factor of the backbone (fine-tuning: e.g. 0.1).")] = 1.0,
    head_epochs: Annotated[int, typer.Option(help="Fine-tuning: epochs that train the new head alone before the backbone joins.")] = 0,
    preprocess: Annotated[Optional[str], typer.Option(help="'dacolt': brightness-guided CLAHE + gamma, at learning and (kept with the model) at test time.")] = None,
    size: SizeOption = None, mode: ModeOption = None,
    test_fraction: Annotated[float, typer.Option(help="Held-out share when the version has no test split.")] = 0.2,
    seed: SeedOption = 0,
    resume: Annotated[Optional[int], typer.Option(help="Resume run N from its last checkpoint.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Train a network on a version and evaluate it on held-out samples."""
    from smartset.learn._workspace import train

    ws = open_workspace(workspace)
    result = train(ws, version, model=model, size=size, mode=mode, test_fraction=test_fraction,
                   seed=seed, resume_run=resume, progress=show_progress(as_json), epochs=epochs,
                   batch_size=batch_size, lr=lr, weight_decay=weight_decay, augment=augment,
                   class_weight=class_weight, balanced_sampling=balanced_sampling,
                   val_fraction=val_fraction, patience=patience,
                   init_from=str(init_from) if init_from else None,
                   trainable_blocks=trainable_blocks, backbone_lr_scale=backbone_lr_scale,
                   head_epochs=head_epochs, preprocess=preprocess)
    if as_json:
        print_json(result)
        return
    history = result["history"]
    columns = [c for c in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")
               if c in history[-1]]
    out.print(_table(f"run {result['run_id']}: {model}", history, columns))
    test = result.get("test")
    if test:
        if "accuracy" in test:
            out.print(f"held-out accuracy [bold]{test['accuracy']:.4f}[/] on {test['n']} samples "
                      f"({result['holdout']}); macro F1 {test['macro']['f1']:.4f}")
            out.print(f"confusion matrix: {test.get('confusion_png')}")
        else:
            out.print(f"held-out MAE {test['mae']:.4f}, RMSE {test['rmse']:.4f} on {test['n']}")
    out.print(f"checkpoint: {ws.path / result['checkpoint']}")


@handle_errors
def predict_command(
    workspace: WorkspaceOption = None, version: VersionOption = None,
    oof: Annotated[bool, typer.Option("--oof", help="Out-of-fold: each sample predicted by a model that did not see it.")] = False,
    folds: Annotated[int, typer.Option(min=2)] = 5,
    model: Annotated[str, typer.Option(help="Network (see 'smartset models').")] = "small_cnn",
    epochs: Annotated[int, typer.Option(min=1)] = 8,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    augment: Annotated[Optional[str], typer.Option(help="Online augmentation policy.")] = None,
    size: SizeOption = None, mode: ModeOption = None, seed: SeedOption = 0,
    engine: Annotated[Optional[str], typer.Option(
        envvar="SMARTSET_ENGINE",
        help="Where the fold models predict their held-out samples: serial, local or ray "
             "(Ray Data: pip install 'smartset[ray]'); default: in this process. Training "
             "runs here either way.")] = None,
    ray_address: RayAddressOption = None,
    as_json: JsonOption = False,
) -> None:
    """Store out-of-fold class probabilities for every labeled sample (for 'smartset clean')."""
    from smartset.learn._workspace import predict_oof

    if not oof:
        raise typer.BadParameter("only --oof predictions are stored by this command; to "
                                 "predict with a trained model use 'smartset evaluate'.")
    ws = open_workspace(workspace)
    use_ray_address(ray_address)
    result = predict_oof(ws, version, model=model, folds=folds, size=size, mode=mode,
                         seed=seed, engine=engine, progress=show_progress(as_json),
                         epochs=epochs, batch_size=batch_size, augment=augment)
    if as_json:
        print_json(result)
        return
    oof_report = result["oof"]
    out.print(f"run {result['run_id']}: out-of-fold probabilities for {oof_report['n']} samples "
              f"({folds} folds, {model}); out-of-fold accuracy {oof_report['accuracy']:.4f}")
    for pair in oof_report["most_confused"][:5]:
        out.print(f"  ({pair['true']}) predicted {pair['predicted']}: {pair['count']}")


@handle_errors
def evaluate_command(
    model: Annotated[str, typer.Argument(help="A training run id, 'last' (the newest finished training run), a checkpoint file, or several run ids '3,4,5' (an ensemble).")],
    workspace: WorkspaceOption = None, version: VersionOption = None,
    split: Annotated[Optional[str], typer.Option(help="Evaluate only this split.")] = None,
    held_out: Annotated[bool, typer.Option(help="Evaluate the samples the run(s) did not train on.")] = False,
    shift: Annotated[Optional[list[str]], typer.Option(help="Also under a synthetic shift: darker, brighter, blurred, rotated, noisier (repeatable).")] = None,
    positive: Annotated[Optional[str], typer.Option(help="A class: add the knife-study table (TP, FP, precision, recall, F1) per condition.")] = None,
    preprocess: Annotated[Optional[str], typer.Option(help="Test-time preprocessing: 'dacolt', or 'none' (default: the model's own).")] = None,
    force: Annotated[bool, typer.Option(help="Evaluate even on samples seen in training (the report is marked).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Accuracy, per-class precision/recall/F1, confusion matrix, top losses, robustness."""
    import json as json_

    from smartset.learn._workspace import evaluate, run_dir

    ws = open_workspace(workspace)
    if model == "last":
        done = ws.catalog.query("SELECT MAX(id) FROM runs WHERE command = 'train' AND status = 'done'")
        if not done or done[0][0] is None:
            raise typer.BadParameter("no finished training run yet: run 'smartset train' first.")
        model = str(done[0][0])
    sample_ids = None
    if held_out:
        runs = [part.strip() for part in model.split(",")]
        paths = [run_dir(ws, int(r)) / "train_ids.json" for r in runs if r.isdigit()]
        if len(paths) != len(runs) or not all(p.exists() for p in paths):
            raise typer.BadParameter("--held-out needs training run ids with their recorded "
                                     "training samples.")
        trained = set().union(*(set(json_.loads(p.read_text())) for p in paths))
        sample_ids = [s for s in ws.samples(version)["id"] if s not in trained]
    result = evaluate(ws, model, version, split=split, sample_ids=sample_ids, force=force,
                      shifts=shift or (), positive=positive, preprocess=preprocess,
                      progress=show_progress(as_json))
    if as_json:
        print_json(result)
        return
    if result["leakage"]["n"]:
        out.print(f"[bold red]LEAKAGE:[/] {result['leakage']['n']} evaluated samples were seen "
                  f"in training; this score is inflated.")
    if "accuracy" not in result:
        out.print(f"MAE {result['mae']:.4f}, RMSE {result['rmse']:.4f}, R² {result['r2']:.4f} "
                  f"on {result['n']} samples")
        return
    out.print(_table(f"evaluation run {result['run_id']}: accuracy {result['accuracy']:.4f} on "
                     f"{result['n']} samples", result["per_class"],
                     ["class", "precision", "recall", "f1", "support"]))
    out.print(f"macro F1 {result['macro']['f1']:.4f}, weighted F1 {result['weighted']['f1']:.4f}")
    for pair in result["most_confused"][:5]:
        out.print(f"  most confused: ({pair['true']}) predicted {pair['predicted']}: {pair['count']}")
    rows = [{"property": name, **bucket} for name, table in result["by_condition"].items()
            for bucket in table]
    if rows:
        out.print(_table("accuracy by condition (terciles)", rows,
                         ["property", "bucket", "from", "to", "n", "accuracy"]))
    if result.get("robustness"):
        out.print(_table("robustness under shifts", result["robustness"], ["condition", "n", "accuracy"]))
    if result.get("condition_table"):
        out.print(_table(f"class {positive!r} by condition", result["condition_table"],
                         ["condition", "n", "positives", "TP", "FP", "precision", "recall", "f1"]))
    out.print(f"confusion matrix: {result.get('confusion_png')}")
    if result.get("misclassified_png"):
        out.print(f"misclassified: {result['misclassified_png']}")


study_app = typer.Typer(help="Measure what a data step is worth.", no_args_is_help=True)


@study_app.command("augment")
@handle_errors
def study_augment_command(
    workspace: WorkspaceOption = None, version: VersionOption = None,
    combinations: Annotated[Optional[str], typer.Option(help="Comma-separated named policies (default: all of the study).")] = None,
    runs: Annotated[int, typer.Option(min=1, help="Runs per combination (seeds 0..R-1).")] = 3,
    epochs: Annotated[int, typer.Option(min=1)] = 5,
    train_size: Annotated[Optional[int], typer.Option(help="Training instances (a stratified subset).")] = None,
    test_size: Annotated[Optional[int], typer.Option(help="Held-out instances.")] = None,
    model: Annotated[str, typer.Option()] = "lenet",
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    size: SizeOption = None, mode: ModeOption = None, seed: SeedOption = 0,
    as_json: JsonOption = False,
) -> None:
    """Train the same model on each augmentation combination; the table of the source study."""
    from smartset.learn.study import study_augment_workspace

    ws = open_workspace(workspace)
    result = study_augment_workspace(
        ws, version, combinations=combinations.split(",") if combinations else None, runs=runs,
        epochs=epochs, train_size=train_size, test_size=test_size, model=model,
        batch_size=batch_size, size=size, mode=mode, seed=seed,
        progress=show_progress(as_json))
    if as_json:
        print_json(result)
        return
    out.print(result["markdown"])
    out.print(f"table: {result['csv']}\nplot: {result['plot']}")


def register(app: typer.Typer) -> None:
    app.command("models")(models_command)
    app.command("baseline")(baseline_command)
    app.command("train")(train_command)
    app.command("predict")(predict_command)
    app.command("evaluate")(evaluate_command)
    app.add_typer(study_app, name="study")
