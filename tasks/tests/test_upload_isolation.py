"""Uploads are checked in a resource-limited worker process, limits hold on what conversion
produced, and files stream to disk with their limit enforced while they are read."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.bundles import BundleError
from tasks.services import create_version

onnx = pytest.importorskip("onnx")
pytest.importorskip("walle_engine")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

pytestmark = pytest.mark.django_db
TASK = b"def run(ctx):\n    return 1\n"


def expanding_model(n: int) -> bytes:
    """n bytes of int8 weights, which the engine stores as n float32s: 4x larger converted."""
    w = numpy_helper.from_array(np.ones(n, np.int8), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["w"], ["wf"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["wf", "x"], ["y"]),
        ],
        "expands",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_a_model_that_converts_past_the_file_limit_is_refused(cast, settings):
    settings.WALLE_MAX_FILE_BYTES = 2_000_000
    model = expanding_model(1_000_000)
    assert len(model) < settings.WALLE_MAX_FILE_BYTES
    with pytest.raises(BundleError) as info:
        create_version(cast.task, files={"main.py": TASK, "m.onnx": model}, entry_point="main.py")
    assert "larger than the per-file limit" in str(info.value)


def test_limits_hold_on_the_whole_converted_version(cast, settings):
    settings.WALLE_MAX_FILE_BYTES = 5_000_000
    settings.WALLE_MAX_VERSION_BYTES = 6_000_000
    models = {f"m{i}.onnx": expanding_model(700_000) for i in range(3)}  # 2.1 MB in, 8.4 out
    with pytest.raises(BundleError) as info:
        create_version(cast.task, files={"main.py": TASK, **models}, entry_point="main.py")
    assert "after model conversion" in str(info.value) and "6000000" in str(info.value)


def test_an_entry_point_that_needs_too_much_memory_to_compile_is_refused(cast, settings):
    settings.WALLE_UPLOAD_CHECK_MEMORY_MB = 256
    source = TASK + b"x = 1\n" * 300_000  # 1.7 MB of source, ~500 MB in the compiler
    with pytest.raises(BundleError) as info:
        create_version(cast.task, files={"main.py": source}, entry_point="main.py")
    assert "256 MB" in str(info.value)


def test_an_entry_point_that_takes_too_long_to_compile_is_refused(cast, settings):
    settings.WALLE_UPLOAD_CHECK_SECONDS = 1
    settings.WALLE_UPLOAD_CHECK_MEMORY_MB = 4096
    source = TASK + b"x = 1\n" * 800_000  # several CPU seconds in the compiler
    with pytest.raises(BundleError) as info:
        create_version(cast.task, files={"main.py": source}, entry_point="main.py")
    assert "took" in str(info.value) and "1 s" in str(info.value)
    # The server itself is fine and the next upload goes through.
    settings.WALLE_UPLOAD_CHECK_SECONDS = 60
    assert create_version(cast.task, files={"main.py": TASK}, entry_point="main.py").number == 2


def test_uploads_stop_at_their_limit_while_streaming(cast, settings):
    settings.WALLE_MAX_FILE_BYTES = 100_000
    api = cast.api("operator")
    url = f"/api/v1/tasks/{cast.task.pk}/versions/"
    from django.core.files.uploadedfile import SimpleUploadedFile

    big = SimpleUploadedFile("main.py", TASK + b"#" * 200_000)
    response = api.post(url, {"files": [big]}, format="multipart")
    assert response.status_code == 413
    assert "100000" in response.json()["detail"]
    ok = SimpleUploadedFile("main.py", TASK)
    assert api.post(url, {"files": [ok]}, format="multipart").status_code == 201
