"""Shared set-up of the fuzz targets: small model limits (so a fuzzed model that is valid
but large costs milliseconds, not gigabytes) and the errors a refusal may raise."""

from __future__ import annotations

import walle_engine as we
from walle_engine import _core

# A refusal: the engine names what is wrong. Anything else escaping a target is a bug.
REFUSALS = (
    ValueError,
    MemoryError,
    TypeError,
    OverflowError,
    IndexError,
    KeyError,
    BufferError,
)


def small_limits() -> None:
    """Model limits of 64 MiB per model and 16 MiB per value, and a 256 MiB memory budget
    on this thread (as the device runtime binds one per task): a fuzzed shape that is
    valid but huge is refused with MemoryError before it is allocated."""
    we.set_model_limits(total_bytes=64 << 20, value_bytes=16 << 20)
    account = _core.account("fuzz")
    account.cap = 256 << 20
    _core.bind(account, None)
