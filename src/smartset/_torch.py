"""PyTorch is an optional extra: the modules that need it import it through here."""

from __future__ import annotations


def require_torch(feature: str):
    """Return the ``torch`` module, or raise an ImportError that says how to install it."""
    try:
        import torch
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            f"{feature} needs PyTorch: pip install 'smartset[torch]' (torch==2.13.0)"
        ) from error
    return torch
