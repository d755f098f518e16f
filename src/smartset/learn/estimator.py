"""Train a network on image arrays: :class:`ImageClassifier` and :class:`ImageRegressor`.

scikit-learn conventions: ``__init__`` stores options, ``fit`` returns ``self``, learned
state ends in ``_``. Seeded and reproducible on CPU (the global torch RNG is forked, never
reseeded for the caller); CUDA when present. Checkpoints are written after every epoch, and
a killed run resumes from its last one (``resume=True``).

Transfer learning and fine-tuning (``model="efficientnet_lite0"``, any name of
:mod:`smartset.backbones`, ``timm:NAME[=weights]``, or ``init_from`` a smartset checkpoint):

- Input normalisation is the backbone's own (its ImageNet mean/std), or the source
  checkpoint's: never recomputed on the new data (a pretrained network fed inputs scaled
  differently from its training sees other images). It is saved in the checkpoint as
  ``preprocessing`` (backbone, size, mean, std, where it came from).
- ``trainable_blocks=0`` (a frozen backbone + a new head) without augmentation computes
  the backbone's features once and trains the head on them (seconds, not an epoch of
  forward passes each time); ``frozen_features=False`` turns that off.
- ``head_epochs``: the new head trains alone first; then the backbone joins with
  discriminative learning rates: block ``i`` of ``B`` (input first) learns at
  ``lr * backbone_lr_scale * lr_decay ** (B - i)`` (the head at ``lr``). Defaults (None):
  for an ImageNet backbone that is fine-tuned, 1 head epoch and ``lr_decay`` 0.7; else 0
  and 1.0 (one rate for all);
  ``unfreeze="gradual"`` adds one block from the top per epoch (ULMFiT) instead of all at
  once. Frozen blocks keep their batch norms in eval mode (running statistics untouched);
  ``freeze_bn=True`` keeps every batch norm of the backbone so (small data sets).
"""

from __future__ import annotations

import math
import time
from importlib import import_module
from pathlib import Path

import numpy as np

from smartset._checkpoint import read_state, save_state
from smartset._progress import progress_bar
from smartset._threads import choose_threads, limit_threads
from smartset._torch import require_torch
from smartset.learn._arrays import as_image_tensor, as_targets, encode_labels
from smartset.learn.errors import CheckpointError, LearnError, NotFittedError
from smartset.learn.models import Net, build_model

torch = require_torch("smartset.learn")
F = torch.nn.functional

__all__ = ["ImageClassifier", "ImageRegressor", "load_checkpoint", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "smartset.checkpoint/1"


def _device(device: str | None) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


_TASKS: dict[str, type] = {}  # task name -> estimator class, for load_checkpoint


class _ImageModel:
    _task = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls._task:  # each task's estimator registers itself (multilabel.py's too)
            _TASKS[cls._task] = cls

    def __init__(self, model: str = "lenet", *, epochs: int = 10, batch_size: int = 64,
                 lr: float = 1e-3, weight_decay: float = 0.0, augment=None, mix=None,
                 class_weight: str | None = None, balanced_sampling: bool = False,
                 val_fraction: float = 0.0, patience: int | None = None, seed: int = 0,
                 device: str | None = None, checkpoint: str | Path | None = None,
                 resume: bool = False, init_from: str | Path | Net | None = None,
                 trainable_blocks: int = -1, backbone_lr_scale: float = 1.0,
                 schedule: str = "cosine", preprocess: str | None = None,
                 head_epochs: int | None = None, lr_decay: float | None = None,
                 unfreeze: str = "all",
                 freeze_bn: bool = False, frozen_features: bool = True,
                 precision: str = "fp32", progress: bool | None = None,
                 threads: int | None = None):
        self.model = model
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.augment = augment
        self.mix = mix  # MixUp/CutMix of training batches (smartset.augment.BatchMix)
        self.class_weight = class_weight
        self.balanced_sampling = balanced_sampling
        self.val_fraction = val_fraction
        self.patience = patience
        self.seed = seed
        self.device = device
        self.checkpoint = checkpoint
        self.resume = resume
        self.init_from = init_from
        self.trainable_blocks = trainable_blocks
        self.backbone_lr_scale = backbone_lr_scale
        self.schedule = schedule
        self.preprocess = preprocess
        self.head_epochs = head_epochs
        self.lr_decay = lr_decay
        self.unfreeze = unfreeze
        self.freeze_bn = freeze_bn
        self.frozen_features = frozen_features
        self.precision = precision
        self.progress = progress
        self.threads = threads  # None: smartset._threads.choose_threads(purpose="train")

    def get_params(self) -> dict:
        params = {k: getattr(self, k) for k in (
            "model", "epochs", "batch_size", "lr", "weight_decay", "class_weight",
            "balanced_sampling", "val_fraction", "patience", "seed", "trainable_blocks",
            "backbone_lr_scale", "schedule", "preprocess", "head_epochs", "lr_decay",
            "unfreeze", "freeze_bn", "frozen_features", "precision", "threads")}
        params["augment"] = _policy_label(self.augment)
        params["mix"] = (self.mix if self.mix is None or isinstance(self.mix, (str, dict))
                         else _policy_label(self.mix))
        params["init_from"] = (None if self.init_from is None else
                               "network" if isinstance(self.init_from, Net) else str(self.init_from))
        return params

    # -- validation of options ------------------------------------------------------------
    def _check_options(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise LearnError(f"{name} must be a positive integer, got {value!r}")
        if self.head_epochs is not None and (not isinstance(self.head_epochs, int)
                                             or not 0 <= self.head_epochs < self.epochs):
            raise LearnError(f"head_epochs must be an integer in [0, epochs), got "
                             f"{self.head_epochs!r}")
        if not 0.0 <= self.val_fraction < 0.9:
            raise LearnError(f"val_fraction must be in [0, 0.9), got {self.val_fraction}")
        if self.class_weight not in (None, "balanced"):
            raise LearnError(f"class_weight must be None or 'balanced', got {self.class_weight!r}")
        from smartset.learn.robustness import PREPROCESSING

        if self.preprocess is not None and self.preprocess not in PREPROCESSING:
            raise LearnError(f"Unknown preprocessing {self.preprocess!r}; choose from "
                             f"{', '.join(PREPROCESSING)} (or none).")
        if self.schedule not in ("cosine", "constant", "one-cycle"):
            raise LearnError(f"schedule must be 'cosine', 'one-cycle' or 'constant', got "
                             f"{self.schedule!r}")
        from smartset.learn.precision import check_precision

        check_precision(self.precision)
        if self.lr <= 0:
            raise LearnError(f"lr must be positive, got {self.lr}")
        if self.unfreeze not in ("all", "gradual"):
            raise LearnError(f"unfreeze must be 'all' or 'gradual', got {self.unfreeze!r}")
        if (self.lr_decay is not None and not self.lr_decay > 0) or not self.backbone_lr_scale >= 0:
            raise LearnError(f"lr_decay must be positive and backbone_lr_scale non-negative, "
                             f"got {self.lr_decay} and {self.backbone_lr_scale}")
        from smartset.learn.pretrained import check_model

        check_model(self._architecture_name())  # a missing package: one line, before any work

    def _imagenet_finetuning(self) -> bool:
        from smartset.learn.pretrained import is_pretrained

        from_name = self.init_from is None or (isinstance(self.init_from, str)
                                               and is_pretrained(self.init_from))
        return from_name and is_pretrained(self._architecture_name()) and self.trainable_blocks != 0

    def _head_epochs(self) -> int:
        """``head_epochs``, or by default 1 when an ImageNet backbone is fine-tuned."""
        if self.head_epochs is not None:
            return self.head_epochs
        return 1 if self._imagenet_finetuning() and self.epochs > 1 else 0

    def _lr_decay(self) -> float:
        """``lr_decay``, or by default 0.7 when an ImageNet backbone is fine-tuned."""
        if self.lr_decay is not None:
            return self.lr_decay
        return 0.7 if self._imagenet_finetuning() else 1.0

    def _architecture_name(self) -> str:
        """The model to build: ``init_from`` when it names a pretrained backbone
        (``timm:resnet18``, ``efficientnet_lite0``), else ``model``."""
        from smartset.learn.pretrained import is_pretrained

        if isinstance(self.init_from, str) and is_pretrained(self.init_from):
            return self.init_from
        return self.model

    # -- fitting ---------------------------------------------------------------------------
    def _prepare_targets(self, y):
        raise NotImplementedError

    def fit(self, images, y, *, validation: tuple | None = None):
        """Train on ``images`` (uint8 ``(N,H,W[,C])``) and ``y`` (labels or targets).

        ``validation``: an explicit ``(images, y)`` held-out set for early stopping; else
        ``val_fraction`` of the training data is held out (stratified for classes).
        """
        self._check_options()
        x = as_image_tensor(images)
        targets = self._prepare_targets(y)
        if len(targets) != len(x):
            raise LearnError(f"{len(x)} images but {len(targets)} labels/targets")
        rng = np.random.default_rng(self.seed)
        if validation is not None:
            val_x, val_t = as_image_tensor(validation[0]), self._encode(validation[1])
        elif self.val_fraction > 0:
            val_idx = self._split_validation(targets, rng)
            keep = np.setdiff1d(np.arange(len(x)), val_idx)
            val_x, val_t = x[val_idx], targets[val_idx]
            x, targets = x[keep], targets[keep]
        else:
            val_x = val_t = None
        self.input_shape_ = tuple(int(v) for v in x.shape[1:])
        self.model_name_ = self.model
        self.preprocess_ = self.preprocess
        device = _device(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            network, source = self._make_network()
            self._set_normalisation(network, source, x)
            network.preprocessing = {k: self.preprocessing_[k]
                                     for k in ("backbone", "size", "mean", "std")}
            self.network_ = network.to(device)
            if self._channels_last():
                self.network_ = self.network_.to(memory_format=torch.channels_last)
            # threads on purpose (1 on < 4 cores or in a worker; SMARTSET_THREADS, threads=
            # override): torch's default of every core cost 5.7x the CPU per epoch when shared
            self.threads_ = choose_threads(self.threads, purpose="train")
            with limit_threads(self.threads_):
                self._train(x, targets, val_x, val_t, device)
        return self

    def _set_normalisation(self, network: Net, source, x) -> None:
        """``mean_``/``std_`` (per channel, on [0, 1]) and ``preprocessing_``: a pretrained
        backbone's own, a source checkpoint's, or (from scratch) measured on ``x``."""
        _, height, width = self.input_shape_
        size = height if height == width else [height, width]
        if source is not None:  # a smartset checkpoint: its normalisation, kept
            self.mean_, self.std_ = list(source.mean_), list(source.std_)
            backbone = (getattr(source, "preprocessing_", None) or {}).get("backbone")
            origin = f"checkpoint {self.init_from}"
        elif getattr(network, "preprocessing", None):  # a pretrained backbone (or a Net)
            known = network.preprocessing
            self.mean_, self.std_ = list(known["mean"]), list(known["std"])
            backbone, origin = known.get("backbone"), "backbone"
        else:
            floats = self._preprocessed(x[:2048]).float()
            self.mean_ = [float(v) for v in floats.mean(dim=(0, 2, 3)) / 255.0]
            self.std_ = [max(float(v), 1e-3) for v in floats.std(dim=(0, 2, 3)) / 255.0]
            backbone, origin = None, "data"
        if len(self.mean_) != self.input_shape_[0]:
            raise LearnError(f"The backbone was normalised for {len(self.mean_)}-channel "
                             f"images; these have {self.input_shape_[0]}: load the data in "
                             f"the same mode (--mode {'L' if len(self.mean_) == 1 else 'RGB'}).")
        self.preprocessing_ = {"backbone": backbone, "size": size, "mean": self.mean_,
                               "std": self.std_, "normalisation": origin}

    def _channels_last(self) -> bool:
        from smartset.learn.pretrained import is_pretrained

        return is_pretrained(self.model_name_)

    def _make_network(self):
        """``(network, source)``: the network to train and the source checkpoint's model
        (None unless ``init_from`` is a checkpoint)."""
        channels, height, width = self.input_shape_
        source = None
        if self.init_from is None or (isinstance(self.init_from, str)
                                      and self._architecture_name() == self.init_from):
            name = self._architecture_name()
            network = build_model(name, channels=channels, outputs=self._n_outputs(),
                                  size=(height, width))
            network.built_size = (height, width)
            if network.preprocessing:  # timm:NAME=weights.pth -> timm:NAME
                self.model_name_ = network.preprocessing["backbone"]
            if self.trainable_blocks >= 0:
                network.freeze_backbone(trainable_blocks=self.trainable_blocks)
            return network, None
        if isinstance(self.init_from, Net):
            network = self.init_from
        else:
            from smartset.learn.pretrained import is_pretrained

            source = load_checkpoint(self.init_from)
            c, h, w = source.input_shape_
            pooled = is_pretrained(source.model_name_)  # global pooling: any size
            if c != channels:
                raise LearnError(f"The backbone of {self.init_from} takes {c}-channel images; "
                                 f"these are {channels}-channel: load the data in its mode "
                                 f"(--mode {'L' if c == 1 else 'RGB'}).")
            if not pooled and (h, w) != (height, width) and not _takes_size(
                    source.network_, channels, height, width):
                raise LearnError(f"The backbone of {self.init_from} ({source.model_name_}, "
                                 f"trained on {w}x{h} images) ends in a flatten layer that "
                                 f"fixes its input size; these are {width}x{height}: load the "
                                 f"data with the same size and mode (--size {h}), or start "
                                 f"from a checkpoint with global pooling (resnet, a "
                                 f"pretrained backbone).")
            network, self.model_name_ = source.network_, source.model_name_
        import copy

        network = copy.deepcopy(network)
        network.replace_head(self._n_outputs())
        for parameter in network.parameters():
            parameter.requires_grad = True
        if self.trainable_blocks >= 0:
            network.freeze_backbone(trainable_blocks=self.trainable_blocks)
        return network, source

    def block_learning_rates(self, n_blocks: int) -> list[float]:
        """The base learning rate of each backbone block, input first:
        ``lr * backbone_lr_scale * lr_decay ** (n_blocks - i)`` (the head learns at ``lr``)."""
        decay = self._lr_decay()
        return [self.lr * self.backbone_lr_scale * decay ** (n_blocks - i)
                for i in range(n_blocks)]

    def _optimizer(self, network: Net):
        """Adam with one parameter group per backbone block (discriminative rates), named
        ``block{i}``, and ``head``; blocks frozen for good (``trainable_blocks``) are left
        out."""
        groups = [{"params": list(network.head.parameters()), "lr": self.lr, "name": "head"}]
        blocks = network.blocks()
        for i, (block, lr) in enumerate(zip(blocks, self.block_learning_rates(len(blocks)))):
            params = [p for p in block.parameters() if p.requires_grad]
            if params:
                groups.append({"params": params, "lr": lr, "name": f"block{i}"})
        return torch.optim.Adam(groups, lr=self.lr, weight_decay=self.weight_decay)

    def _trainable_top_blocks(self, epoch: int, n_blocks: int) -> int:
        """How many backbone blocks (from the top) may learn in ``epoch`` (0-based): none
        during the head epochs; then all, or (``unfreeze="gradual"``) one more per epoch."""
        head_epochs = self._head_epochs()
        if epoch < head_epochs:
            return 0
        if self.unfreeze == "gradual":
            return min(n_blocks, epoch - head_epochs + 1)
        return n_blocks

    def _preprocessed(self, batch: torch.Tensor) -> torch.Tensor:
        """The model's own test-time preprocessing (e.g. DaCoLT), also used in training."""
        name = getattr(self, "preprocess_", None)
        if name is None:
            return batch
        from smartset.learn.robustness import PREPROCESSING

        return PREPROCESSING[name](batch)

    def _normalise(self, batch: torch.Tensor, device) -> torch.Tensor:
        mean = torch.tensor(self.mean_, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.std_, device=device).view(1, -1, 1, 1)
        out = (self._preprocessed(batch).to(device).float() / 255.0 - mean) / std
        if self._channels_last():
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def _inference_batch(self) -> int:
        """Images per forward pass at inference: 512 small ones, fewer large ones (the
        activations of a 224 px batch of 512 would take gigabytes)."""
        _, height, width = self.input_shape_
        return int(max(8, min(512, 4_000_000 // max(1, height * width))))

    def _set_trainable(self, network: Net, allowed: list[list[bool]], top: int) -> None:
        """Let the top ``top`` blocks learn (those ``allowed``), freeze the rest, and put
        frozen blocks (every batch norm with ``freeze_bn``) in eval mode."""
        blocks = network.blocks()
        first = len(blocks) - top
        for i, (block, flags) in enumerate(zip(blocks, allowed)):
            for parameter, flag in zip(block.parameters(), flags):
                parameter.requires_grad = flag and i >= first
        network.train()
        for block in blocks:  # frozen blocks keep their batch-norm statistics and dropout off
            if not any(p.requires_grad for p in block.parameters()):
                block.eval()
        if self.freeze_bn:
            for module in network.backbone.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def _train(self, x, targets, val_x, val_t, device) -> None:
        network = self.network_
        blocks = network.blocks()
        allowed = [[p.requires_grad for p in block.parameters()] for block in blocks]
        policy = _resolve_policy(self.augment)
        mixer = None
        if self.mix is not None and self._task == "classification":
            from smartset.augment.mixing import resolve_mix

            mixer = resolve_mix(self.mix)
        if (self.frozen_features and policy is None and mixer is None
                and not any(flag for flags in allowed for flag in flags)):
            return self._train_head_on_features(x, targets, val_x, val_t, device)
        optimizer = self._optimizer(network)
        base_lrs = [group["lr"] for group in optimizer.param_groups]  # before any resume
        self.learning_rates_ = {g["name"]: lr for g, lr in zip(optimizer.param_groups, base_lrs)}
        generator = torch.Generator().manual_seed(self.seed)
        target_tensor = torch.from_numpy(targets)
        loss_fn = self._loss(targets, device)
        from smartset.learn.precision import autocast, grad_scaler, resolve_precision

        self.precision_ = resolve_precision(self.precision, device, self._architecture_name())
        scaler = grad_scaler(self.precision_, device)
        self.history_, start_epoch = [], 0
        best = (np.inf, None, -1)  # validation loss, weights, epoch
        started = time.perf_counter()
        checkpoint = Path(self.checkpoint) if self.checkpoint else None
        if checkpoint is not None and self.resume and checkpoint.exists():
            state = _read_checkpoint(checkpoint)
            if state.get("finished"):
                self._restore(state, network)
                return
            network.load_state_dict(state["state_dict"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            self.history_, start_epoch = list(state["history"]), int(state["epoch"]) + 1
            if state.get("best_state") is not None:
                best = (state["best_loss"], state["best_state"], state["best_epoch"])
        n = len(x)
        steps = (n + self.batch_size - 1) // self.batch_size
        with progress_bar((self.epochs - start_epoch) * steps, f"training {self.model_name_}",
                          enabled=self.progress) as advance:
            for epoch in range(start_epoch, self.epochs):
                # Fine-tuning: the new head learns alone first, so its random start does not
                # wreck the pretrained backbone; then the backbone joins, all at once or one
                # block from the top per epoch, each block at its own rate.
                top = self._trainable_top_blocks(epoch, len(blocks))
                self._set_trainable(network, allowed, top)
                order = self._epoch_order(targets, generator)
                total_loss, correct, seen = 0.0, 0, 0
                for first in range(0, n, self.batch_size):
                    rows = order[first:first + self.batch_size]
                    batch = x[rows]
                    if policy is not None:
                        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
                        batch = policy(batch, seed=seed)
                    self._schedule_step(optimizer, base_lrs, epoch * steps + first // self.batch_size,
                                        self.epochs * steps)
                    goal = None  # soft targets of a mixed batch
                    if mixer is not None:
                        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
                        batch, goal = mixer(batch, target_tensor[rows],
                                            num_classes=len(self.classes_), seed=seed)
                    inputs = self._normalise(batch, device)
                    truth = target_tensor[rows].to(device)
                    with autocast(self.precision_, device):
                        outputs = network(inputs)
                        loss = loss_fn(outputs, truth if goal is None else goal.to(device))
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    total_loss += float(loss.detach()) * len(rows)
                    seen += len(rows)
                    if self._task == "classification":
                        correct += int((outputs.argmax(1) == truth).sum())
                    shown = f"{self.model_name_} epoch {epoch + 1}/{self.epochs} loss {total_loss / seen:.4f}"
                    advance(1, shown + (f" acc {correct / seen:.4f}" if correct else ""))
                record = {"epoch": epoch + 1, "loss": total_loss / seen,
                          "seconds": round(time.perf_counter() - started, 3),
                          "trainable_blocks": sum(any(p.requires_grad for p in b.parameters())
                                                  for b in blocks)}
                if self._task == "classification":
                    record["accuracy"] = correct / seen
                if val_x is not None:
                    record.update(self._validate(network, val_x, val_t, loss_fn, device))
                    if record["val_loss"] < best[0]:
                        best = (record["val_loss"], _copy_state(network), epoch)
                self.history_.append(record)
                stop = (self.patience is not None and val_x is not None
                        and epoch - best[2] >= self.patience)
                if checkpoint is not None:
                    self._save_training_state(checkpoint, network, optimizer, generator, epoch,
                                              best)
                if stop:
                    break
        for block, flags in zip(blocks, allowed):  # as configured, for a later fit or save
            for parameter, flag in zip(block.parameters(), flags):
                parameter.requires_grad = flag
        self._finish(network, best, started, checkpoint)

    def _schedule_step(self, optimizer, base_lrs, step: int, total: int) -> None:
        if self.schedule == "cosine":  # per step, so a resumed run continues it
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * 0.5 * (1.0 + math.cos(math.pi * step / total))
        elif self.schedule == "one-cycle":  # fastai's fit_one_cycle: lr up then down,
            from smartset.learn.schedule import one_cycle, set_momentum  # momentum opposite

            factor, momentum = one_cycle(step, total)
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * factor
            set_momentum(optimizer, momentum)

    def _finish(self, network, best, started, checkpoint) -> None:
        if best[1] is not None:  # early stopping keeps the best epoch's weights
            network.load_state_dict(best[1])
        self.best_epoch_ = (best[2] + 1) if best[1] is not None else len(self.history_)
        self.train_seconds_ = time.perf_counter() - started
        network.eval()
        if checkpoint is not None:
            self.save(checkpoint)

    def _train_head_on_features(self, x, targets, val_x, val_t, device) -> None:
        """A frozen backbone without augmentation: its features are computed once (eval
        mode, as the per-epoch path would see them) and the head trains on them alone;
        the same batches, schedule and loss as the full path, in seconds."""
        network = self.network_
        started = time.perf_counter()
        checkpoint = Path(self.checkpoint) if self.checkpoint else None
        if checkpoint is not None and self.resume and checkpoint.exists():
            state = _read_checkpoint(checkpoint)
            if state.get("finished"):
                self._restore(state, network)
                return
        features = self._forward_all(network, x, device, features=True,
                                     label="frozen features").to(device)
        val_features = (None if val_x is None else
                        self._forward_all(network, val_x, device, features=True).to(device))
        head = network.head
        optimizer = torch.optim.Adam([{"params": list(head.parameters()), "lr": self.lr,
                                       "name": "head"}], lr=self.lr,
                                     weight_decay=self.weight_decay)
        base_lrs = [self.lr]
        self.learning_rates_ = {"head": self.lr}
        self.precision_ = "fp32"  # a linear head on cached features: nothing to gain
        generator = torch.Generator().manual_seed(self.seed)
        target_tensor = torch.from_numpy(targets).to(device)
        loss_fn = self._loss(targets, device)
        self.history_ = []
        best = (np.inf, None, -1)
        n = len(features)
        steps = (n + self.batch_size - 1) // self.batch_size
        self.features_seconds_ = time.perf_counter() - started
        head.train()
        with progress_bar(self.epochs, f"training the head of {self.model_name_}",
                          enabled=self.progress) as advance:
            for epoch in range(self.epochs):
                order = self._epoch_order(targets, generator)
                total_loss, correct = 0.0, 0
                for first in range(0, n, self.batch_size):
                    rows = order[first:first + self.batch_size].to(device)
                    self._schedule_step(optimizer, base_lrs, epoch * steps + first // self.batch_size,
                                        self.epochs * steps)
                    outputs = head(features[rows])
                    truth = target_tensor[rows]
                    loss = loss_fn(outputs, truth)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total_loss += float(loss.detach()) * len(rows)
                    if self._task == "classification":
                        correct += int((outputs.argmax(1) == truth).sum())
                record = {"epoch": epoch + 1, "loss": total_loss / n,
                          "seconds": round(time.perf_counter() - started, 3),
                          "trainable_blocks": 0}
                if self._task == "classification":
                    record["accuracy"] = correct / n
                if val_features is not None:
                    with torch.no_grad():
                        outputs = head(val_features)
                    truth = torch.from_numpy(val_t).to(device)
                    record["val_loss"] = float(loss_fn(outputs, truth))
                    if self._task == "classification":
                        record["val_accuracy"] = float((outputs.argmax(1) == truth).float().mean())
                    if record["val_loss"] < best[0]:
                        best = (record["val_loss"], _copy_state(network), epoch)
                self.history_.append(record)
                advance(1, f"head epoch {epoch + 1}/{self.epochs} loss {record['loss']:.4f}")
                if (self.patience is not None and val_features is not None
                        and epoch - best[2] >= self.patience):
                    break
        self._finish(network, best, started, checkpoint)

    def _epoch_order(self, targets, generator) -> torch.Tensor:
        n = len(targets)
        if self.balanced_sampling and self._task == "classification":
            counts = np.bincount(targets, minlength=len(self.classes_)).astype(np.float64)
            weights = torch.from_numpy(1.0 / counts[targets])
            return torch.multinomial(weights, n, replacement=True, generator=generator)
        return torch.randperm(n, generator=generator)

    def _validate(self, network, val_x, val_t, loss_fn, device) -> dict:
        outputs = self._forward_all(network, val_x, device)
        truth = torch.from_numpy(val_t).to(outputs.device)
        result = {"val_loss": float(loss_fn(outputs, truth))}
        if self._task == "classification":
            result["val_accuracy"] = float((outputs.argmax(1) == truth).float().mean())
        return result

    def _forward_all(self, network, x, device, *, features: bool = False,
                     label: str | None = None) -> torch.Tensor:
        """Outputs (or backbone features) ``(N, d)`` of ``x`` in eval mode, batched; a
        progress bar when ``label`` is given."""
        was_training = [m.training for m in network.modules()]
        network.eval()
        parts = []
        batch = self._inference_batch()
        enabled = self.progress if label else False
        with torch.no_grad(), progress_bar(len(x), label or "", enabled=enabled) as advance:
            for first in range(0, len(x), batch):
                inputs = self._normalise(x[first:first + batch], device)
                parts.append((network.features(inputs) if features else network(inputs)).cpu())
                advance(len(inputs))
        for module, mode in zip(network.modules(), was_training):
            module.training = mode
        return torch.cat(parts)

    # -- using a fitted model ---------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise NotFittedError(f"This {type(self).__name__} is not fitted yet: call fit() "
                                 f"or load a checkpoint first.")

    def _inputs(self, images) -> torch.Tensor:
        self._check_fitted()
        x = as_image_tensor(images)
        if tuple(x.shape[1:]) != self.input_shape_:
            c, h, w = self.input_shape_
            raise LearnError(f"the model takes {c}-channel {w}x{h} images, got "
                             f"{x.shape[1]}-channel {x.shape[3]}x{x.shape[2]}: load the data "
                             f"with the same size and mode as for training.")
        return x

    def transform(self, images) -> np.ndarray:
        """Backbone features ``(N, d)`` float32: an embedding for kNN and cleaning."""
        x = self._inputs(images)
        return self._forward_all(self.network_, x, self._device_of()).numpy().astype(np.float32)

    def _outputs(self, images) -> torch.Tensor:
        x = self._inputs(images)
        return self._forward_all(self.network_, x, self._device_of())

    def _device_of(self):
        return next(self.network_.parameters()).device

    def _forward_features(self, images):
        x = self._inputs(images)
        return self._forward_all(self.network_, x, self._device_of(), features=True)

    # -- checkpoints ------------------------------------------------------------------------
    def _meta(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "task": self._task, "model": self.model_name_,
                "params": self.get_params(), "input_shape": list(self.input_shape_),
                "mean": self.mean_, "std": self.std_, "history": self.history_,
                "preprocessing": getattr(self, "preprocessing_", None),
                "preprocess": getattr(self, "preprocess_", None),
                "threads": getattr(self, "threads_", None),
                "classes": list(getattr(self, "classes_", [])),
                "n_targets": getattr(self, "n_targets_", None),
                "target_mean": getattr(self, "target_mean_", None),
                "target_std": getattr(self, "target_std_", None)}

    def save(self, path: str | Path) -> Path:
        """Write the fitted model (weights and everything needed to use it) atomically."""
        self._check_fitted()
        state = {**self._meta(), "finished": True, "state_dict": _copy_state(self.network_),
                 "best_epoch": getattr(self, "best_epoch_", None),
                 "train_seconds": getattr(self, "train_seconds_", None),
                 "architecture": _architecture(self.network_)}
        return _atomic_save(state, Path(path))

    def _save_training_state(self, path, network, optimizer, generator, epoch, best) -> None:
        state = {**self._meta(), "finished": False, "state_dict": _copy_state(network),
                 "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                 "torch_rng": torch.get_rng_state(), "epoch": epoch,
                 "best_loss": float(best[0]), "best_state": best[1], "best_epoch": best[2],
                 "architecture": _architecture(network)}
        _atomic_save(state, path)

    def _restore(self, state: dict, network: Net | None = None) -> None:
        self.model_name_ = state["model"]
        self.input_shape_ = tuple(state["input_shape"])
        self.mean_, self.std_ = list(state["mean"]), list(state["std"])
        c, h, w = self.input_shape_
        self.preprocessing_ = state.get("preprocessing") or {
            "backbone": None, "size": h if h == w else [h, w], "mean": self.mean_,
            "std": self.std_, "normalisation": "data"}
        self.preprocess_ = state.get("preprocess")
        self.history_ = list(state["history"])
        self.best_epoch_ = state.get("best_epoch")
        self.train_seconds_ = state.get("train_seconds")
        if state["task"] == "classification":
            self.classes_ = list(state["classes"])
        else:
            self.n_targets_ = int(state["n_targets"])
            self.target_mean_, self.target_std_ = state["target_mean"], state["target_std"]
        if network is None:
            network = _rebuild(state)
        network.load_state_dict(state["state_dict"])
        network.eval()
        network.preprocessing = {k: self.preprocessing_[k]
                                 for k in ("backbone", "size", "mean", "std")}
        if self._channels_last():
            network = network.to(memory_format=torch.channels_last)
        self.network_ = network


class ImageClassifier(_ImageModel):
    """A CNN classifier over uint8 image arrays; see the module docstring."""

    _task = "classification"

    def _prepare_targets(self, y):
        codes, self.classes_ = encode_labels(y, getattr(self, "_fixed_classes", None))
        return codes

    def _encode(self, y):
        return encode_labels(y, self.classes_)[0]

    def _n_outputs(self) -> int:
        return len(self.classes_)

    def _split_validation(self, codes, rng) -> np.ndarray:
        picked = []
        for c in np.unique(codes):
            rows = np.flatnonzero(codes == c)
            take = int(round(len(rows) * self.val_fraction))
            if take and len(rows) > take:
                picked.append(rng.choice(rows, take, replace=False))
        if not picked:
            raise LearnError("the validation split is empty: raise val_fraction or add samples")
        return np.sort(np.concatenate(picked))

    def _loss(self, codes, device):
        weight = None
        if self.class_weight == "balanced":
            counts = np.bincount(codes, minlength=len(self.classes_)).astype(np.float32)
            weight = torch.from_numpy(len(codes) / (len(counts) * np.maximum(counts, 1))).to(device)
        return torch.nn.CrossEntropyLoss(weight=weight)

    def predict_proba(self, images) -> np.ndarray:
        """Class probabilities ``(N, n_classes)`` float32, columns in ``classes_`` order."""
        return torch.softmax(self._outputs(images), dim=1).numpy().astype(np.float32)

    def predict(self, images) -> np.ndarray:
        probs = self.predict_proba(images)
        return np.asarray(self.classes_, dtype=object)[probs.argmax(1)]

    def score(self, images, labels) -> float:
        return float(np.mean(self.predict(images) == np.asarray(labels, dtype=object)))

    def transform(self, images) -> np.ndarray:
        return self._forward_features(images).numpy().astype(np.float32)


class ImageRegressor(_ImageModel):
    """A CNN regressor (one or more float targets per image)."""

    _task = "regression"

    def _prepare_targets(self, y):
        targets = as_targets(y)
        self.n_targets_ = targets.shape[1]
        # Standardised targets train well whatever their unit; predict() undoes it.
        self.target_mean_ = [float(v) for v in targets.mean(0)]
        self.target_std_ = [max(float(v), 1e-8) for v in targets.std(0)]
        return self._encode(targets)

    def _encode(self, y):
        return ((as_targets(y) - np.float32(self.target_mean_)) / np.float32(self.target_std_)
                ).astype(np.float32)

    def _n_outputs(self) -> int:
        return self.n_targets_

    def _split_validation(self, targets, rng) -> np.ndarray:
        take = max(1, int(round(len(targets) * self.val_fraction)))
        return np.sort(rng.choice(len(targets), take, replace=False))

    def _loss(self, targets, device):
        return torch.nn.MSELoss()

    def predict(self, images) -> np.ndarray:
        outputs = self._outputs(images).numpy()
        return (outputs * np.float32(self.target_std_) + np.float32(self.target_mean_)
                ).astype(np.float32)

    def transform(self, images) -> np.ndarray:
        return self._forward_features(images).numpy().astype(np.float32)


# -- checkpoints ---------------------------------------------------------------------------
def _copy_state(network) -> dict:
    return {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}


def _architecture(network: Net) -> dict:
    built = getattr(network, "built_size", None)
    return {"head_outputs": int(network.head.out_features), "feature_dim": network.feature_dim,
            "built_size": None if built is None else [int(v) for v in built]}


def _takes_size(network: Net, channels: int, height: int, width: int) -> bool:
    """Whether ``network``'s backbone turns ``channels`` x ``height`` x ``width`` images
    into the features its head takes: any size behind global pooling, only its own behind
    a flatten layer."""
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            features = network.features(torch.zeros(1, channels, height, width))
        return int(features.reshape(1, -1).shape[1]) == int(network.feature_dim)
    except RuntimeError:
        return False
    finally:
        network.train(was_training)


_atomic_save = save_state  # the one atomic checkpoint writer (smartset._checkpoint)


def _read_checkpoint(path: str | Path) -> dict:
    return read_state(
        path, format=CHECKPOINT_FORMAT, error=CheckpointError,
        missing="No checkpoint at {path}: give the path of a .pt file written by 'smartset "
                "train' (see 'smartset runs').",
        damaged="Checkpoint {path} cannot be read ({reason}): it is damaged or not a smartset "
                "checkpoint. Train again, or resume from an earlier copy.",
        foreign="{path} is not a smartset checkpoint (format '{format}' expected).")


def _rebuild(state: dict) -> Net:
    c, h, w = state["input_shape"]
    outputs = state["architecture"]["head_outputs"]
    # The size the architecture was built for: a backbone transferred to another input size
    # (behind global pooling) keeps the layers of its first size.
    built = tuple(state["architecture"].get("built_size") or (h, w))
    # A pretrained backbone is rebuilt without its ImageNet weights (the checkpoint holds
    # the trained ones); timm models need timm (one line says so).
    network = build_model(state["model"], channels=c, outputs=outputs, size=built,
                          pretrained=False)
    network.built_size = built
    return network


def load_checkpoint(path: str | Path) -> ImageClassifier | ImageRegressor:
    """A fitted model from a checkpoint written by ``save`` (or a finished training run)."""
    state = _read_checkpoint(path)
    if not state.get("finished"):
        raise CheckpointError(f"{path} is the state of an unfinished training run: resume it "
                              f"('smartset train --resume') before using the model.")
    cls = _TASKS.get(state["task"])
    if cls is None:  # a task whose module is not imported yet
        import_module({"multilabel": "smartset.learn.multilabel"}.get(state["task"], __name__))
        cls = _TASKS.get(state["task"])
    if cls is None:
        raise CheckpointError(f"{path} holds a {state['task']!r} model, which this smartset "
                              f"does not know ({', '.join(sorted(_TASKS))}): upgrade smartset.")
    params = dict(state["params"])
    params.pop("augment", None)
    params.pop("init_from", None)
    model = cls(**params)
    try:
        model._restore(state)
    except RuntimeError as error:
        raise CheckpointError(f"Checkpoint {path} does not match its architecture: "
                              f"{str(error)[:160]}") from None
    return model


def _policy_label(augment) -> str | None:
    if augment is None:
        return None
    if isinstance(augment, str):
        return augment
    label = getattr(augment, "label", None)
    return label() if callable(label) else repr(augment)


def _resolve_policy(augment):
    if augment is None or augment == "original":
        return None
    from smartset.augment import resolve_policy

    return resolve_policy(augment)
