"""The thread-level VM: task API, state, failures, budgets and isolation between tasks."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from walle_device.vm import RunResult, SandboxViolation, TaskVM

try:  # the C++ engine may not be built yet; a bare namespace package does not count
    import walle_engine

    HAS_ENGINE = callable(getattr(walle_engine, "load", None))
except ImportError:
    HAS_ENGINE = False


def src(code: str) -> str:
    return textwrap.dedent(code)


@pytest.fixture(scope="module")
def vm() -> Iterator[TaskVM]:
    # One VM for the module: interpreters are pooled exactly as on a device.
    with TaskVM(2, process_workers=1, recycle_after=20, grace_s=2.0) as v:
        v.wait_ready()
        yield v


def load(vm: TaskVM, task_id: str, code: str, **config: object) -> None:
    vm.load(task_id, src(code), config=dict(config))


def test_it_runs_a_task_and_returns_its_output(vm: TaskVM) -> None:
    load(
        vm,
        "hello",
        """
        import math
        def run(ctx):
            return {"sum": sum(ctx.inputs["xs"]), "pi": round(math.pi, 2), "cfg": ctx.config["k"]}
    """,
        k="v",
    )
    r = vm.run("hello", {"xs": [1, 2, 3]})
    assert r.ok, r
    assert r.output == {"sum": 6, "pi": 3.14, "cfg": "v"}
    assert r.backend == "interpreter"
    assert r.last_error() is None


def test_it_keeps_state_between_runs_of_the_same_task(vm: TaskVM) -> None:
    load(
        vm,
        "counter",
        """
        def run(ctx):
            return ctx.state.incr("n")
    """,
    )
    outs = [vm.run("counter").output for _ in range(5)]
    assert outs == [1, 2, 3, 4, 5]
    assert vm.state("counter") == {"n": 5}


def test_concurrent_runs_of_one_task_keep_each_others_state_keys(vm: TaskVM) -> None:
    load(vm, "keyed", "def run(ctx):\n    ctx.state[ctx.inputs['k']] = ctx.inputs['k']\n")
    futures = [vm.submit("keyed", {"k": f"user{i}"}) for i in range(6)]
    assert all(f.result(timeout=30).ok for f in futures)
    assert sorted(vm.state("keyed")) == [f"user{i}" for i in range(6)]


def test_state_can_be_exported_and_imported_for_persistence(vm: TaskVM) -> None:
    load(vm, "persist", "def run(ctx):\n    return ctx.state.incr('n')\n")
    vm.run("persist")
    snapshot = vm.export_state("persist")
    assert snapshot == {"n": (1, None)}
    vm.import_state("persist", {"n": (41, None)})
    assert vm.run("persist").output == 42


def test_state_survives_a_new_version_of_the_task(vm: TaskVM) -> None:
    load(vm, "versioned", "def run(ctx):\n    ctx.state['v'] = 1\n")
    vm.run("versioned")
    load(vm, "versioned", "def run(ctx):\n    return ctx.state['v']\n")
    assert vm.run("versioned").output == 1


def test_state_keys_expire_after_their_ttl(vm: TaskVM) -> None:
    load(
        vm,
        "ttl",
        """
        def run(ctx):
            if ctx.inputs.get("write"):
                ctx.state.set("short", 1, ttl_s=0.05)
                ctx.state.set("long", 2, ttl_s=3600)
            import time
            time.sleep(ctx.inputs.get("wait", 0))
            return sorted(ctx.state.keys())
    """,
    )
    assert vm.run("ttl", {"write": True}).output == ["long", "short"]
    assert vm.run("ttl", {"wait": 0.1}).output == ["long"]


def test_state_refuses_to_grow_past_its_byte_cap(vm: TaskVM) -> None:
    load(
        vm,
        "capped",
        """
        import walle
        def run(ctx):
            ctx.state["a"] = "x" * 100
            try:
                ctx.state["b"] = "y" * 5000
            except walle.StateFull as e:
                return str(e)
    """,
        state_max_bytes=1000,
    )
    r = vm.run("capped")
    assert r.ok and "cap of 1000" in r.output


def test_a_failed_run_discards_its_state_changes_and_uploads(vm: TaskVM) -> None:
    load(
        vm,
        "half",
        """
        def run(ctx):
            ctx.state["touched"] = True
            ctx.upload({"a": 1})
            raise ValueError("after the side effects")
    """,
        max_failures=100,
    )
    r = vm.run("half")
    assert not r.ok and r.uploads == []
    assert vm.state("half") == {}


def test_uploads_logs_and_print_come_back_with_the_result(vm: TaskVM) -> None:
    load(
        vm,
        "talky",
        """
        def run(ctx):
            ctx.log("seen", len(ctx.window))
            ctx.log.warning("careful")
            print("from print")
            for e in ctx.window:
                ctx.upload({"event": e["id"], "blob": b"raw"})
            return "{:>4}|".format(len(ctx.window))
    """,
    )
    r = vm.run("talky", window=[{"id": "a", "ts": 1.0}, {"id": "b", "ts": 2.0}])
    assert r.ok, r
    assert r.output == "   2|"
    assert r.uploads == [{"event": "a", "blob": b"raw"}, {"event": "b", "blob": b"raw"}]
    assert r.logs == ["INFO seen 2", "WARNING careful", "PRINT from print"]


def test_an_exception_reports_type_message_and_a_task_only_traceback(vm: TaskVM) -> None:
    load(
        vm,
        "crash",
        """
        def helper(d):
            return d["missing"]

        def run(ctx):
            return helper({})
    """,
    )
    r = vm.run("crash")
    assert not r.ok
    assert r.error_type == "KeyError" and r.message == "'missing'"
    assert 'File "<task crash>", line 6, in run' in r.traceback
    assert 'return d["missing"]' in r.traceback
    assert "guest.py" not in r.traceback  # the VM's own frames are not the author's concern
    assert r.last_error() == {"type": "KeyError", "message": "'missing'", "traceback": r.traceback}


def test_a_task_exception_that_cannot_be_printed_does_not_hang_the_worker(vm: TaskVM) -> None:
    # The error report is built after the budget is off, so it must not call the task's
    # __str__ (or anything else the task wrote).
    load(
        vm,
        "evil-str",
        """
        class Sneaky(Exception):
            def __str__(self):
                while True:
                    pass

            def __repr__(self):
                while True:
                    pass

        def run(ctx):
            raise Sneaky("hidden")
    """,
        max_failures=100,
    )
    r = vm.run("evil-str")
    assert r.error_type == "Sneaky" and r.message == "hidden"
    assert "Sneaky: hidden" in r.traceback


def test_a_smuggled_finalizer_is_refused_and_cannot_hang_a_recycle() -> None:
    # `def __del__` is refused at load, and three-argument type() at run time; the worker
    # still recycles under a budget, so nothing a task parked in a global can hang it.
    with TaskVM(1, process_workers=0, recycle_after=1, spares=0) as vm:
        vm.load(
            "finalizer",
            """
keep = []

def run(ctx):
    if ctx.inputs.get("smuggle"):
        type("Sticky", (), {"__" + "del__": lambda self: [0 for _ in iter(int, 1)]})
    keep.append(list(range(10)))
    return len(keep)
""",
            config={"max_failures": 100},
        )
        refused = vm.run("finalizer", {"smuggle": True})
        assert refused.error_type == "SandboxViolation" and "type(name, bases, dict)" in (
            refused.message
        )
        results = [vm.run("finalizer") for _ in range(4)]
        assert all(r.ok for r in results), results
        assert len(vm.stats()["interpreter_create_ms"]) >= 2  # it did recycle


def test_a_task_without_run_is_reported(vm: TaskVM) -> None:
    load(vm, "norun", "x = 1\n")
    r = vm.run("norun")
    assert r.error_type == "TypeError" and "must define run(ctx)" in r.message


def test_outputs_must_be_plain_data(vm: TaskVM) -> None:
    load(
        vm,
        "objout",
        """
        class Thing:
            pass
        def run(ctx):
            return Thing()
    """,
    )
    r = vm.run("objout")
    assert r.error_type == "TypeError" and "plain data" in r.message


def test_a_huge_output_is_refused_not_serialised(vm: TaskVM) -> None:
    load(vm, "bigout", "def run(ctx):\n    return [0] * 5_000_000\n")
    r = vm.run("bigout")
    assert r.error_type == "ValueError" and "too large once expanded" in r.message


def test_inputs_must_be_plain_data(vm: TaskVM) -> None:
    load(vm, "echo", "def run(ctx):\n    return ctx.inputs\n")
    with pytest.raises(TypeError, match="plain data"):
        vm.run("echo", {"x": object()})


def test_buffers_are_shared_with_the_task_without_a_copy(vm: TaskVM) -> None:
    load(
        vm,
        "buf",
        """
        def run(ctx):
            view = ctx.buffers["pixels"]
            try:
                view[0] = 0
            except TypeError:
                writable = False
            else:
                writable = True
            return {"sum": sum(view), "n": len(view), "writable": writable}
    """,
    )
    data = bytearray(range(100))
    r = vm.run("buf", buffers={"pixels": data})
    assert r.ok, r.traceback
    assert r.output == {"sum": sum(range(100)), "n": 100, "writable": False}
    assert data[0] == 0 and data[1] == 1  # the host's memory is untouched


@pytest.mark.skipif(not HAS_ENGINE, reason="walle_engine is not built in this environment")
def test_an_engine_tensor_wraps_a_shared_buffer(vm: TaskVM) -> None:
    import array

    load(
        vm,
        "tensor",
        """
        import walle_engine
        def run(ctx):
            t = walle_engine.Tensor(ctx.buffers["x"].cast("B").cast("f", [2, 2]))
            return [t.dtype, list(t.shape)]
    """,
    )
    r = vm.run("tensor", buffers={"x": array.array("f", [1, 2, 3, 4])})
    assert r.ok and r.output == ["float32", [2, 2]], r


def test_buffers_reach_process_tasks_too(vm: TaskVM) -> None:
    load(vm, "pbuf", "def run(ctx):\n    return bytes(ctx.buffers['b'])\n", isolation="process")
    assert vm.run("pbuf", buffers={"b": b"abc"}).output == b"abc"


def test_bundle_modules_can_be_imported(vm: TaskVM) -> None:
    vm.load(
        "bundled",
        "import features\ndef run(ctx):\n    return features.double(21)\n",
        files={"features.py": b"def double(x):\n    return 2 * x\n"},
    )
    assert vm.run("bundled").output == 42


def test_a_bad_config_is_refused_at_load(vm: TaskVM) -> None:
    with pytest.raises(ValueError, match="isolation"):
        vm.load("bad", "def run(ctx): pass\n", config={"isolation": "container"})
    with pytest.raises(ValueError, match="requires"):
        vm.load("bad", "def run(ctx): pass\n", config={"requires": ["pandas"]})
    with pytest.raises(ValueError, match="timeout_s"):
        vm.load("bad", "def run(ctx): pass\n", config={"timeout_s": -1})
    with pytest.raises(SandboxViolation, match="syntax error"):
        vm.load("bad", "def run(ctx):\n  return (\n")
    with pytest.raises(KeyError, match="not loaded"):
        vm.run("never-loaded")


def test_ctx_model_reports_a_missing_file(vm: TaskVM) -> None:
    load(vm, "nomodel", "def run(ctx):\n    return ctx.model('ranker')\n")
    r = vm.run("nomodel")
    assert r.error_type == "ModelUnavailable" and "no model file 'ranker'" in r.message


@pytest.mark.skipif(HAS_ENGINE, reason="checks the message when walle_engine is absent")
def test_ctx_model_without_the_engine_says_so(vm: TaskVM) -> None:
    vm.load("engineless", "def run(ctx):\n    return ctx.model('m')\n", files={"m.wle": b"x"})
    r = vm.run("engineless")
    assert r.error_type == "ModelUnavailable" and "walle_engine" in r.message


@pytest.mark.skipif(not HAS_ENGINE, reason="walle_engine is not built in this environment")
def test_walle_engine_imports_inside_an_isolated_interpreter(vm: TaskVM) -> None:
    load(vm, "engine", "import walle_engine\ndef run(ctx):\n    return 'ok'\n")
    r = vm.run("engine")
    assert r.ok, r.traceback


@pytest.mark.skipif(not HAS_ENGINE, reason="walle_engine is not built in this environment")
def test_a_broken_model_file_is_a_clean_task_error(vm: TaskVM) -> None:
    vm.load(
        "junk-model",
        "def run(ctx):\n    return str(ctx.model('m'))\n",
        files={"m.wle": b"not a model"},
        config={"max_failures": 100},
    )
    r = vm.run("junk-model")
    assert not r.ok and r.error_type and "m.wle" not in r.message.split("/")[0], r
    load(vm, "after-junk", "def run(ctx):\n    return 1\n")
    assert vm.run("after-junk").ok


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """y = relu(x @ I), converted to the engine's format."""
    if not HAS_ENGINE:
        pytest.skip("walle_engine is not built in this environment")
    onnx = pytest.importorskip("onnx")
    np = pytest.importorskip("numpy")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")],
    )
    d = tmp_path_factory.mktemp("model")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), d / "m.onnx")
    walle_engine.convert(d / "m.onnx", d / "m.wle")
    return (d / "m.wle").read_bytes()


def test_ctx_model_loads_an_engine_model_inside_an_isolated_interpreter(
    vm: TaskVM, tiny_model: bytes
) -> None:
    vm.load(
        "model-meta",
        "def run(ctx):\n    m = ctx.model('m')\n    return [i.name for i in m.inputs]\n",
        files={"m.wle": tiny_model},
    )
    r = vm.run("model-meta")
    assert r.ok and r.output == ["x"], r


def test_a_process_task_runs_an_engine_model_with_numpy(vm: TaskVM, tiny_model: bytes) -> None:
    vm.load(
        "model-run",
        "import numpy as np\n"
        "def run(ctx):\n"
        "    x = np.array([ctx.inputs['x']], dtype=np.float32)\n"
        "    return ctx.model('m').run({'x': x})['y'].tolist()\n",
        files={"m.wle": tiny_model},
        config={"requires": ["numpy"]},
    )
    r = vm.run("model-run", {"x": [1.0, -2.0, 3.0, -4.0]})
    assert r.ok and r.output == [[1.0, 0.0, 3.0, 0.0]], r


def test_ctx_read_returns_bundle_data_files(vm: TaskVM) -> None:
    vm.load(
        "reader",
        "import json\ndef run(ctx):\n    return json.loads(ctx.read('vocab.json'))\n",
        files={"vocab.json": b'{"a": 1}'},
    )
    assert vm.run("reader").output == {"a": 1}
    vm.load("reader2", "def run(ctx):\n    return ctx.read('../../etc/passwd')\n")
    assert vm.run("reader2").error_type == "FileNotFoundError"


def test_bundle_file_names_cannot_escape(vm: TaskVM) -> None:
    with pytest.raises(ValueError, match="relative path"):
        vm.load("evil-files", "def run(ctx): pass\n", files={"../x.wle": b"x"})
    with pytest.raises(ValueError, match="relative path"):
        vm.load("evil-files", "def run(ctx): pass\n", files={"/etc/x": b"x"})


# ---------------------------------------------------------------- budgets and failure policy
def test_a_runaway_loop_is_stopped_at_its_budget(vm: TaskVM) -> None:
    load(vm, "spin", "def run(ctx):\n    while True:\n        pass\n", timeout_s=0.2)
    r = vm.run("spin")
    assert r.error_type == "TaskTimeout" and r.timed_out
    assert 'File "<task spin>"' in r.traceback


def test_catching_the_timeout_does_not_keep_a_task_alive(vm: TaskVM) -> None:
    load(
        vm,
        "stubborn",
        """
        import walle
        def run(ctx):
            while True:
                try:
                    while True:
                        pass
                except BaseException:
                    continue
    """,
        timeout_s=0.2,
    )
    assert vm.run("stubborn").error_type == "TaskTimeout"


def test_sleep_inside_a_task_respects_the_budget(vm: TaskVM) -> None:
    load(vm, "sleepy", "import time\ndef run(ctx):\n    time.sleep(60)\n", timeout_s=0.2)
    assert vm.run("sleepy").error_type == "TaskTimeout"


def test_module_level_code_is_under_the_budget_too(vm: TaskVM) -> None:
    load(vm, "toplevel", "while True:\n    pass\ndef run(ctx):\n    pass\n", timeout_s=0.2)
    assert vm.run("toplevel").error_type == "TaskTimeout"


def test_a_memory_hungry_task_is_stopped_by_its_memory_budget(vm: TaskVM) -> None:
    load(
        vm,
        "hog",
        """
        def run(ctx):
            keep = []
            while True:
                keep.append(str(len(keep)) * 2000)
    """,
        max_memory_mb=64,
        timeout_s=20,
    )
    r = vm.run("hog")
    assert r.error_type == "MemoryBudgetExceeded", r


def test_ctx_time_left_counts_down(vm: TaskVM) -> None:
    load(vm, "clock", "def run(ctx):\n    return ctx.time_left()\n", timeout_s=3)
    left = vm.run("clock").output
    assert 0 < left <= 3


FLAKY = "def run(ctx):\n    if ctx.inputs.get('fail'):\n        raise RuntimeError('nope')\n    return 1\n"


def test_a_task_failing_n_times_in_a_row_is_disabled_and_reported() -> None:
    reported: list[tuple[str, str]] = []
    with TaskVM(
        1, process_workers=0, max_failures=3, on_disabled=lambda t, why: reported.append((t, why))
    ) as vm:
        vm.load("flaky", FLAKY)
        vm.run("flaky", {"fail": True})
        vm.run("flaky", {"fail": True})
        assert vm.run("flaky").ok  # a success resets the streak
        results = [vm.run("flaky", {"fail": True}) for _ in range(3)]
        assert [r.disabled for r in results] == [False, False, True]
        status = vm.status("flaky")
        assert not status.enabled and status.consecutive_failures == 3
        assert "RuntimeError: nope" in status.disabled_reason
        assert reported == [("flaky", status.disabled_reason)]
        blocked = vm.run("flaky")
        assert blocked.error_type == "TaskDisabled"
        # Loading the same version again does not lift the disable; a new version does.
        vm.load("flaky", FLAKY)
        assert not vm.status("flaky").enabled
        vm.enable("flaky")
        assert vm.run("flaky").ok
        vm.run("flaky", {"fail": True})
        vm.run("flaky", {"fail": True})
        vm.run("flaky", {"fail": True})
        vm.load("flaky", FLAKY + "# v2\n")
        assert vm.status("flaky").enabled and vm.run("flaky").ok


def test_timeouts_count_towards_disabling(vm: TaskVM) -> None:
    load(vm, "overrun", "def run(ctx):\n    while True: pass\n", timeout_s=0.05, max_failures=2)
    assert not vm.run("overrun").disabled
    assert vm.run("overrun").disabled
    assert vm.run("overrun").error_type == "TaskDisabled"


def test_runaway_crashing_and_hungry_tasks_do_not_stall_the_others() -> None:
    with TaskVM(2, process_workers=0) as vm:
        vm.load("good", "def run(ctx):\n    return sum(range(ctx.inputs['n']))\n")
        vm.load("spin", "def run(ctx):\n    while True: pass\n", config={"timeout_s": 1.0})
        vm.load(
            "crash",
            "def run(ctx):\n    raise RuntimeError('boom')\n",
            config={"max_failures": 1000},
        )
        vm.load(
            "hog",
            "def run(ctx):\n    x = []\n    while True: x.append(str(len(x)) * 2000)\n",
            config={"max_memory_mb": 64, "timeout_s": 20},
        )
        vm.wait_ready()
        spin = vm.submit("spin")
        hog = vm.submit("hog")
        good = [vm.submit("good", {"n": i}) for i in range(40)]
        crashes = [vm.submit("crash") for _ in range(10)]
        # The good runs all finish, with the right answers, while the runaway is still
        # inside its budget or has just been stopped.
        assert [f.result(timeout=30).output for f in good] == [sum(range(i)) for i in range(40)]
        assert all(f.result(timeout=30).error_type == "RuntimeError" for f in crashes)
        assert spin.result(timeout=30).error_type == "TaskTimeout"
        assert hog.result(timeout=30).error_type == "MemoryBudgetExceeded"
        # And the pool is healthy afterwards.
        assert vm.run("good", {"n": 4}).output == 6


def test_interpreters_are_recycled_after_k_runs() -> None:
    with TaskVM(1, process_workers=0, recycle_after=3) as vm:
        vm.load(
            "stamp",
            """
            import random
            seen = []
            def run(ctx):
                seen.append(1)
                return len(seen)
        """.replace("\n            ", "\n"),
        )
        outs = [vm.run("stamp").output for _ in range(12)]
        # Module globals live per interpreter; a recycle starts them over.
        assert outs[0] == 1 and 1 in outs[3:] and max(outs) <= 4
        assert len(vm.stats()["interpreter_create_ms"]) >= 3


# ---------------------------------------------------------------- process backend
def test_process_isolation_runs_the_same_api(vm: TaskVM) -> None:
    load(
        vm,
        "proc",
        """
        def run(ctx):
            ctx.upload({"p": 1})
            return ctx.state.incr("n")
    """,
        isolation="process",
    )
    assert [vm.run("proc").output for _ in range(2)] == [1, 2]
    r = vm.run("proc")
    assert r.backend == "process" and r.uploads == [{"p": 1}]


def test_numpy_tasks_run_in_the_process_backend(vm: TaskVM) -> None:
    pytest.importorskip("numpy")
    vm.load(
        "np",
        "import numpy as np\ndef run(ctx):\n    return float(np.arange(4).sum())\n",
        config={"requires": ["numpy"]},
    )
    r = vm.run("np")
    assert r.ok and r.output == 6.0 and r.backend == "process", r


def test_numpy_is_refused_in_an_isolated_interpreter(vm: TaskVM) -> None:
    with pytest.raises(SandboxViolation, match="numpy"):
        vm.load("np-interp", "import numpy\ndef run(ctx): pass\n")
    with pytest.raises(ValueError, match="process"):
        vm.load(
            "np-interp",
            "def run(ctx): pass\n",
            config={"requires": ["numpy"], "isolation": "interpreter"},
        )


def test_numpy_file_functions_are_hidden(vm: TaskVM) -> None:
    pytest.importorskip("numpy")
    vm.load(
        "np-load",
        "import numpy as np\ndef run(ctx):\n    return np.load('/etc/passwd')\n",
        config={"requires": ["numpy"]},
    )
    r = vm.run("np-load")
    assert r.error_type == "SandboxViolation" and "not available in tasks" in r.message


def test_a_worker_stuck_in_c_is_abandoned_and_replaced() -> None:
    # sum(range(...)) is one C call: nothing in-process can interrupt it. The VM answers
    # at budget + grace, replaces the worker, and the stuck thread cleans up when the call
    # returns (bounded here so the test leaves nothing running).
    with TaskVM(1, process_workers=0, grace_s=0.05) as vm:
        vm.load("csum", "def run(ctx):\n    return sum(range(10**8))\n", config={"timeout_s": 0.05})
        vm.load("after", "def run(ctx):\n    return 'alive'\n")
        r = vm.run("csum")
        assert r.error_type == "TaskTimeout" and "abandoned" in r.message
        assert vm.run("after").output == "alive"  # served by the replacement worker
        assert vm.stats()["abandoned_workers"] == 1


def test_code_stuck_in_c_is_hard_killed_in_the_process_backend() -> None:
    with TaskVM(1, process_workers=1, grace_s=0.5) as vm:
        vm.load(
            "csum",
            "def run(ctx):\n    return sum(range(10**13))\n",
            config={"isolation": "process", "timeout_s": 0.3},
        )
        vm.load("after", "def run(ctx):\n    return 'alive'\n", config={"isolation": "process"})
        r = vm.run("csum")
        assert r.error_type == "TaskTimeout" and "killed" in r.message
        assert vm.run("after").output == "alive"
        assert vm.stats()["process_restarts"] == 1


def test_a_crashing_worker_process_is_reported_and_replaced() -> None:
    with TaskVM(1, process_workers=1, process_memory_mb=400) as vm:
        vm.load(
            "huge",
            "def run(ctx):\n    return len(bytes(2 * 1024 ** 3))\n",
            config={"isolation": "process"},
        )
        vm.load("after", "def run(ctx):\n    return 'alive'\n", config={"isolation": "process"})
        r = vm.run("huge")
        assert not r.ok and r.error_type in ("MemoryError", "WorkerCrashed"), r
        assert vm.run("after").output == "alive"


def test_runs_fail_cleanly_when_no_interpreter_can_be_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from walle_device.vm import pools

    def broken(pool: object) -> int:
        raise RuntimeError("no interpreters today")

    monkeypatch.setattr(pools, "boot_interpreter", broken)
    with TaskVM(1, process_workers=0, spares=0) as vm:
        vm.load("any", "def run(ctx):\n    return 1\n")
        r = vm.run("any")
        assert r.error_type == "VMError" and "could not start" in r.message


def test_many_interpreters_start_run_and_stop_together() -> None:
    # Regression: with CPython 3.13.0's C _datetime loaded in several isolated
    # interpreters, destroying them aborted the whole process. Every allowlisted module is
    # imported at boot, so this exercises the lot.
    with TaskVM(3, process_workers=0, spares=2, recycle_after=2) as vm:
        vm.load(
            "dt",
            "import datetime\ndef run(ctx):\n    return datetime.timedelta(hours=1).total_seconds()\n",
        )
        futures = [vm.submit("dt") for _ in range(12)]
        assert [f.result(timeout=30).output for f in futures] == [3600.0] * 12


def test_run_result_is_a_value() -> None:
    r = RunResult("t", False, error_type="X", message="m", traceback="tb")
    assert r.last_error() == {"type": "X", "message": "m", "traceback": "tb"}


def test_the_cli_checks_and_runs_a_script(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from walle_device.vm.__main__ import main

    good = tmp_path / "good.py"
    good.write_text("def run(ctx):\n    return ctx.inputs['x'] * 2\n")
    bad = tmp_path / "bad.py"
    bad.write_text("import socket\n")
    assert main(["check", str(good)]) == 0
    assert main(["check", str(bad)]) == 1
    assert main(["run", str(good), "--inputs", '{"x": 21}']) == 0
    assert '"output": 42' in capsys.readouterr().out
