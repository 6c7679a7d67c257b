"""Packaging: facade, stub, sub-interpreters, run-time ISA dispatch."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import walle_engine


def test_facade_exports_only_what_all_lists() -> None:
    for name in walle_engine.__all__:
        assert hasattr(walle_engine, name), name


def test_stub_ships_with_the_compiled_module() -> None:
    pkg = Path(walle_engine.__file__).parent
    assert (pkg / "_core.pyi").exists()
    assert (pkg / "py.typed").exists()


def test_it_imports_and_computes_in_an_isolated_subinterpreter() -> None:
    # Run in a fresh process: a sub-interpreter that fails to import can abort the host.
    code = textwrap.dedent(
        """
        import _interpreters
        cfg = _interpreters.new_config("isolated")
        assert cfg.gil == "own" and cfg.check_multi_interp_extensions
        interp = _interpreters.create(cfg)
        try:
            err = _interpreters.exec(interp, '''
        import array
        import walle_engine
        from walle_engine import ops
        x = ops.tensor(array.array("f", [-1.0, 0.0, 2.0]))
        y = ops.unary("relu", x)
        z = ops.binary("add", y, ops.tensor(array.array("f", [1.0, 1.0, 1.0])))
        assert memoryview(z).tolist() == [1.0, 1.0, 3.0], memoryview(z).tolist()
        ''')
            assert err is None, err
        finally:
            _interpreters.destroy(interp)
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_runtime_dispatch_reports_and_can_force_a_level() -> None:
    levels = walle_engine.supported_isas()
    assert levels[0] == "scalar"
    assert walle_engine.detect_isa() == levels[-1]
    before = walle_engine.isa()
    try:
        walle_engine.set_isa("scalar")
        assert walle_engine.isa() == "scalar"
    finally:
        walle_engine.set_isa(before)


def test_env_var_caps_the_level_at_start() -> None:
    code = "import walle_engine; print(walle_engine.isa())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "WALLE_ENGINE_ISA": "scalar"},
        timeout=60,
    )
    assert out.stdout.strip() == "scalar", out.stderr


def test_loading_a_model_does_not_import_onnx(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    path = tmp_path / "relu.walle"
    walle_engine.convert(helper.make_model(g), path)
    assert isinstance(onnx.__name__, str)
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["onnx"] = None  # any import of onnx now fails
        import numpy as np
        import walle_engine
        m = walle_engine.load({str(path)!r})
        print(m.run({{"x": np.array([-1, 2], np.float32)}})["y"].tolist())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0.0, 2.0]"


def test_the_fma_peak_probe_measures_this_cpu() -> None:
    import walle_engine
    from walle_engine import _core

    if walle_engine.isa() == "scalar":
        assert _core.fma_peak_gflops(1) == 0
    else:
        # A rate, not a speed target (bench/engine.py compares it with the GEMMs): positive,
        # finite and below what any one core can do, so a zero or broken timer shows here.
        peak = _core.fma_peak_gflops(1)
        assert math.isfinite(peak) and 0 < peak < 10_000
