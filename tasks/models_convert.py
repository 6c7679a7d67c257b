"""ONNX models in an upload are converted by the engine into its own format at upload time.

Devices never see ONNX: `models/ranker.onnx` ships as `models/ranker.wle`, the engine's
compact format, and the config's `models` list is rewritten to match. A model the engine
cannot run is refused here, with the operators it lacks, instead of failing on devices.
"""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

from tasks.bundles import Bundle, BundleError

ONNX_SUFFIX = ".onnx"
ENGINE_SUFFIX = ".wle"


def converted_name(path: str) -> str:
    return path[: -len(ONNX_SUFFIX)] + ENGINE_SUFFIX


def convert_onnx_files(bundle: Bundle) -> Bundle:
    onnx_paths = [p for p in bundle.files if p.lower().endswith(ONNX_SUFFIX)]
    if not onnx_paths:
        return bundle
    try:
        import walle_engine
    except ImportError:
        raise BundleError(
            {
                "files": [
                    "this server cannot convert ONNX models (walle_engine is not installed); install the engine package"
                ]
            }
        ) from None
    errors: list[str] = []
    files = dict(bundle.files)
    with tempfile.TemporaryDirectory(prefix="walle-convert-") as tmp:
        for path in onnx_paths:
            target = converted_name(path)
            if target in files:
                errors.append(
                    f"{path!r} would convert to {target!r}, which is already in the upload; rename one"
                )
                continue
            source = Path(tmp) / "model.onnx"
            out = Path(tmp) / "model.wle"
            source.write_bytes(files[path])
            try:
                walle_engine.convert(source, out)
            except walle_engine.UnsupportedModelError as exc:
                errors.append(f"{path!r}: the engine cannot run this model: {exc}")
                continue
            except OSError as exc:
                if exc.errno != errno.EFBIG:
                    raise
                # The check worker may not write a file past the per-file limit (RLIMIT_FSIZE).
                errors.append(
                    f"{path!r} converts to a model larger than the per-file limit; "
                    "shrink the model (a small ONNX file can expand a lot when converted)"
                )
                continue
            except Exception as exc:  # a corrupt file: onnx raises many types
                errors.append(
                    f"{path!r} is not a valid ONNX model: {type(exc).__name__}: {str(exc)[:300]}"
                )
                continue
            del files[path]
            files[target] = out.read_bytes()
    if errors:
        raise BundleError({"files": errors})
    config = dict(bundle.config)
    if isinstance(config.get("models"), list):
        config["models"] = [
            converted_name(m) if m.lower().endswith(ONNX_SUFFIX) else m for m in config["models"]
        ]
    return Bundle(files=files, entry_point=bundle.entry_point, config=config)
