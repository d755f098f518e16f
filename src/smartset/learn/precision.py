"""Mixed-precision training: which precision a run trains in, its autocast context and its
gradient scaler.

``fp32``: plain float32. ``bf16``: bfloat16 autocast (CUDA, or a CPU that runs bfloat16
natively: AVX-512 BF16 / AMX, as ``torch`` reports it); no gradient scaling is needed.
``fp16``: float16 autocast with a ``GradScaler`` (CUDA only; float16 on a CPU is slower
than float32 and refused). The default stays ``fp32``; ``auto`` follows what was measured
(``benchmarks/precision.py``, 2 shared cores with AMX, one thread, best of 3, see the
README): on CUDA, bf16 where the GPU supports it, else fp16 (the usual practice; not
measured here: no GPU); on a CPU with native bfloat16, bf16 for the small networks trained
from scratch (LeNet and small_cnn on 28 px digits trained faster under bf16, same held-out
accuracy) and fp32 for pretrained backbones (EfficientNet-Lite0 fine-tuning at 128 px was
about twice as slow under bf16: its backward pass gains nothing); fp32 where bfloat16
would be emulated.
"""

from __future__ import annotations

import contextlib

from smartset._torch import require_torch
from smartset.learn.errors import LearnError

torch = require_torch("smartset.learn")

__all__ = ["PRECISIONS", "check_precision", "resolve_precision", "autocast", "grad_scaler",
           "cpu_bf16_native"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def check_precision(precision: str) -> None:
    """Raise a :class:`LearnError` unless ``precision`` is one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise LearnError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                         f"{precision!r}")


def cpu_bf16_native() -> bool:
    """True where this CPU runs bfloat16 natively (oneDNN's check: AVX-512 BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def resolve_precision(precision: str, device, model: str | None = None) -> str:
    """The precision a run on ``device`` trains in: ``fp32``, ``bf16`` or ``fp16``.

    ``auto`` follows the measured rules of the module docstring; an explicit choice the
    device cannot run is one clear error."""
    check_precision(precision)
    device = torch.device(device)
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        from smartset.learn.models import is_pretrained_model

        return "bf16" if cpu_bf16_native() and not is_pretrained_model(model) else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise LearnError("precision fp16 (float16 autocast with gradient scaling) needs a "
                         "CUDA device; on a CPU use bf16 (where it is native) or fp32.")
    if precision == "bf16" and device.type == "cpu" and not cpu_bf16_native():
        raise LearnError("precision bf16 on this CPU would be emulated (no AVX-512 BF16 or "
                         "AMX): use fp32, or --precision auto.")
    return precision


def autocast(precision: str, device):
    """The autocast context of ``precision`` on ``device`` (a null context for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(torch.device(device).type, dtype=dtype)


def grad_scaler(precision: str, device):
    """A ``GradScaler``, enabled for fp16 on CUDA only (bf16 and fp32 need none; a disabled
    scaler's ``scale``/``step``/``update`` are plain ``backward``/``step``)."""
    device = torch.device(device)
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16"
                                and device.type == "cuda")
