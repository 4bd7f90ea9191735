"""The dtype an encoder actually computes in: its first ``nn.Linear``'s output, recorded per forward. Autocast
changes that dtype without changing any parameter's, so a precision test must look at outputs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["first_linear_dtypes"]


@contextmanager
def first_linear_dtypes(module: torch.nn.Module) -> Iterator[list[torch.dtype]]:
    """Yield a list that receives the output dtype of ``module``'s first ``nn.Linear`` on every forward."""
    seen: list[torch.dtype] = []
    first = next(m for m in module.modules() if isinstance(m, torch.nn.Linear))
    hook = first.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        yield seen
    finally:
        hook.remove()
