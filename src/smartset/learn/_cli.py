"""``smartset baseline | train | predict | evaluate | models | study``: thin commands over
:mod:`smartset.learn`. Registered on the main app by :func:`register`; importing this
module does not import torch (the commands do, when run)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from smartset._cli_common import (JsonOption, RayAddressOption, SmartsetGroup, Table,
                                  WorkspaceOption, check_engine, handle_errors, one_of,
                                  open_workspace, out, print_json, show_progress, use_ray_address)

# The shifts 'evaluate --shift' knows, spelled here so that a bad one is a usage error before
# any data is read, without importing torch (a test keeps them equal to
# smartset.learn.robustness.SHIFTS).
SHIFTS = ("darker", "brighter", "blurred", "rotated", "noisier", "lowres")

VersionOption = Annotated[Optional[str], typer.Option(help="Data set version (default: the live catalog).")]
SizeOption = Annotated[Optional[int], typer.Option(
    help="Resize images to SIZE x SIZE (needed when their sizes differ).")]
ModeOption = Annotated[Optional[str], typer.Option(help="L (gray) or RGB (default: gray if all images are).")]
SeedOption = Annotated[int, typer.Option(help="Seed of the split, the folds and training.")]


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
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
                     backbone: Annotated[Optional[str], typer.Option(help="Features of knn_embeddings and linear_probe: a backbone (default on photos: efficientnet_lite0), or 'pixels' (the 8x8 pixel embedding; the default on small gray images).")] = None,
                     engine: Annotated[Optional[str], typer.Option(envvar="SMARTSET_ENGINE", callback=check_engine, help="Where missing embeddings are computed: serial (default), local or ray.")] = None,
                     seed: SeedOption = 0, as_json: JsonOption = False) -> None:
    """Dummy, kNN and linear-probe baselines: the numbers every model must beat."""
    from smartset.learn._workspace import baselines

    ws = open_workspace(workspace)
    result = baselines(ws, version, size=size, mode=mode, k=k, test_fraction=test_fraction,
                       seed=seed, backbone=None if backbone == "pixels" else (backbone or "auto"),
                       engine=engine, progress=show_progress(as_json))
    if as_json:
        print_json(result)
        return
    columns = ["baseline", "features", "accuracy", "macro_f1", "seconds"] \
        if "accuracy" in result["baselines"][0] else ["baseline", "mae", "rmse"]
    if result.get("size_note"):
        out.print(f"size: {result['size_note']}")
    out.print(_table(f"baselines (run {result['run_id']}; train {result['n_train']}, held out "
                     f"{result['n_test']}: {result['holdout']})", result["baselines"], columns))


@handle_errors
def train_command(
    context: typer.Context,
    workspace: WorkspaceOption = None, version: VersionOption = None,
    model: Annotated[str, typer.Option(help="Network (see 'smartset models'): from scratch, or a pretrained backbone such as efficientnet_lite0.")] = "lenet",
    backbone: Annotated[Optional[str], typer.Option(help="Transfer learning: a pretrained backbone (efficientnet_lite0, timm:NAME[=weights.pth]) or a smartset checkpoint (.pt); its own input normalisation is kept. Default size: the backbone's.")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    lr: Annotated[float, typer.Option(help="Learning rate (Adam; the peak rate with --schedule one-cycle).")] = 1e-3,
    lr_find: Annotated[bool, typer.Option("--lr-find", help="Run the learning-rate range test first (fastai's lr_find), save its plot (models/run-N/lr_find.png) and train at its 'valley' suggestion instead of --lr.")] = False,
    schedule: Annotated[str, typer.Option(help="Learning-rate schedule: 'cosine' (annealing per step), 'one-cycle' (fastai's fit_one_cycle: warm-up to the rate, cosine down; Adam's beta1 cycles 0.95-0.85-0.95) or 'constant'.")] = "cosine",
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16 (CUDA, with gradient scaling): autocast in training; auto follows the measured rules (on a CPU with native bfloat16: bf16 for small networks trained from scratch, fp32 for pretrained backbones; CUDA: bf16, else fp16).")] = "fp32",
    weight_decay: Annotated[float, typer.Option()] = 0.0,
    augment: Annotated[Optional[str], typer.Option(help="Online augmentation policy (a name from 'smartset augment list' or a policy file).")] = None,
    mixup: Annotated[Optional[float], typer.Option(min=0.0, help="MixUp of training batches with this Beta alpha (e.g. 0.2); labels become soft targets. With --cutmix, each batch takes one of the two.")] = None,
    cutmix: Annotated[Optional[float], typer.Option(min=0.0, help="CutMix of training batches with this Beta alpha (e.g. 1.0).")] = None,
    class_weight: Annotated[Optional[str], typer.Option(help="'balanced' weighs classes by inverse frequency.")] = None,
    balanced_sampling: Annotated[bool, typer.Option(help="Sample classes evenly in each epoch.")] = False,
    val_fraction: Annotated[float, typer.Option(help="Share of the training data held out for early stopping.")] = 0.0,
    patience: Annotated[Optional[int], typer.Option(help="Stop after this many epochs without a better validation loss.")] = None,
    init_from: Annotated[Optional[Path], typer.Option(help="Checkpoint (or timm:NAME[=weights.pth]) whose backbone to start from (transfer learning; the head is replaced; its normalisation is kept).")] = None,
    trainable_blocks: Annotated[int, typer.Option(help="Transfer: backbone blocks to train, from the top (0 = frozen backbone + new head, trained on features computed once; -1 = all: fine-tuning).")] = -1,
    backbone_lr_scale: Annotated[float, typer.Option(help="Learning-rate factor of the backbone (fine-tuning: e.g. 0.1).")] = 1.0,
    lr_decay: Annotated[Optional[float], typer.Option(help="Discriminative rates: each backbone block learns at this factor of the block above it (the top one: of the head); default 0.7 for an ImageNet backbone, else 1.")] = None,
    unfreeze: Annotated[str, typer.Option(help="Fine-tuning: 'all' blocks join after --head-epochs, or 'gradual': one more block from the top per epoch (ULMFiT).")] = "all",
    freeze_bn: Annotated[bool, typer.Option(help="Fine-tuning: keep every batch norm of the backbone in eval mode (its statistics frozen; small data sets).")] = False,
    head_epochs: Annotated[Optional[int], typer.Option(help="Fine-tuning: epochs that train the new head alone before the backbone joins (default: 1 for an ImageNet backbone, else 0).")] = None,
    preprocess: Annotated[Optional[str], typer.Option(help="'dacolt': brightness-guided CLAHE + gamma, at learning and (kept with the model) at test time.")] = None,
    size: SizeOption = None, mode: ModeOption = None,
    test_fraction: Annotated[float, typer.Option(help="Held-out share when the version has no test split.")] = 0.2,
    seed: SeedOption = 0,
    resume: Annotated[Optional[int], typer.Option(help="Resume run N from its last checkpoint, with run N's own settings (a differing option is refused).")] = None,
    include_derived: Annotated[bool, typer.Option(help="Also score augmented copies among the held-out samples (default: originals only).")] = False,
    multi_label: Annotated[bool, typer.Option("--multi-label", help="Several classes per image (the version's tags: a table's tags column, multi-label marks, an image in several class folders): a sigmoid per class, binary cross-entropy, per-class thresholds chosen on held-out training rows.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Train a network on a version and evaluate it on held-out samples."""
    from smartset.learn._workspace import train
    from smartset.learn.pretrained import check_model, default_size, is_pretrained

    if resume is not None:  # the run's own settings; only the options given are checked
        explicit = {name for name in context.params
                    if getattr(context.get_parameter_source(name), "name", "DEFAULT")
                    != "DEFAULT"}
        given = {name: value for name, value in context.params.items()
                 if name in explicit and name not in ("workspace", "resume", "as_json",
                                                      "include_derived")}
        if "backbone" in given:
            given["init_from" if not is_pretrained(given["backbone"]) else "model"] = \
                given.pop("backbone")
        if given.get("init_from") is not None:
            given["init_from"] = str(given["init_from"])
        ws = open_workspace(workspace)
        result = train(ws, resume_run=resume, include_derived=include_derived,
                       progress=show_progress(as_json), **given)
        _print_train(ws, result, as_json)
        return
    if backbone is not None:  # a pretrained name is the model; a checkpoint is --init-from
        if init_from is not None:
            raise typer.BadParameter("give --backbone or --init-from, not both.")
        if is_pretrained(backbone):
            model = backbone
        else:
            init_from = Path(backbone)
    if init_from is not None and is_pretrained(str(init_from)):  # --init-from timm:NAME
        model, init_from = str(init_from), None
    check_model(model)  # a missing package: one line, before any image is decoded
    size, size_note = default_size(model, size)
    if size_note and not as_json:
        out.print(size_note)
    ws = open_workspace(workspace)
    if multi_label:
        from smartset.learn._multilabel_workspace import train_multilabel as train
    result = train(ws, version, model=model, size=size, mode=mode, test_fraction=test_fraction,
                   seed=seed, resume_run=resume, progress=show_progress(as_json), epochs=epochs,
                   batch_size=batch_size, lr=lr, weight_decay=weight_decay, augment=augment,
                   class_weight=class_weight, balanced_sampling=balanced_sampling,
                   val_fraction=val_fraction, patience=patience,
                   init_from=str(init_from) if init_from else None,
                   trainable_blocks=trainable_blocks, backbone_lr_scale=backbone_lr_scale,
                   head_epochs=head_epochs, preprocess=preprocess, lr_decay=lr_decay,
                   unfreeze=unfreeze, freeze_bn=freeze_bn, include_derived=include_derived,
                   **({"lr_find": True} if lr_find else {}),
                   **({"mix": {k: v for k, v in (("mixup", mixup), ("cutmix", cutmix)) if v}}
                      if mixup or cutmix else {}),
                   **({"schedule": schedule} if schedule != "cosine" else {}),
                   **({"precision": precision} if precision != "fp32" else {}))
    _print_train(ws, result, as_json)


def _print_train(ws, result: dict, as_json: bool) -> None:
    if as_json:
        print_json(result)
        return
    if result["config"].get("task") == "multilabel":
        return _print_multilabel(ws, result, "train")
    config = result["config"]
    history = result["history"]
    columns = [c for c in ("epoch", "trainable_blocks", "loss", "accuracy", "val_loss",
                           "val_accuracy", "seconds") if c in history[-1]]
    where = f"version {config['version']!r}" if config.get("version") else "the live catalog"
    found = config.get("lr_find")
    if found:
        out.print(f"lr range test: {found['method']} suggestion {found['lr']:.2e} (steep "
                  f"{found['steep']:.2e}, minimum/10 {found['minimum']:.2e}; default "
                  f"{found['default_lr']:.0e}); plot: "
                  f"{ws.path / 'models' / ('run-' + str(result['run_id'])) / found['plot']}")
    out.print(_table(f"run {result['run_id']}: {config['model']} on {where} (train "
                     f"{config['n_train']}, {result.get('precision', 'fp32')})", history,
                     columns))
    test = result.get("test")
    if test:
        if "accuracy" in test:
            out.print(f"held-out accuracy {test['accuracy']:.4f} on {test['n']} samples "
                      f"({result['holdout']}); macro F1 {test['macro']['f1']:.4f}")
            out.print(f"confusion matrix: {test.get('confusion_png')}")
        else:
            out.print(f"held-out MAE {test['mae']:.4f}, RMSE {test['rmse']:.4f} on {test['n']}")
    leakage = result.get("leakage") or {}
    if leakage.get("n"):
        with_leaked = result.get("test_with_leaked") or {}
        score = (f"; with them: accuracy {with_leaked['accuracy']:.4f} on {with_leaked['n']}"
                 if "accuracy" in with_leaked else "")
        out.print(f"overlap: {leakage['n']} held-out samples copy training "
                  f"samples ({leakage['same_sample']} the same, {leakage['lineage']} by "
                  f"lineage, {leakage['duplicates']} duplicates: same bytes or an audit "
                  f"duplicate set); left out of the score above{score}. 'smartset evaluate "
                  f"--exclude-leaked' scores the same way.")
    out.print(f"checkpoint: {ws.path / result['checkpoint']}")


def _print_multilabel(ws, result: dict, what: str, as_json: bool = False) -> None:
    """Render a multi-label train, evaluate or predict result."""
    from smartset.learn.multilabel_metrics import format_multilabel

    if as_json:
        print_json(result)
        return
    if what == "train":
        config, history = result["config"], result["history"]
        columns = [c for c in ("epoch", "loss", "val_loss", "seconds") if c in history[-1]]
        out.print(_table(f"run {result['run_id']}: multi-label {config['model']} (train "
                         f"{config['n_train']}, {len(config['classes'])} classes)", history,
                         columns))
    report = result.get("test") if what == "train" else result
    if what == "predict":
        out.print(f"run {result['run_id']}: {result['n']} images predicted")
        out.print(_table("predicted tags (at each class's threshold)",
                         [{"class": c, "threshold": round(result["thresholds"][c], 4),
                           "images": n} for c, n in result["counts"].items()],
                         ["class", "threshold", "images"]))
        for name, reason in result["skipped"][:10]:
            out.print(f"  skipped {name}: {reason}")
        out.print(f"CSV (file, predicted tags joined by '|', one probability per class): "
                  f"{result['path']}")
        return
    if report:
        where = result.get("holdout") or (f"left out {report['left_out_trained']} samples "
                                          f"the run trained on or copies of them")
        out.print(f"held-out multi-label scores ({where}):")
        out.print(format_multilabel(report), markup=False)
    if what == "train":
        out.print(f"checkpoint (with the per-class thresholds): {ws.path / result['checkpoint']}")
    elif result.get("path"):
        out.print(f"report: {result['path']}")


@handle_errors
def predict_command(
    run: Annotated[Optional[str], typer.Argument(
        metavar="[RUN]",
        help="A training run id, 'last', a checkpoint file, several run ids '3,4,5' (an "
             "ensemble), or a 'predict --oof' run on a backbone (its linear head): predict "
             "the images of --version or --folder and write a CSV.")] = None,
    workspace: WorkspaceOption = None, version: VersionOption = None,
    oof: Annotated[bool, typer.Option("--oof", help="Out-of-fold: each sample predicted by a model that did not see it.")] = False,
    folder: Annotated[Optional[Path], typer.Option(help="With RUN: predict every image under this folder (recursively) instead of a version.")] = None,
    out_csv: Annotated[Optional[Path], typer.Option("--out", help="With RUN: the CSV to write (default: ws/reports/predict/run-N-NAME.csv).")] = None,
    tta: Annotated[bool, typer.Option("--tta", help="With RUN: average the probabilities of each image and its mirror image.")] = False,
    tta_shift: Annotated[bool, typer.Option("--tta-shift", help="With --tta: also 4% shifted views (6 views in all).")] = False,
    tta_policy: Annotated[Optional[str], typer.Option("--tta-policy", help="With RUN: test-time views by name instead of --tta: flip, shift (5 views of 4% shifts), flip+shift, or an augmentation policy (the image + --tta-n - 1 seeded draws).")] = None,
    tta_n: Annotated[Optional[int], typer.Option("--tta-n", min=2, help="Views of --tta-policy (a policy: default 5; flip/shift: the first N).")] = None,
    folds: Annotated[int, typer.Option(min=2)] = 5,
    backbone: Annotated[Optional[str], typer.Option(help="--oof with a frozen backbone + linear head: efficientnet_lite0 (the default on photos), efficientnet_lite1/2, timm:NAME[=weights.pth].")] = None,
    model: Annotated[Optional[str], typer.Option(help="--oof with a CNN trained per fold (default on small gray images: small_cnn).")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="CNN: epochs per fold (default 8).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="CNN: training batch (default 64); backbone: embedding batch (default 32).")] = None,
    augment: Annotated[Optional[str], typer.Option(help="Online augmentation policy of the fold CNNs (implies a CNN).")] = None,
    size: Annotated[Optional[int], typer.Option(help="CNN: resize images to SIZE x SIZE (default: their own size when they share one, else at most 64 px).")] = None,
    mode: ModeOption = None, seed: SeedOption = 0,
    engine: Annotated[Optional[str], typer.Option(
        envvar="SMARTSET_ENGINE", callback=check_engine,
        help="CNN: where the fold models predict their held-out samples; backbone: where "
             "the images are embedded. serial, local or ray (Ray Data: pip install "
             "'smartset[ray]'); default: in this process.")] = None,
    ray_address: RayAddressOption = None,
    as_json: JsonOption = False,
) -> None:
    """Out-of-fold probabilities (--oof, for 'smartset clean'), or a RUN's predictions as a CSV."""
    from smartset.learn._workspace import predict_images, predict_oof

    if oof and run is not None:
        raise typer.BadParameter("give RUN (predict with a trained model) or --oof "
                                 "(out-of-fold probabilities), not both.")
    if not oof and run is None:
        raise typer.BadParameter("give a trained RUN to predict with ('smartset predict 7 "
                                 "--folder test/'), or --oof for out-of-fold probabilities.")
    ws = open_workspace(workspace)
    if run is not None:
        if tta_shift and not tta:
            raise typer.BadParameter("--tta-shift adds views to --tta: give both.")
        if tta_policy is not None and tta:
            raise typer.BadParameter("give --tta (mirror) or --tta-policy NAME, not both.")
        from smartset.learn._multilabel_workspace import is_multilabel_run, predict_multilabel

        if is_multilabel_run(ws, _last_run(ws, run)):
            if tta or tta_policy:
                raise typer.BadParameter("test-time views are not available for multi-label "
                                         "runs yet: leave out --tta/--tta-policy.")
            result = predict_multilabel(ws, _last_run(ws, run), version, folder=folder,
                                        out=out_csv, progress=show_progress(as_json))
            return _print_multilabel(ws, result, "predict", as_json)
        result = predict_images(ws, _last_run(ws, run), version, folder=folder, out=out_csv,
                                tta=tta_policy or ("flip+shift" if tta_shift else tta),
                                tta_n=tta_n, batch_size=batch_size or 64,
                                progress=show_progress(as_json))
        if as_json:
            print_json(result)
            return
        views = f", test-time views averaged: {', '.join(result['tta'])}" if result["tta"] else ""
        out.print(f"run {result['run_id']}: {result['n']} images predicted with "
                  f"{result['model']}{views}")
        out.print(_table("predicted classes", [{"class": c, "images": n}
                                               for c, n in result["counts"].items()],
                         ["class", "images"]))
        for name, reason in result["skipped"][:10]:
            out.print(f"  skipped {name}: {reason}")
        if len(result["skipped"]) > 10:
            out.print(f"  ... and {len(result['skipped']) - 10} more skipped")
        out.print(f"CSV (file, label, one probability column per class): {result['path']}")
        return
    use_ray_address(ray_address)
    options = {k: v for k, v in (("epochs", epochs), ("batch_size", batch_size),
                                 ("augment", augment)) if v is not None}
    result = predict_oof(ws, version, model=model, backbone=backbone, folds=folds, size=size,
                         mode=mode, seed=seed, engine=engine, progress=show_progress(as_json),
                         **options)
    if as_json:
        print_json(result)
        return
    oof_report = result["oof"]
    config = result["config"]
    out.print(f"model: {result['chosen']['reason']}")
    if config.get("size_note"):
        out.print(f"size: {config['size_note']}")
    if config.get("ignored_options"):
        out.print(f"ignored with a frozen backbone: "
                  f"{', '.join('--' + o.replace('_', '-') for o in config['ignored_options'])}")
    if "embedding" in result:
        e = result["embedding"]
        out.print(f"embeddings: {e['backbone']} at {e['size']} px, {e['dim']}-d; "
                  f"{e['cached']} cached, {e['computed']} computed ({e['seconds']:.1f} s); "
                  f"head fitted in {result['head_seconds']:.2f} s")
        if e["missing"]:
            out.print(f"  {len(e['missing'])} sample(s) could not be decoded and have no "
                      f"probabilities (see 'smartset embed')")
    what = config["backbone"] + " + linear head" if config.get("backbone") else config["model"]
    out.print(f"run {result['run_id']}: out-of-fold probabilities for {oof_report['n']} samples "
              f"({folds} folds, {what}); out-of-fold accuracy {oof_report['accuracy']:.4f}")
    for pair in oof_report["most_confused"][:5]:
        out.print(f"  ({pair['true']}) predicted {pair['predicted']}: {pair['count']}")
    if config.get("backbone"):
        out.print(f"predict new images with it: smartset predict {result['run_id']} "
                  f"--folder PATH")


@handle_errors
def evaluate_command(
    model: Annotated[str, typer.Argument(help="A training run id, 'last' (the newest finished training run), a checkpoint file, or several run ids '3,4,5' (an ensemble).")],
    workspace: WorkspaceOption = None, version: VersionOption = None,
    split: Annotated[Optional[str], typer.Option(help="Evaluate only this split.")] = None,
    held_out: Annotated[bool, typer.Option(help="Evaluate the samples the run(s) did not train on.")] = False,
    shift: Annotated[Optional[list[str]], typer.Option(callback=one_of(SHIFTS), help="Also under a synthetic shift: darker, brighter, blurred, rotated, noisier, lowres (repeatable).")] = None,
    positive: Annotated[Optional[str], typer.Option(help="A class: add the knife-study table (TP, FP, precision, recall, F1) per condition.")] = None,
    preprocess: Annotated[Optional[str], typer.Option(help="Test-time preprocessing: 'dacolt', or 'none' (default: the model's own).")] = None,
    force: Annotated[bool, typer.Option(help="Evaluate even on samples seen in training (the report is marked).")] = False,
    exclude_leaked: Annotated[bool, typer.Option(help="Score without the samples seen in training (the same, copies by lineage, duplicates) and say how many were left out.")] = False,
    include_derived: Annotated[bool, typer.Option(help="Also score augmented copies (default: originals only).")] = False,
    tta: Annotated[Optional[str], typer.Option(help="Also score under test-time augmentation, beside the plain score: flip, shift, flip+shift, or an augmentation policy (the image + --tta-n - 1 seeded draws).")] = None,
    tta_n: Annotated[Optional[int], typer.Option("--tta-n", min=2, help="Views of --tta (a policy: default 5; flip/shift: the first N).")] = None,
    saliency: Annotated[bool, typer.Option(help="Write saliency.png: the misclassified images beside their occlusion and Grad-CAM maps (and per-sample maps for the review app's focus view).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Accuracy, per-class precision/recall/F1, confusion matrix, top losses, robustness."""
    from smartset.learn._workspace import evaluate

    ws = open_workspace(workspace)
    model = _last_run(ws, model)
    from smartset.learn._multilabel_workspace import evaluate_multilabel, is_multilabel_run

    if is_multilabel_run(ws, model):
        result = evaluate_multilabel(ws, model, version, split=split, force=force,
                                     progress=show_progress(as_json))
        return _print_multilabel(ws, result, "evaluate", as_json)
    result = evaluate(ws, model, version, split=split, force=force, held_out=held_out,
                      exclude_leaked=exclude_leaked, include_derived=include_derived,
                      shifts=shift or (), positive=positive, preprocess=preprocess,
                      tta=tta, tta_n=tta_n, saliency=saliency,
                      progress=show_progress(as_json))
    if as_json:
        print_json(result)
        return
    where = (f"version {version!r}" if version else "the live catalog") + \
        (f", split {split!r}" if split else "")
    left = result.get("left_out") or {}
    notes = [f"{left['derived']} augmented copies (only originals are scored; "
             f"--include-derived)" if left.get("derived") else "",
             f"{left['trained']} samples the model trained on" if left.get("trained") else "",
             f"{left['copies_of_trained']} copies or duplicates of them"
             if left.get("copies_of_trained") else ""]
    notes = [n for n in notes if n]
    out.print(f"scored {result['n']} samples of {where}"
              + (f"; left out: {', '.join(notes)}" if notes else ""))
    if result["leakage"]["n"]:
        out.print(f"LEAKAGE: {result['leakage']['n']} evaluated samples were seen "
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
    if result.get("tta"):
        found = result["tta"]
        out.print(_table(f"plain vs test-time augmentation ({', '.join(found['views'])})",
                         found["rows"], ["scoring", "views", "accuracy", "macro_f1"]))
    if result.get("saliency"):
        found = result["saliency"]
        out.print(f"saliency ({found['n_shown']} {found['shown']}, occlusion and Grad-CAM): "
                  f"{found['montage_png']}")


study_app = typer.Typer(help="Measure what a data step is worth.", no_args_is_help=True,
                        cls=SmartsetGroup, rich_markup_mode=None)


@study_app.command("augment")
@handle_errors
def study_augment_command(
    workspace: WorkspaceOption = None, version: VersionOption = None,
    combinations: Annotated[Optional[str], typer.Option(help="Comma-separated named policies (default: all of the study).")] = None,
    runs: Annotated[int, typer.Option(min=1, help="Runs per combination, seeds SEED..SEED+R-1, the same for every combination (paired with 'original'); under 3 the table cautions.")] = 3,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs per run (ignored with --steps).")] = 5,
    steps: Annotated[Optional[int], typer.Option(min=1, help="A fixed budget of optimizer steps for every combination and factor (epochs then derived and recorded).")] = None,
    factor: Annotated[str, typer.Option(help="Comma-separated expansion factors: 1 augments online, 5 or 25 expand the training set offline to 5x/25x (originals included), e.g. 1,5,25. 'original' runs at x1.")] = "1",
    train_size: Annotated[Optional[int], typer.Option(help="Training instances (a stratified subset).")] = None,
    test_size: Annotated[Optional[int], typer.Option(help="Held-out instances.")] = None,
    model: Annotated[str, typer.Option(help="A model, or several comma-separated: one study each on the same seeds (lenet,network3,dropconnect: the MNIST study's three architectures).")] = "lenet",
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    lr: Annotated[float, typer.Option()] = 1e-3,
    weight_decay: Annotated[float, typer.Option()] = 0.0,
    size: SizeOption = None, mode: ModeOption = None, seed: SeedOption = 0,
    as_json: JsonOption = False,
) -> None:
    """Train the same model on each augmentation combination (and factor); the table of the
    source study with mean ± std, min/max and a paired comparison with 'original'."""
    from smartset.learn.study import study_augment_workspace

    ws = open_workspace(workspace)
    models = [m.strip() for m in model.split(",") if m.strip()]
    if not models:
        raise typer.BadParameter("--model: give at least one model name.")
    from smartset.learn.models import MODELS, UnknownModelError

    unknown = [n for n in models if n not in MODELS and not n.startswith("timm:")]
    if unknown:  # one line, before any study runs
        raise UnknownModelError(f"Unknown model(s) {', '.join(unknown)}; models: "
                                f"{', '.join(MODELS)} (see 'smartset models').")
    results = []
    for name in models:
        result = study_augment_workspace(
            ws, version, combinations=combinations.split(",") if combinations else None,
            runs=runs, epochs=epochs, steps=steps, factor=factor, train_size=train_size,
            test_size=test_size, model=name, batch_size=batch_size, lr=lr,
            weight_decay=weight_decay, size=size, mode=mode, seed=seed,
            progress=show_progress(as_json))
        results.append(result)
        if not as_json:
            if len(models) > 1:
                out.print(f"[bold]model {name}[/]")
            out.print(result["markdown"])
            out.print(f"table: {result['csv']}\nruns: {result['runs_csv']}\nplot: "
                      f"{result['plot']}")
    if as_json:
        print_json(results[0] if len(results) == 1 else
                   {"studies": [{"model": n, **r} for n, r in zip(models, results)]})


@study_app.command("transfer")
@handle_errors
def study_transfer_command(
    workspace: WorkspaceOption = None, version: VersionOption = None,
    backbone: Annotated[str, typer.Option(help="The pretrained backbone (see 'smartset models').")] = "efficientnet_lite0",
    seeds: Annotated[int, typer.Option(min=1, help="Runs per setting, seeds SEED..SEED+N-1, each with its own hold-out split.")] = 3,
    settings: Annotated[str, typer.Option(help="Comma-separated: scratch, frozen, finetuned, finetuned-frozen-bn (fine-tuned with the batch-norm statistics frozen).")] = "scratch,frozen,finetuned",
    scratch_models: Annotated[str, typer.Option(help="Comma-separated models trained from scratch (the best is marked).")] = "small_cnn,resnet",
    scratch_size: Annotated[int, typer.Option(min=8, help="Input side of the scratch models.")] = 64,
    scratch_epochs: Annotated[int, typer.Option(min=1)] = 20,
    frozen_epochs: Annotated[int, typer.Option(min=1, help="Epochs of the new head on the frozen features.")] = 30,
    finetune_epochs: Annotated[int, typer.Option(min=2, help="Fine-tuning epochs, --head-epochs of them the head alone.")] = 4,
    head_epochs: Annotated[int, typer.Option(min=0)] = 1,
    lr_decay: Annotated[float, typer.Option(help="Discriminative rates: factor per block below the head.")] = 0.7,
    unfreeze: Annotated[str, typer.Option(help="'all' or 'gradual'.")] = "all",
    freeze_bn: Annotated[bool, typer.Option(help="Keep the backbone's batch-norm statistics frozen while fine-tuning.")] = False,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float, typer.Option()] = 1e-3,
    size: Annotated[Optional[int], typer.Option(help="Input side of the backbone (default: its own, 224 for efficientnet_lite0; 160 is about twice as fast on a CPU).")] = None,
    mode: ModeOption = None,
    test_fraction: Annotated[float, typer.Option(help="Held-out share when the version has no test split.")] = 0.2,
    seed: SeedOption = 0,
    as_json: JsonOption = False,
) -> None:
    """From scratch vs frozen backbone + new head vs fine-tuned: held-out accuracy over
    seeds (mean, std, best) and training time, as CSV, markdown and a plot."""
    from smartset.learn.pretrained import check_model
    from smartset.learn.study import study_transfer_workspace

    check_model(backbone)  # a missing package: one line, before any image is decoded
    ws = open_workspace(workspace)
    result = study_transfer_workspace(
        ws, version, backbone=backbone, seeds=seeds, seed=seed, size=size, mode=mode,
        test_fraction=test_fraction, progress=show_progress(as_json),
        settings=[x.strip() for x in settings.split(",") if x.strip()],
        scratch_models=[x.strip() for x in scratch_models.split(",") if x.strip()],
        scratch_size=scratch_size, scratch_epochs=scratch_epochs, frozen_epochs=frozen_epochs,
        finetune_epochs=finetune_epochs, head_epochs=head_epochs, lr_decay=lr_decay,
        unfreeze=unfreeze, freeze_bn=freeze_bn, batch_size=batch_size, lr=lr)
    if as_json:
        print_json(result)
        return
    out.print(result["markdown"])
    out.print(f"table: {result['csv']}\nruns: {result['runs_csv']}\nplot: {result['plot']}")


def register(app: typer.Typer) -> None:
    app.command("models")(models_command)
    app.command("baseline")(baseline_command)
    app.command("train")(train_command)
    app.command("predict")(predict_command)
    app.command("evaluate")(evaluate_command)
    app.add_typer(study_app, name="study")


def _last_run(ws, run: str) -> str:
    """``last``: the newest finished training run."""
    if run != "last":
        return run
    from smartset.errors import EmptyDataError

    newest = ws.catalog.newest_run_id("train", status="done")  # the catalog reads runs
    if newest is None:
        raise EmptyDataError("No finished training run yet: run 'smartset train' first "
                             "(or give a run id; see 'smartset runs').")
    return str(newest)
