"""Per-task budgets in the engine: tensor memory accounted by name with a cap, and a
cancel flag that stops a model run between steps."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import walle_engine
from model_zoo import mlp
from walle_engine import ops

MiB = 1 << 20


def _mlp_model(tmp_path: Path, dims: tuple[int, ...] = (256,) * 40) -> walle_engine.Model:
    path = tmp_path / "deep.walle"
    walle_engine.convert(mlp(batch=64, dims=dims), path)
    return walle_engine.load(path, tune=False, cache=False)


def test_allocations_on_the_bound_thread_are_charged_until_freed() -> None:
    x = np.ones((512, 512), np.float32)  # 1 MiB, borrowed from numpy: not engine memory
    with walle_engine.budget("charged") as acct:
        assert acct.used == 0
        y = ops.unary("abs", x)
        held = acct.used
        assert MiB <= held < MiB + 4096  # the tensor plus alignment slack
        z = ops.unary("neg", y)
        assert acct.used == 2 * held and acct.peak == 2 * held
        del y
        assert acct.used == held
    # Unbound: new allocations are not charged, but freeing still releases the charge.
    w = ops.unary("abs", x)
    assert acct.used == held
    del z, w
    assert acct.used == 0 and acct.peak == 2 * held
    assert walle_engine.account("charged") is not None
    assert walle_engine._core.bound() == (None, None)


def test_the_cap_refuses_an_allocation_with_a_clear_memory_error() -> None:
    x = np.ones((1024, 1024), np.float32)  # 4 MiB
    with walle_engine.budget("capped", cap_bytes=6 * MiB) as acct:
        y = ops.unary("abs", x)
        with pytest.raises(MemoryError, match=r"'capped'.*over its cap of 6\.0 MiB"):
            ops.unary("neg", x)
        assert acct.refused == 1
        assert acct.used < 6 * MiB  # the refused allocation was not left charged
        del y
        ops.unary("neg", x)  # room again once the first tensor is freed
    assert acct.used == 0


def test_model_runs_are_charged_their_arena_and_outputs(tmp_path: Path) -> None:
    model = _mlp_model(tmp_path, dims=(64, 128, 10))
    feeds = {"x": np.ones((64, 64), np.float32)}
    with walle_engine.budget("model-run") as acct:
        out = model.run(feeds)
        assert acct.peak >= model.memory["arena_bytes"] + out[model.outputs[0].name].nbytes
    with walle_engine.budget("tiny", cap_bytes=1024), pytest.raises(MemoryError, match="tiny"):
        model.run(feeds)


def test_a_cancelled_run_stops_its_model(tmp_path: Path) -> None:
    model = _mlp_model(tmp_path, dims=(64, 128, 10))
    feeds = {"x": np.ones((64, 64), np.float32)}
    with walle_engine.budget("cancel-me") as acct:
        acct.cancel()
        with pytest.raises(TimeoutError, match="'cancel-me' cancelled"):
            model.run(feeds)
        assert acct.stopped == 1
    with walle_engine.budget("cancel-me") as acct:  # a new run, a new token
        assert not acct.cancelled
        model.run(feeds)


def test_cancel_from_another_thread_interrupts_a_running_model(tmp_path: Path) -> None:
    # A deep model run in a loop on a worker thread; the main thread cancels the account
    # while the worker is inside the engine (the GIL is released there, so nothing in
    # Python could interrupt it). The worker must come out with TimeoutError.
    model = _mlp_model(tmp_path)
    feeds = {"x": np.ones((64, 256), np.float32)}
    started = threading.Event()
    outcome: list[BaseException | int] = []
    runs: list[walle_engine.Budget] = []

    def worker() -> None:
        try:
            with walle_engine.budget("runaway") as run:
                runs.append(run)
                while True:
                    model.run(feeds)
                    started.set()
        except BaseException as e:
            outcome.append(e)

    t = threading.Thread(target=worker)
    t.start()
    assert started.wait(60)
    runs[0].cancel()
    t.join(60)
    assert not t.is_alive()
    assert isinstance(outcome[0], TimeoutError)
    assert walle_engine.account("runaway").stopped == 1


def test_accounts_are_shared_by_every_interpreter() -> None:
    import _interpreters

    x = np.ones((256, 1024), np.float32)
    with walle_engine.budget("shared") as acct:
        y = ops.unary("abs", x)
    iid = _interpreters.create("isolated")
    try:
        code = (
            "import walle_engine\n"
            "a = walle_engine.account('shared')\n"
            f"assert a.used == {acct.used}, a.used\n"
            "a.cap = 1 << 30\n"
        )
        assert _interpreters.exec(iid, code) is None
    finally:
        _interpreters.destroy(iid)
    assert acct.cap == 1 << 30
    del y
    assert acct.used == 0


def test_a_negative_cap_is_refused() -> None:
    with pytest.raises(ValueError, match="cap must be >= 0"):
        walle_engine.account("neg").cap = -1


def test_tensors_cross_interpreters_by_handle_without_a_copy() -> None:
    import _interpreters

    iid = _interpreters.create("isolated")
    try:
        code = (
            "import walle_engine\n"
            "from walle_engine import np\n"
            "x = np.arange(6, dtype='float32').reshape(2, 3)\n"
            "h = walle_engine._core.export_tensor(x.tensor)\n"
            "h2 = walle_engine._core.export_tensor(x.tensor)\n"
            "import _interpqueues\n"
            "_interpqueues.put(QID, (h, h2), 0, 1)\n"
        )
        import _interpqueues

        qid = _interpqueues.create(0, 0, 1)
        try:
            assert _interpreters.exec(iid, code.replace("QID", str(qid))) is None
            handle, handle2 = _interpqueues.get(qid)[0]
        finally:
            _interpqueues.destroy(qid)
    finally:
        _interpreters.destroy(iid)  # the exporting interpreter is gone; the memory is not
    t = walle_engine._core.import_tensor(handle)
    assert t.shares_storage(walle_engine._core.import_tensor(handle2))  # one storage, no copy
    assert np.asarray(t).tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError, match="no exported tensor"):
        walle_engine._core.import_tensor(handle)  # taken once


def test_a_borrowed_buffer_is_copied_once_on_export() -> None:
    x = np.arange(4, dtype=np.float32)
    t = walle_engine.Tensor(x)
    out = walle_engine._core.import_tensor(walle_engine._core.export_tensor(t))
    assert not out.shares_storage(t)  # numpy's memory cannot outlive its interpreter
    assert np.asarray(out).tolist() == [0, 1, 2, 3]


def test_cancelling_one_run_leaves_another_run_of_the_same_task_alone(tmp_path: Path) -> None:
    model = _mlp_model(tmp_path, dims=(64, 128, 10))
    feeds = {"x": np.ones((64, 64), np.float32)}
    other: list[BaseException | None] = []
    go, done = threading.Event(), threading.Event()

    def second_run() -> None:
        with walle_engine.budget("shared-task"):
            go.wait(30)
            try:
                model.run(feeds)
                other.append(None)
            except BaseException as e:
                other.append(e)
            done.set()

    t = threading.Thread(target=second_run)
    t.start()
    with walle_engine.budget("shared-task") as first:
        first.cancel()
        with pytest.raises(TimeoutError):
            model.run(feeds)
        go.set()
        assert done.wait(30)
    t.join()
    assert other == [None]  # same account, its own token: not cancelled


def test_a_weight_shared_by_many_nodes_is_packed_once(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    layers, n = 20, 256
    w = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32) / 16
    nodes = [
        helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", "w"], [f"h{i + 1}"])
        for i in range(layers)
    ]
    graph = helper.make_graph(
        nodes,
        "shared",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, n])],
        [helper.make_tensor_value_info(f"h{layers}", TensorProto.FLOAT, [4, n])],
        [numpy_helper.from_array(w, "w")],
    )
    path = tmp_path / "shared.walle"
    walle_engine.convert(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path
    )
    with walle_engine.budget("shared-weight") as acct:
        model = walle_engine.load(path, tune=False, cache=False)
        assert acct.used < 3 * w.nbytes  # one packed copy (plus padding), not twenty
    x = np.random.default_rng(1).standard_normal((4, n)).astype(np.float32)
    ref = x.astype(np.float64)
    for _ in range(layers):
        ref = ref @ w
    np.testing.assert_allclose(model.run({"x": x})[f"h{layers}"], ref, rtol=1e-4, atol=1e-5)
