"""ONNX models in an upload are converted by the engine into its own format at upload time."""

from __future__ import annotations

from tasks.bundles import Bundle


def convert_onnx_files(bundle: Bundle) -> Bundle:
    # Wired to walle_engine.convert once the engine lands; until then .onnx files ship as-is.
    return bundle
