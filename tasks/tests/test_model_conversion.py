"""ONNX models are converted by the engine at upload; a model it cannot run is refused."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.bundles import BundleError
from tasks.services import create_version

onnx = pytest.importorskip("onnx")
walle_engine = pytest.importorskip("walle_engine")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

pytestmark = pytest.mark.django_db

TASK = b"def run(ctx):\n    return ctx.model('scorer')\n"


def tiny_model(op: str = "Relu") -> bytes:
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node(op, ["h"], ["y"])],
        "scorer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_an_onnx_model_ships_converted_and_runs(cast, tmp_path):
    version = create_version(
        cast.task,
        files={"main.py": TASK, "models/scorer.onnx": tiny_model()},
        entry_point="main.py",
        config={"models": ["models/scorer.onnx"]},
    )
    paths = {f["path"] for f in version.manifest["files"]}
    assert paths == {"main.py", "models/scorer.wle"}
    assert version.config["models"] == ["models/scorer.wle"]
    from tasks.storage import content_store

    sha = next(f["sha256"] for f in version.manifest["files"] if f["path"] == "models/scorer.wle")
    (tmp_path / "m.wle").write_bytes(content_store().read(sha))
    model = walle_engine.load(tmp_path / "m.wle", tune=False, cache=False)
    x = np.array([[1, -2, 3, 0.5]], dtype=np.float32)
    expected = np.maximum(x @ (np.arange(12, dtype=np.float32).reshape(4, 3) / 10), 0)
    np.testing.assert_allclose(model.run({"x": x})["y"], expected, rtol=1e-5)


def test_a_model_with_unsupported_operators_is_refused_with_the_list(cast):
    with pytest.raises(BundleError) as info:
        create_version(
            cast.task,
            files={"main.py": TASK, "m.onnx": tiny_model("Multinomial")},
            entry_point="main.py",
            config={},
        )
    assert "Multinomial" in info.value.errors["files"][0]


def test_a_corrupt_model_is_refused(cast):
    with pytest.raises(BundleError) as info:
        create_version(
            cast.task,
            files={"main.py": TASK, "m.onnx": b"not a model"},
            entry_point="main.py",
            config={},
        )
    assert "not a valid ONNX model" in info.value.errors["files"][0]
