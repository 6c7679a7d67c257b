"""walle_engine: Walle's on-device tensor engine.

Composite operators are decomposed into a small set of atomic ops (elementwise, reduce,
matmul, select, cast) plus one data-movement op (raster); only those have kernels, in
scalar, AVX2 and AVX-512 variants chosen at run time. A semi-auto search picks the fastest
implementation per op on the device and caches the decision.

Cloud side: ``convert(onnx_path, out_path)`` (needs the ``onnx`` package).
Device side: ``load(path).run({name: array})``; ``walle_engine.np`` and ``walle_engine.cv``
are numpy- and OpenCV-like subsets that work where numpy cannot load (isolated
sub-interpreters), and ``budget()`` accounts engine memory per task with a cap.
"""

from __future__ import annotations

from walle_engine import cv, np, ops
from walle_engine._core import (
    Account,
    Tensor,
    account,
    cpu_signature,
    detect_isa,
    isa,
    num_threads,
    set_isa,
    set_num_threads,
    supported_isas,
    supported_ops,
)
from walle_engine._errors import ModelError
from walle_engine._model import (
    Budget,
    Model,
    Profile,
    TensorInfo,
    budget,
    export_profile,
    import_profile,
    load,
    model_limits,
    set_model_limits,
    tuning_cache_path,
)

__all__ = [
    "Account",
    "Budget",
    "ConversionReport",
    "Model",
    "ModelError",
    "Profile",
    "Tensor",
    "TensorInfo",
    "UnsupportedModelError",
    "account",
    "budget",
    "convert",
    "cpu_signature",
    "cv",
    "detect_isa",
    "export_profile",
    "import_profile",
    "isa",
    "load",
    "model_limits",
    "np",
    "num_threads",
    "ops",
    "set_isa",
    "set_model_limits",
    "set_num_threads",
    "supported_isas",
    "supported_ops",
    "tuning_cache_path",
]

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The converter imports onnx; devices never touch it, so it loads on first use only.
    if name in ("convert", "ConversionReport", "UnsupportedModelError"):
        import importlib

        converter = importlib.import_module("walle_engine.converter")
        return getattr(converter, "convert_model" if name == "convert" else name)
    raise AttributeError(f"module 'walle_engine' has no attribute {name!r}")
