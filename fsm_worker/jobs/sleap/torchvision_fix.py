"""Import torchvision where its compiled ops cannot load (PyPI's wheel beside a CPU-only torch).

torchvision 0.28's ``_meta_registrations`` registers fake kernels for ``torchvision::nms`` and ``qnms``
without checking that the ops exist (pytorch/vision#9085), so ``import torchvision`` raises
``operator torchvision::nms does not exist``. While torchvision is imported, ``torch.library.register_fake``
is wrapped so that registering a fake kernel for a missing ``torchvision::`` op is skipped, which is what
the upstream fix does. Only job processes apply it (site-packages stay untouched), and it changes
nothing where the ops load.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def _missing_op(error: Exception) -> bool:
    return "does not exist" in str(error)


def import_torchvision() -> None:
    """Import torchvision, skipping fake-kernel registrations for torchvision ops that do not exist."""
    if "torchvision" in sys.modules:
        return
    import torch.library

    original = torch.library.register_fake

    def tolerant(op: Any, *args: Any, **kwargs: Any) -> Any:
        if not (isinstance(op, str) and op.startswith("torchvision::")):
            return original(op, *args, **kwargs)
        try:
            registered = original(op, *args, **kwargs)
        except RuntimeError as error:
            if _missing_op(error):
                return lambda fn: fn
            raise
        if not callable(registered) or args or "func" in kwargs:
            return registered

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            try:
                return registered(fn)  # type: ignore[no-any-return]
            except RuntimeError as error:
                if _missing_op(error):
                    return fn
                raise

        return decorate

    torch.library.register_fake = tolerant
    try:
        import torchvision  # noqa: F401
    finally:
        torch.library.register_fake = original
