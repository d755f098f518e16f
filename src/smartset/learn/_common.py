"""What the learning stage's workspace functions share: where a run's files go, which
estimator a task and model make, the report written after fitting, JSON-safe options and
a backbone's preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smartset.learn.data import LoadedData
from smartset.learn.estimator import ImageClassifier, ImageRegressor
from smartset.learn.metrics import (classification_report, misclassified_montage,
                                    plot_confusion, regression_report, top_losses)


def run_dir(ws, run_id: int) -> Path:
    return ws.path / "models" / f"run-{run_id}"



_ESTIMATOR_LR = 1e-3  # ImageClassifier's default learning rate, recorded beside lr_find's


def _estimator(task: str, model: str, options: dict):
    cls = ImageClassifier if task == "classification" else ImageRegressor
    return cls(model, **options)


def _report(task, model, data: LoadedData, rows, out_dir: Path | None, title: str) -> dict:
    if task == "classification":
        probs = model.predict_proba(data.images[rows])
        report = classification_report(data.labels[rows], probs, model.classes_)
        losses = top_losses(data.labels[rows], probs, model.classes_, k=20)
        report["top_losses"] = [{**loss, "sample_id": data.ids[rows][loss["row"]],
                                 "path": data.paths[rows][loss["row"]]} for loss in losses]
        if out_dir is not None:
            report["confusion_png"] = str(plot_confusion(report["confusion"], model.classes_,
                                                         out_dir / "confusion.png", title=title))
            montage = misclassified_montage(
                data.images[rows], data.labels[rows],
                np.asarray(model.classes_, dtype=object)[probs.argmax(1)],
                out_dir / "misclassified.png")
            report["misclassified_png"] = str(montage) if montage else None
        return report | {"probs": probs}
    predicted = model.predict(data.images[rows])
    return regression_report(data.targets[rows], predicted) | {"predicted": predicted}


def _preprocessing_of(backbone: str) -> dict:
    from smartset.backbones import backbone_spec

    return backbone_spec(backbone).preprocessing()


def _jsonable(options: dict) -> dict:
    out = {}
    for key, value in options.items():
        if isinstance(value, (str, int, float, bool, type(None), list, tuple, dict)):
            out[key] = value
        elif isinstance(value, Path):
            out[key] = str(value)
        else:
            label = getattr(value, "label", None)
            out[key] = label() if callable(label) else repr(value)
    return out
