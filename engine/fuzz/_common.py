"""Shared set-up of the fuzz targets: small model limits (so a fuzzed model that is valid
but large costs milliseconds, not gigabytes) and the errors a refusal may raise."""

from __future__ import annotations

import walle_engine as we

# A refusal: the engine names what is wrong. Anything else escaping a target is a bug.
REFUSALS = (ValueError, MemoryError, TypeError, OverflowError, IndexError, KeyError)


def small_limits() -> None:
    we.set_model_limits(total_bytes=64 << 20, value_bytes=16 << 20)
