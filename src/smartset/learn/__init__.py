"""Learning and evaluation: baselines, CNNs from scratch, transfer learning and fine-tuning,
ensembles, out-of-fold predictions, evaluation by condition, and the augmentation study.

Array functions first (``ImageClassifier``, ``cross_val_predict``, ``classification_report``);
the workspace functions (``train``, ``predict_oof``, ``evaluate``, ``baselines``,
``study_augment_workspace``) record runs, checkpoints and predictions in the catalog; the
CLI is a thin layer over them. Names load on first use, so the CLI starts without torch.
"""

from __future__ import annotations

from smartset._lazy import lazy_exports

_EXPORTS = {
    "smartset.learn.errors": ["LearnError", "CheckpointError", "LeakageError", "NotFittedError"],
    "smartset.learn.models": ["MODELS", "Net", "available_models", "build_model",
                              "register_model", "UnknownModelError"],
    "smartset.learn.estimator": ["ImageClassifier", "ImageRegressor", "load_checkpoint"],
    "smartset.learn.crossval": ["cross_val_predict", "ensemble_proba", "fold_ids",
                                "EnsembleClassifier"],
    "smartset.learn.inference": ["predict_batch", "predict_on_engine"],
    "smartset.learn._baselines": ["classification_baselines", "regression_baselines"],
    "smartset.learn.metrics": ["classification_report", "regression_report", "top_losses",
                               "plot_confusion", "misclassified_montage"],
    "smartset.learn.robustness": ["SHIFTS", "shift_images", "brightness", "dacolt_preprocess",
                                  "dacolt_policy", "condition_table"],
    "smartset.learn.data": ["load_version", "LoadedData"],
    "smartset.learn._workspace": ["train", "predict_oof", "evaluate", "baselines", "load_model",
                                  "read_oof_features", "oof_features_of", "predict_images", "choose_oof_model",
                                  "auto_size"],
    "smartset.learn.heads": ["LinearHead", "cross_val_head"],
    "smartset.learn.multilabel": ["MultiLabelClassifier", "cross_val_predict_multilabel",
                                  "group_folds"],
    "smartset.learn.multilabel_metrics": ["multilabel_report", "choose_thresholds",
                                          "average_precision", "format_multilabel"],
    "smartset.learn._multilabel_workspace": ["train_multilabel", "evaluate_multilabel",
                                             "predict_multilabel", "load_tagged"],
    "smartset.learn.study": ["study_augment", "study_augment_workspace", "study_transfer",
                             "study_transfer_workspace", "paired_differences", "plot_study"],
}

__all__, __getattr__, __dir__ = lazy_exports("smartset.learn", _EXPORTS)
