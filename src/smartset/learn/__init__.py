"""Learning and evaluation: baselines, CNNs from scratch, transfer learning and fine-tuning,
ensembles, out-of-fold predictions, evaluation by condition, and the augmentation study.

Array functions first (``ImageClassifier``, ``cross_val_predict``, ``evaluate_predictions``);
the workspace functions (``train``, ``predict_oof``, ``evaluate``) record runs, checkpoints
and predictions in the catalog; the CLI is a thin layer over them.
"""

from smartset.learn.crossval import cross_val_predict, ensemble_proba, fold_ids
from smartset.learn.errors import CheckpointError, LeakageError, LearnError, NotFittedError
from smartset.learn.estimator import ImageClassifier, ImageRegressor, load_checkpoint
from smartset.learn.models import MODELS, Net, available_models, build_model, register_model

__all__ = ["ImageClassifier", "ImageRegressor", "load_checkpoint", "cross_val_predict",
           "ensemble_proba", "fold_ids", "MODELS", "Net", "available_models", "build_model",
           "register_model", "LearnError", "CheckpointError", "LeakageError", "NotFittedError"]
