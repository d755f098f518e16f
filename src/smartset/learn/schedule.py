"""The learning-rate range test (fastai's ``lr_find``) and the one-cycle schedule
(fastai's ``fit_one_cycle``), written by hand: both are a few lines of arithmetic over the
estimator's own network, optimiser and loss, and PyTorch's ``OneCycleLR`` cannot follow
the per-block (discriminative) rates and the resumable per-step schedule of
:class:`~smartset.learn.estimator.ImageClassifier`.

Range test (Smith 2015; fastai): a copy of the network trains for ``num_it`` batches while
the learning rate grows exponentially from ``start_lr`` to ``end_lr``; the loss is
smoothed (exponential moving average, ``beta`` 0.98, bias-corrected) and the test stops
once it exceeds 4x its minimum. Suggestions, over the curve without its first tenth and
last five points (as fastai): ``valley`` (fastai's default since 2.5: the middle of the
longest descending stretch of the curve, the one we use) and ``steep`` (the learning rate
where the smoothed loss falls fastest against log lr, looked for before the lowest loss);
``minimum / 10`` is reported too.

One-cycle (Smith 2018; fastai's defaults): the rate rises from ``lr / div`` to ``lr``
over the first ``pct_start`` (0.25) of the steps and falls to ``lr / div_final`` over the
rest, both by cosine annealing; momentum (SGD's ``momentum`` or Adam's ``beta1``) moves
the other way, 0.95 -> 0.85 -> 0.95.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from smartset._torch import require_torch
from smartset.learn.errors import LearnError

torch = require_torch("smartset.learn")

__all__ = ["one_cycle", "one_cycle_lr", "one_cycle_momentum", "lr_find", "suggest_lr",
           "plot_lr_find", "ONE_CYCLE"]

ONE_CYCLE = {"pct_start": 0.25, "div": 25.0, "div_final": 1e5, "moms": (0.95, 0.85, 0.95)}


def _cos(start: float, end: float, fraction: float) -> float:
    """Cosine annealing from ``start`` (fraction 0) to ``end`` (fraction 1)."""
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))


def one_cycle(step: int, total: int, *, pct_start: float = ONE_CYCLE["pct_start"],
              div: float = ONE_CYCLE["div"], div_final: float = ONE_CYCLE["div_final"],
              moms=ONE_CYCLE["moms"]) -> tuple[float, float]:
    """``(lr factor, momentum)`` at ``step`` of ``total`` (0-based): the factor multiplies
    the maximal rate (1.0 at the peak, ``1 / div`` at the start, ``1 / div_final`` at the
    end)."""
    if total < 1 or not 0.0 < pct_start < 1.0:
        raise LearnError(f"one-cycle needs total >= 1 steps and pct_start in (0, 1), got "
                         f"{total} and {pct_start}")
    warm = max(1, int(round(total * pct_start)))
    if step < warm:
        fraction = step / warm
        return _cos(1.0 / div, 1.0, fraction), _cos(moms[0], moms[1], fraction)
    fraction = (step - warm) / max(1, total - warm - 1)
    return _cos(1.0, 1.0 / div_final, fraction), _cos(moms[1], moms[2], fraction)


def one_cycle_lr(total: int, lr: float = 1.0, **options) -> np.ndarray:
    """The one-cycle learning rates of ``total`` steps, ``(total,)`` float64."""
    return np.array([lr * one_cycle(s, total, **options)[0] for s in range(total)])


def one_cycle_momentum(total: int, **options) -> np.ndarray:
    """The one-cycle momenta of ``total`` steps, ``(total,)`` float64."""
    return np.array([one_cycle(s, total, **options)[1] for s in range(total)])


def set_momentum(optimizer, momentum: float) -> None:
    """Set SGD's ``momentum`` or Adam's ``beta1`` in every parameter group (no-op for an
    optimiser without one)."""
    for group in optimizer.param_groups:
        if "betas" in group:
            group["betas"] = (momentum, group["betas"][1])
        elif "momentum" in group and group["momentum"]:
            group["momentum"] = momentum


def suggest_lr(lrs, losses) -> dict:
    """Suggestions from a range test's learning rates and smoothed losses: ``valley``,
    ``steep``, ``minimum`` (the rate at the lowest loss, divided by 10), and ``method``
    (``"valley"``: the one to use) and ``lr`` (its value). The first tenth and the last
    five points are left out, as fastai does."""
    lrs, losses = np.asarray(lrs, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    cut = slice(len(lrs) // 10, len(lrs) - 5 if len(lrs) > 15 else len(lrs))
    lrs, losses = lrs[cut], losses[cut]
    if len(lrs) < 3:
        raise LearnError(f"the range test recorded {len(lrs)} usable points: too few to "
                         f"suggest a learning rate; raise num_it or end_lr.")
    n = len(losses)
    # valley: the longest decreasing subsequence; its middle-to-lower third
    lds = np.ones(n, dtype=int)
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
        if lds[max_end] < lds[i]:
            max_end, max_start = i, i - lds[i]
    sections = (max_end - max_start) / 3
    valley = float(lrs[max_start + int(sections) + int(sections / 2)])
    # steepest descent before the lowest loss (past it, a loss that falls back after
    # diverging would look steep)
    lowest = int(np.argmin(losses))
    slope = np.gradient(losses, np.log(lrs))[:max(lowest, 1) + 1]
    steep = float(lrs[int(np.argmin(slope))])
    minimum = float(lrs[int(np.argmin(losses))] / 10)
    return {"method": "valley", "lr": valley, "valley": valley, "steep": steep,
            "minimum": minimum}


def lr_find(estimator, images, y, *, start_lr: float = 1e-7, end_lr: float = 10.0,
            num_it: int = 100, beta: float = 0.98, stop_div: bool = True) -> dict:
    """The learning-rate range test for ``estimator`` (an unfitted
    :class:`~smartset.learn.estimator.ImageClassifier` or ``ImageRegressor``) on
    ``images`` (uint8 ``(N, H, W[, C])``) and ``y``.

    A fresh network, optimiser, normalisation and loss are built exactly as ``fit`` builds
    them (seeded by ``estimator.seed``; the estimator itself is left unfitted); every
    group's rate is set to ``lr`` times its ratio to the head's (discriminative rates keep
    their ratios), growing exponentially over ``num_it`` batches. Returns ``lrs`` and
    ``losses`` (smoothed), ``raw_losses``, ``iterations`` and the suggestions of
    :func:`suggest_lr`.
    """
    from smartset.learn._arrays import as_image_tensor

    if not 0 < start_lr < end_lr:
        raise LearnError(f"the range test needs 0 < start_lr < end_lr, got {start_lr} and "
                         f"{end_lr}")
    if num_it < 20:
        raise LearnError(f"the range test needs num_it >= 20 batches, got {num_it}")
    estimator._check_options()
    x = as_image_tensor(images)
    targets = estimator._prepare_targets(y)
    if len(targets) != len(x):
        raise LearnError(f"{len(x)} images but {len(targets)} labels/targets")
    estimator.input_shape_ = tuple(int(v) for v in x.shape[1:])
    estimator.model_name_ = estimator.model
    estimator.preprocess_ = estimator.preprocess
    from smartset.learn.estimator import _device, _resolve_policy

    device = _device(estimator.device)
    policy = _resolve_policy(estimator.augment)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(estimator.seed)
        network, source = estimator._make_network()
        estimator._set_normalisation(network, source, x)
        network = network.to(device)
        optimizer = estimator._optimizer(network)
        ratios = [group["lr"] / estimator.lr for group in optimizer.param_groups]
        loss_fn = estimator._loss(targets, device)
        generator = torch.Generator().manual_seed(estimator.seed)
        target_tensor = torch.from_numpy(targets)
        network.train()
        for block in network.blocks():  # frozen blocks: statistics untouched, as in fit
            if not any(p.requires_grad for p in block.parameters()):
                block.eval()
        factor = (end_lr / start_lr) ** (1.0 / (num_it - 1))
        lrs, smoothed, raw = [], [], []
        average, best = 0.0, math.inf
        order = torch.empty(0, dtype=torch.long)
        batch_size = min(estimator.batch_size, len(x))
        for it in range(num_it):
            if len(order) < batch_size:
                order = torch.cat([order, estimator._epoch_order(targets, generator)])
            rows, order = order[:batch_size], order[batch_size:]
            lr = start_lr * factor ** it
            for group, ratio in zip(optimizer.param_groups, ratios):
                group["lr"] = lr * ratio
            batch = x[rows]
            if policy is not None:
                batch = policy(batch, seed=int(torch.randint(0, 2**31 - 1, (1,),
                                                             generator=generator)))
            outputs = network(estimator._normalise(batch, device))
            loss = loss_fn(outputs, target_tensor[rows].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                break
            average = beta * average + (1 - beta) * value
            smooth = average / (1 - beta ** (it + 1))
            lrs.append(lr)
            raw.append(value)
            smoothed.append(smooth)
            best = min(best, smooth)
            if stop_div and smooth > 4 * best:
                break
    for name in ("input_shape_", "model_name_", "preprocess_", "mean_", "std_",
                 "preprocessing_"):
        if hasattr(estimator, name):
            delattr(estimator, name)
    result = {"lrs": lrs, "losses": smoothed, "raw_losses": raw, "iterations": len(lrs),
              "start_lr": start_lr, "end_lr": end_lr, "num_it": num_it}
    return result | suggest_lr(lrs, smoothed)


def plot_lr_find(result: dict, path: str | Path, *, title: str = "learning-rate range test"
                 ) -> Path:
    """The smoothed loss against the learning rate (log axis), with the suggestions
    marked, written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from smartset._atomic import atomic_path

    figure, axis = plt.subplots(figsize=(6, 4), dpi=100)
    axis.plot(result["lrs"], result["losses"], color="tab:blue", label="loss (smoothed)")
    axis.set_xscale("log")
    marks = (("valley", "tab:red", "o"), ("steep", "tab:green", "s"))
    lrs = np.asarray(result["lrs"])
    for name, colour, marker in marks:
        i = int(np.argmin(np.abs(np.log(lrs) - math.log(result[name]))))
        used = " (used)" if name == result["method"] else ""
        axis.plot([lrs[i]], [result["losses"][i]], marker=marker, color=colour, linestyle="",
                  label=f"{name}: {result[name]:.2e}{used}")
    axis.set_xlabel("learning rate (log scale)")
    axis.set_ylabel("training loss")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)
    return path
