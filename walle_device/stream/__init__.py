"""On-device stream processing: events, trigger specs, the shared-trie matcher, windows, state.

Names are imported lazily so that `walle_device.stream.spec` (which the cloud imports to
validate triggers at upload) pulls in nothing but the standard library.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "KINDS": "events",
    "Event": "events",
    "EventError": "events",
    "Explanation": "naive",
    "Fire": "matcher",
    "KeyedState": "windows",
    "Matcher": "matcher",
    "NaiveMatcher": "naive",
    "OnFire": "runtime",
    "StateError": "windows",
    "Stream": "runtime",
    "Trigger": "spec",
    "TriggerError": "spec",
    "Window": "windows",
    "aggregate": "windows",
    "compile_trigger": "spec",
    "validate_trigger": "spec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'walle_device.stream' has no attribute {name!r}")
    return getattr(importlib.import_module(f"walle_device.stream.{module}"), name)
