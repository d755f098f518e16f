"""``smartset segment train`` and ``segment predict``: parse, call
:mod:`smartset.detection.segmenter`, render. Mounted lazily by the main CLI; importing this
module does not import torch (the commands do, when run)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from smartset._cli_common import (JsonOption, SmartsetGroup, WorkspaceOption, handle_errors,
                                  open_workspace, print_json, show_progress)
from smartset._cli_common import out as console

SEGMENT_HELP = ("Train a segmenter (a U-Net decoder on EfficientNet-Lite0) on a version's "
                "masks and predict mask PNGs and COCO RLEs that 'detect evaluate-masks' "
                "scores.")

segment_app = typer.Typer(help=SEGMENT_HELP, no_args_is_help=True, cls=SmartsetGroup,
                          rich_markup_mode=None)

VersionOption = Annotated[Optional[str], typer.Option(
    help="Version to use (default: the live catalog).")]


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


@segment_app.command("train")
@handle_errors
def train(
    version: VersionOption = None,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training images.")] = 20,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    lr: Annotated[float, typer.Option(help="Decoder learning rate (AdamW, cosine decay); the "
                                           "backbone trains at 0.3 x it.")] = 1e-2,
    size: Annotated[Optional[int], typer.Option(
        min=32, help="Side images are resized to, a multiple of 16 (default: the images' own "
                     "size when they share one, else 256).")] = None,
    freeze_stages: Annotated[int, typer.Option(
        min=0, max=5, help="Backbone stages kept frozen (stem and the first N).")] = 2,
    augment: Annotated[Optional[str], typer.Option(
        help="Online augmentation that moves the masks with the image: a policy name "
             "(detection-basic, knife-light, whale-scale, ...) or a policy file.")] = None,
    init_from: Annotated[Optional[Path], typer.Option(
        help="Start from a segmenter checkpoint (its matching layers).")] = None,
    test_fraction: Annotated[float, typer.Option(
        help="Held-out share of the scenes when the version has no test split.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the split, order, augmentation and new "
                                           "layers.")] = 0,
    resume: Annotated[Optional[int], typer.Option(
        help="Continue the killed 'segment train' run N from its last checkpoint (its own "
             "settings).")] = None,
    device: Annotated[Optional[str], typer.Option(
        help="cpu or cuda (default: cuda when present).")] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train a segmenter on a version's masks; score it on held-out images beside the
    threshold baseline; record the run and its segmenter.pt."""
    from smartset.detection.segmenter import train_segmenter

    ws = open_workspace(workspace)
    if resume is not None:
        result = train_segmenter(ws, resume_run=resume, device=device,
                                 progress=show_progress(as_json))
    else:
        options = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "size": size,
                   "freeze_stages": freeze_stages, "augment": augment,
                   "init_from": None if init_from is None else str(init_from)}
        result = train_segmenter(ws, version, test_fraction=test_fraction, seed=seed,
                                 device=device, progress=show_progress(as_json), **options)
    if as_json:
        print_json(result)
        return
    console.print(f"run {result['run_id']}: {result['n_train']} training images, "
                  f"{len(result['history'])} epochs in {result['train_seconds']:.1f} s -> "
                  f"{result['checkpoint']}", highlight=False)
    test, base = result.get("test"), result.get("baseline")
    if test:
        console.print(f"held-out ({result['n_test']} images, {result['holdout']}): mean IoU "
                      f"{_fmt(test['mean_iou'])}, mean Dice {_fmt(test['mean_dice'])}, pixel "
                      f"accuracy {_fmt(test['pixel_accuracy'])}; threshold baseline mean IoU "
                      f"{_fmt(base['mean_iou'])}", highlight=False)
        for name, v in test["per_class"].items():
            b = base["per_class"].get(name, {})
            console.print(f"  {name}: IoU {_fmt(v['iou'])} (baseline {_fmt(b.get('iou'))}), "
                          f"Dice {_fmt(v['dice'])}", highlight=False, markup=False)


@segment_app.command("predict")
@handle_errors
def predict(
    model: Annotated[str, typer.Argument(help="A 'segment train' run id or a segmenter "
                                              "checkpoint (.pt).")],
    out: Annotated[Path, typer.Option(help="Folder to write: one class-value PNG per image "
                                           "(its relative path, .png) and masks.json (COCO "
                                           "RLE results).")] = Path("masks"),
    version: VersionOption = None,
    folder: Annotated[Optional[Path], typer.Option(
        help="Predict every image under this folder instead of a workspace version.")] = None,
    device: Annotated[Optional[str], typer.Option(
        help="cpu or cuda (default: cuda when present).")] = None,
    workspace: WorkspaceOption = None,
    as_json: JsonOption = False,
) -> None:
    """Predict masks for a version's images or a folder; score them with 'smartset detect
    evaluate-masks OUT'."""
    from smartset.detection.segmenter import predict_segmenter

    needs_ws = folder is None or model.isdigit()
    ws = open_workspace(workspace) if needs_ws else None
    result = predict_segmenter(model, out, ws=ws, version=version, folder=folder,
                               device=device)
    if as_json:
        print_json(result)
        return
    console.print(f"{result['images']} masks, {result['regions']} class regions -> "
                  f"{result['out']} (COCO RLE: {result['coco']})", highlight=False)
