"""Errors of walle_engine that name what is wrong with a model."""

from __future__ import annotations

__all__ = ["ModelError"]


class ModelError(ValueError):
    """A model file or graph is malformed: a header field, a constant's layout, a value
    defined twice or never, an operator's inputs or attributes. The message names it."""
