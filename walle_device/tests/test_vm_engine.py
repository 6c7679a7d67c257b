"""Tasks using the engine inside the VM: models run in isolated interpreters, tensor
memory is accounted per task with a cap, and a timeout stops a model between steps."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from walle_device.vm import TaskVM

walle_engine = pytest.importorskip("walle_engine")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

MiB = 1 << 20


def released(account: object, within_s: float = 10.0) -> bool:
    """Whether the account drops to 0 bytes: the run's result is released on a VM thread,
    which may still be finishing its callback when the caller has the result."""
    deadline = time.monotonic() + within_s
    while account.used and time.monotonic() < deadline:
        time.sleep(0.01)
    return account.used == 0


def _convert(tmp: Path, name: str, nodes: list, inputs: list, outputs: list, inits: list) -> bytes:
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp / f"{name}.onnx")
    walle_engine.convert(tmp / f"{name}.onnx", tmp / f"{name}.wle")
    return (tmp / f"{name}.wle").read_bytes()


@pytest.fixture(scope="module")
def deep_model(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """200 chained [2048, 512] x [512, 512] matmuls sharing one weight: one run is a few
    hundred GFLOP, far longer than the budgets below, and the file stays 1 MiB."""
    layers = 200
    nodes = [
        helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", "w"], [f"h{i + 1}"])
        for i in range(layers)
    ]
    w = np.eye(512, dtype=np.float32)
    return _convert(
        tmp_path_factory.mktemp("deep"),
        "deep",
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2048, 512])],
        [helper.make_tensor_value_info(f"h{layers}", TensorProto.FLOAT, [2048, 512])],
        [numpy_helper.from_array(w, "w")],
    )


@pytest.fixture()
def vm1() -> Iterator[TaskVM]:
    # One interpreter, so a model loaded by one run is still loaded for the next.
    with TaskVM(1, process_workers=0) as v:
        v.wait_ready()
        yield v


def test_engine_tensor_memory_is_capped_per_task(vm1: TaskVM) -> None:
    vm1.load(
        "tensor-hog",
        textwrap.dedent(
            """
            import walle_engine
            from walle_engine import ops
            def run(ctx):
                x = walle_engine.Tensor(ctx.buffers["x"])
                keep = []
                while True:
                    keep.append(ops.unary("abs", x))
            """
        ),
        config={"max_memory_mb": 64, "timeout_s": 30},
    )
    x = np.zeros(5 * MiB // 4, np.float32)  # each copy the task keeps is 5 MiB
    r = vm1.run("tensor-hog", buffers={"x": x})
    assert r.error_type == "MemoryError", r
    assert "'tensor-hog'" in r.message and "over its cap of 64.0 MiB" in r.message
    assert 55 * MiB < r.engine_peak_bytes <= 64 * MiB
    assert released(walle_engine.account("tensor-hog"))  # freed with the failed run
    vm1.load("plain", "def run(ctx):\n    return 1\n")
    r = vm1.run("plain")
    assert r.ok and r.engine_peak_bytes == 0  # charged to its own account, which holds nothing


def test_a_timeout_stops_a_model_between_engine_steps(vm1: TaskVM, deep_model: bytes) -> None:
    vm1.load(
        "deep",
        textwrap.dedent(
            """
            import walle_engine
            def run(ctx):
                m = ctx.model("deep")
                if ctx.inputs.get("warm"):
                    return "loaded"
                m.run({"x": walle_engine.Tensor(ctx.buffers["x"])})
                return "finished"
            """
        ),
        files={"deep.wle": deep_model},
        config={"timeout_s": 60, "max_failures": 10},
    )
    assert vm1.run("deep", {"warm": True}).output == "loaded"
    x = np.ones((2048, 512), np.float32)
    stopped = walle_engine.account("deep").stopped
    r = vm1.run("deep", buffers={"x": x}, timeout_s=0.1)
    assert r.error_type == "TaskTimeout" and r.timed_out, r
    # The engine saw the cancel and left the run between two of its 200 steps, rather
    # than finishing it and being interrupted back in Python.
    assert walle_engine.account("deep").stopped == stopped + 1
    # The next run is not cancelled: the account is reset when a run starts.
    r = vm1.run("deep", buffers={"x": x}, timeout_s=120)
    assert r.ok and r.output == "finished", r
    assert r.engine_peak_bytes >= 2 * x.nbytes  # at least an arena slot and the output


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """y = relu(x @ W) with W = diag(1, 2, 3, 4)."""
    w = np.diag([1.0, 2.0, 3.0, 4.0]).astype(np.float32)
    return _convert(
        tmp_path_factory.mktemp("tiny"),
        "tiny",
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(w, "w")],
    )


def test_a_model_runs_inside_an_isolated_interpreter_on_engine_arrays(
    vm1: TaskVM, tiny_model: bytes
) -> None:
    vm1.load(
        "tiny",
        textwrap.dedent(
            """
            from walle_engine import np
            def run(ctx):
                x = np.array([ctx.inputs["x"]], dtype="float32")
                y = ctx.model("tiny").run({"x": x})["y"]
                top = np.argsort(-y[0])
                return {"y": y.tolist(), "top": top.tolist(), "type": type(y).__name__}
            """
        ),
        files={"tiny.wle": tiny_model},
    )
    r = vm1.run("tiny", {"x": [1.0, -2.0, 3.0, 0.5]})
    assert r.ok, r
    assert r.output == {"y": [[1.0, 0.0, 9.0, 2.0]], "top": [2, 3, 0, 1], "type": "ndarray"}
    assert r.engine_peak_bytes > 0


def test_image_preprocessing_in_a_task_matches_opencv(vm1: TaskVM) -> None:
    cv2 = pytest.importorskip("cv2")
    vm1.load(
        "preprocess",
        textwrap.dedent(
            """
            from walle_engine import cv, np
            def run(ctx):
                img = np.asarray(ctx.buffers["frame"])          # (H, W, 3) uint8, shared
                small = cv.resize(cv.cvt_color(img, "bgr2rgb"), (8, 6))
                x = cv.to_tensor(small, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], batch=True)
                return {"shape": list(x.shape), "data": x.ravel().tolist()}
            """
        ),
    )
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    r = vm1.run("preprocess", buffers={"frame": frame})
    assert r.ok, r
    ref = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), (8, 6), interpolation=cv2.INTER_LINEAR)
    ref = ((ref.astype(np.float32) / 255 - 0.5) / 0.25).transpose(2, 0, 1)[None]
    assert r.output["shape"] == [1, 3, 6, 8]
    np.testing.assert_allclose(np.array(r.output["data"]).reshape(ref.shape), ref, atol=1e-5)


def test_a_task_cannot_reach_the_engine_budget_api(vm1: TaskVM) -> None:
    # The cap is the VM's to set: a task that could rebind or raise it would escape it.
    for code in (
        "import walle_engine\ndef run(ctx):\n    return walle_engine.account('x').cap\n",
        "import walle_engine\ndef run(ctx):\n    return walle_engine.budget\n",
        "from walle_engine import np\ndef run(ctx):\n    return np.asarray([1]).tensor.cancel\n",
    ):
        vm1.load("sneaky", code)
        r = vm1.run("sneaky")
        assert not r.ok and r.error_type in ("AttributeError", "SandboxViolation"), r


RETURNS_TENSOR = textwrap.dedent(
    """
    from walle_engine import np
    def run(ctx):
        x = np.arange(12, dtype="float32").reshape(3, 4) * ctx.inputs["k"]
        ctx.return_tensor("embedding", x)
        ctx.return_tensor("ids", np.array([7, 8], dtype="int64"))
        if ctx.inputs.get("fail"):
            raise RuntimeError("after returning tensors")
        return "ok"
    """
)


def test_a_task_hands_tensors_to_the_runtime_by_handle(vm1: TaskVM) -> None:
    vm1.load("emb", RETURNS_TENSOR)
    r = vm1.run("emb", {"k": 2.0})
    assert r.ok, r
    emb, ids = r.tensors["embedding"], r.tensors["ids"]
    np.testing.assert_array_equal(
        np.asarray(emb), np.arange(12, dtype=np.float32).reshape(3, 4) * 2
    )
    assert np.asarray(ids).tolist() == [7, 8]
    # Same memory the task allocated, still charged to the task until the runtime lets go.
    acct = walle_engine.account("emb")
    assert acct.used >= emb.nbytes + ids.nbytes
    del emb, ids, r
    assert released(acct)
    # A failed run's tensors are dropped, not leaked into the exchange.
    r = vm1.run("emb", {"k": 1.0, "fail": True})
    assert not r.ok and r.tensors == {}
    assert released(acct)  # exported tensors stay charged, so none was left in the exchange


def test_process_tasks_return_tensors_as_copies(vm1: TaskVM) -> None:
    with TaskVM(1, process_workers=1) as vm:
        vm.load("emb-proc", RETURNS_TENSOR, config={"isolation": "process"})
        r = vm.run("emb-proc", {"k": 3.0})
        assert r.ok, r
        assert (
            np.asarray(r.tensors["embedding"]).tolist()
            == (np.arange(12, dtype=np.float32).reshape(3, 4) * 3).tolist()
        )
        assert r.tensors["ids"].dtype == "int64"


def test_return_tensor_refuses_other_objects(vm1: TaskVM) -> None:
    vm1.load("bad-tensor", "def run(ctx):\n    ctx.return_tensor('x', [1, 2])\n")
    r = vm1.run("bad-tensor")
    assert r.error_type == "TypeError" and "walle_engine.np array or Tensor" in r.message


def test_tensors_of_a_run_whose_result_is_refused_are_not_leaked(vm1: TaskVM) -> None:
    vm1.load(
        "too-big",
        textwrap.dedent(
            """
            from walle_engine import np
            def run(ctx):
                ctx.return_tensor("x", np.zeros((1024, 1024), dtype="float32"))
                return "y" * (5 << 20)
            """
        ),
    )
    r = vm1.run("too-big")
    assert r.error_type == "ValueError" and "too large" in r.message, r
    assert released(walle_engine.account("too-big"))


def test_engine_hogs_and_runaway_models_do_not_stall_the_others(deep_model: bytes) -> None:
    with TaskVM(2, process_workers=0) as vm:
        vm.load("good", "def run(ctx):\n    return sum(range(ctx.inputs['n']))\n")
        vm.load(
            "hog",
            textwrap.dedent(
                """
                from walle_engine import np
                def run(ctx):
                    keep = []
                    while True:
                        keep.append(np.ones((1024, 1024), dtype="float32"))
                """
            ),
            config={"max_memory_mb": 32, "max_failures": 100},
        )
        vm.load(
            "deep",
            textwrap.dedent(
                """
                from walle_engine import np
                def run(ctx):
                    m = ctx.model("deep")
                    return m.run({"x": np.ones((2048, 512), dtype="float32")})["h200"].shape
                """
            ),
            files={"deep.wle": deep_model},
            config={"timeout_s": 0.5, "max_failures": 100, "max_memory_mb": 4096},
        )
        vm.wait_ready()
        hogs = [vm.submit("hog") for _ in range(3)]
        deep = [vm.submit("deep") for _ in range(2)]
        good = [vm.submit("good", {"n": i}) for i in range(30)]
        assert [f.result(timeout=60).output for f in good] == [sum(range(i)) for i in range(30)]
        # Stopped by the engine's cap; or, when the neighbours' growth is counted against
        # it, by the process-growth budget (docs/task-authoring.md): either way, stopped.
        hog_errors = {f.result(timeout=60).error_type for f in hogs}
        assert hog_errors <= {"MemoryError", "MemoryBudgetExceeded"}, hog_errors
        assert [f.result(timeout=60).error_type for f in deep] == ["TaskTimeout"] * 2, [
            f.result().message for f in deep
        ]
        assert vm.run("good", {"n": 5}).output == 10
