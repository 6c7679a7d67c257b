"""Query parameters as users type them: a bad value is a `ParamError` naming the parameter
and saying what to type, which every endpoint answers with 400 (never a 500 from the
database, e.g. a number too large for its column)."""

from __future__ import annotations

INT32_MAX = 2**31 - 1


class ParamError(ValueError):
    """`param` cannot be read; the message says what to type instead."""

    def __init__(self, param: str, message: str) -> None:
        self.param = param
        super().__init__(message)


def whole_number(
    param: str, text: str | None, *, minimum: int = 0, maximum: int = INT32_MAX, hint: str = ""
) -> int | None:
    """`text` as a whole number in [minimum, maximum]; None when empty."""
    text = (text or "").strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > 12 or not minimum <= int(text) <= maximum:
        raise ParamError(
            param, hint or f"{param} must be a whole number from {minimum} to {maximum}"
        )
    return int(text)
