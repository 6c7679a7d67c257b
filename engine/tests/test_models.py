"""Real architectures (tiny sizes) against onnxruntime, and the Model API contract."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import walle_engine
from model_zoo import encoder, mlp, mobilenet_v2, random_feeds, recommender, resnet
from onnx import TensorProto, helper
from walle_engine import _core

TINY = {
    "mlp": lambda: mlp(batch=3),
    "mobilenet_block": lambda: mobilenet_v2(res=32, width=0.35, classes=10),
    "resnet_basic": lambda: resnet(res=32, blocks=(1, 1), width=8, classes=10),
    "encoder_layer": lambda: encoder(layers=1, seq=16, hidden=64, heads=4, ffn=128, vocab=1000),
    "recommender": lambda: recommender(vocab=1000, bottom=(32, 16), top=(32, 1)),
}


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to the largest reference magnitude."""
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def convert_and_load(
    model: onnx.ModelProto, tmp_path: Path, **load_kw: object
) -> walle_engine.Model:
    path = tmp_path / f"{model.graph.name}.walle"
    walle_engine.convert(model, path)
    return walle_engine.load(path, **load_kw)


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def test_conversion_fuses_epilogues_of_real_architectures(tmp_path: Path) -> None:
    resnet_report = walle_engine.convert(TINY["resnet_basic"](), tmp_path / "r.walle")
    assert resnet_report.fused_batchnorms > 0 and resnet_report.fused_residuals > 0
    encoder_report = walle_engine.convert(TINY["encoder_layer"](), tmp_path / "e.walle")
    assert encoder_report.fused_biases == 6  # Q, K, V, output projection, two FFN layers


@pytest.mark.parametrize("name", sorted(TINY))
def test_it_matches_onnxruntime_on_real_architectures(name: str, tmp_path: Path) -> None:
    model = TINY[name]()
    feeds = random_feeds(model)
    expected = ort_run(model, feeds)
    m = convert_and_load(model, tmp_path)
    got = m.run(feeds)
    for info, exp in zip(m.outputs, expected, strict=True):
        assert got[info.name].shape == exp.shape
        assert rel_err(got[info.name], exp) <= 1e-4, name


@pytest.mark.parametrize("level", walle_engine.supported_isas())
def test_every_simd_level_gives_the_same_model_output(level: str, tmp_path: Path) -> None:
    model = TINY["mobilenet_block"]()
    feeds = random_feeds(model)
    expected = ort_run(model, feeds)[0]
    m = convert_and_load(model, tmp_path, max_isa=level, cache=False)
    assert all(
        p["choice"].split(":")[1]
        in walle_engine.supported_isas()[: walle_engine.supported_isas().index(level) + 1]
        for p in m.plan()
    )
    assert rel_err(next(iter(m.run(feeds).values())), expected) <= 1e-4


def relu_model() -> onnx.ModelProto:
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_it_lists_inputs_and_outputs(tmp_path: Path) -> None:
    m = convert_and_load(relu_model(), tmp_path)
    assert m.inputs == [walle_engine.TensorInfo("x", "float32", (2, 3))]
    assert m.outputs == [walle_engine.TensorInfo("y", "float32", (2, 3))]


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        ({"z": np.zeros((2, 3), np.float32)}, "unknown input 'z'"),
        ({}, "missing input 'x'"),
        ({"x": np.zeros((2, 3), np.float64)}, "input 'x' must be float32"),
        ({"x": np.zeros((3, 2), np.float32)}, r"input 'x' must have shape \(2, 3\)"),
    ],
)
def test_bad_inputs_fail_with_a_message_naming_the_input(
    feeds: dict, message: str, tmp_path: Path
) -> None:
    m = convert_and_load(relu_model(), tmp_path)
    with pytest.raises(ValueError, match=message):
        m.run(feeds)


def test_unsupported_models_fail_at_conversion_with_the_list(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Det", ["a"], ["b"]),
        helper.make_node("Hardmax", ["b"], ["y"]),
    ]
    g = helper.make_graph(
        nodes,
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    with pytest.raises(walle_engine.UnsupportedModelError, match="Det, Hardmax") as e:
        walle_engine.convert(helper.make_model(g), tmp_path / "bad.walle")
    assert e.value.unsupported == ["Det", "Hardmax"]


def test_run_is_safe_from_several_threads(tmp_path: Path) -> None:
    model = TINY["resnet_basic"]()
    m = convert_and_load(model, tmp_path)
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(4)]
    expected = [ort_run(model, {"input": x})[0] for x in inputs]
    errors: list[str] = []

    def worker(i: int) -> None:
        for _ in range(5):
            got = m.run({"input": inputs[i]})
            if rel_err(next(iter(got.values())), expected[i]) > 1e-4:
                errors.append(f"thread {i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_run_releases_the_gil(tmp_path: Path) -> None:
    model = resnet(res=192, blocks=(2, 2), width=32, classes=10)
    m = convert_and_load(model, tmp_path, tune=False)
    feeds = random_feeds(model)

    def ticks_during_runs() -> int:
        done = threading.Event()
        ticks = 0

        def work() -> None:
            for _ in range(3):
                m.run(feeds)
            done.set()

        t = threading.Thread(target=work)
        t.start()
        while not done.is_set():  # only advances while run() has let go of the GIL
            ticks += 1
        t.join()
        return ticks

    # A host busy with other jobs may not schedule this thread at all during one attempt
    # (the runs take milliseconds): only a run that keeps the GIL fails every attempt.
    assert any(ticks_during_runs() > 1000 for _ in range(5))


def test_thread_count_setting_keeps_results(tmp_path: Path) -> None:
    model = TINY["encoder_layer"]()
    feeds = random_feeds(model)
    m = convert_and_load(model, tmp_path)
    before = walle_engine.num_threads()
    try:
        walle_engine.set_num_threads(1)
        one = next(iter(m.run(feeds).values()))
        walle_engine.set_num_threads(2)
        assert walle_engine.num_threads() == 2
        two = next(iter(m.run(feeds).values()))
    finally:
        walle_engine.set_num_threads(before)
    np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-6)


def test_parallel_regions_keep_results_with_more_threads_than_cores(tmp_path: Path) -> None:
    """The pool's caller runs every task no worker claimed and waits only for claimed ones
    (engine/cpp/threadpool.cpp). With more workers than this host's cores, workers are
    preempted mid-region and join late, while several Python threads run the model at once
    (the pool then runs other callers' regions inline): every result stays the 1-thread one."""
    # Full-size layers: their convolutions are split (small ones run on the caller alone).
    model = mobilenet_v2(res=224, width=1.0, classes=10)
    feeds = random_feeds(model)
    m = convert_and_load(model, tmp_path, tune=False)
    before = walle_engine.num_threads()
    errors: list[str] = []
    try:
        walle_engine.set_num_threads(1)
        expected = next(iter(m.run(feeds).values()))
        walle_engine.set_num_threads(max(3, 2 * (os.cpu_count() or 1)))

        def worker(i: int) -> None:
            for k in range(8):
                got = next(iter(m.run(feeds).values()))
                if not np.allclose(got, expected, rtol=1e-5, atol=1e-6):
                    errors.append(f"thread {i} run {k}")

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for _ in range(4):  # resizing waits for the region in flight
            walle_engine.set_num_threads(walle_engine.num_threads() % 4 + 2)
        for t in threads:
            t.join()
    finally:
        walle_engine.set_num_threads(before)
    assert not errors


FORKED_CHILD = """
import os, sys, time, signal, warnings
sys.path.insert(0, sys.argv[1])
import numpy as np, walle_engine
from model_zoo import mobilenet_v2, random_feeds
model = mobilenet_v2(res=224, width=1.0, classes=10)  # regions big enough to split
feeds = random_feeds(model)
walle_engine.convert(model, sys.argv[2])
walle_engine.set_num_threads(2)
m = walle_engine.load(sys.argv[2], tune=False)
expected = next(iter(m.run(feeds).values()))
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # fork of a threaded process
    pid = os.fork()
if pid == 0:  # the child reports through its exit status only
    ok = False
    try:
        ok = bool(np.allclose(next(iter(m.run(feeds).values())), expected, 1e-5, 1e-6))
    finally:
        os._exit(0 if ok else 3)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("child exit", os.waitstatus_to_exitcode(status))
        sys.exit(0)
    time.sleep(0.05)
os.kill(pid, signal.SIGKILL)
os.waitpid(pid, 0)
print("child hung")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_runs_a_model_at_two_threads(tmp_path: Path) -> None:
    """fork() copies only the calling thread: the child has no pool workers. The pool's
    caller runs every task no worker claimed, so the child's run completes with the same
    result; the previous pool waited for every worker to check in, and the child hung. In a
    fresh interpreter: forked from this test process, the child would also inherit every
    other test's threads and connections."""
    script = tmp_path / "fork.py"
    script.write_text(FORKED_CHILD)
    tests = str(Path(__file__).resolve().parent)
    done = subprocess.run(
        [sys.executable, str(script), tests, str(tmp_path / "m.walle")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "child exit 0", done.stdout


def test_the_memory_plan_reuses_intermediate_buffers(tmp_path: Path) -> None:
    # A deeper chain than the tiny zoo models: 17 blocks of short-lived activations.
    m = convert_and_load(mobilenet_v2(res=64, width=0.5, classes=10), tmp_path, tune=False)
    assert m.memory["arena_bytes"] < m.memory["unplanned_bytes"] / 3


def test_plan_shows_a_choice_per_searched_op_and_the_cache_is_reused(tmp_path: Path) -> None:
    model = TINY["mobilenet_block"]()
    path = tmp_path / "m.walle"
    walle_engine.convert(model, path)
    first = walle_engine.load(path).plan()
    assert first and all(p["source"] in ("timed", "only", "cache") for p in first)
    algos = {p["choice"].split(":")[0] for p in first}
    assert algos & {"dwdirect", "dwnchwc"}  # the depthwise conv got a depthwise kernel
    assert walle_engine.tuning_cache_path().exists()
    second = walle_engine.load(path).plan()
    assert all(p["source"] in ("cache", "only") for p in second)
    assert [p["choice"] for p in first] == [p["choice"] for p in second]


def test_a_choice_tuned_under_a_lower_simd_level_is_not_reused_without_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """set_isa caps the kernels a load may pick. The cache is per CPU signature, which names
    the detected level: a choice tuned under the cap must not come back, from the cache, on
    the same CPU's uncapped loads (it had picked AVX2 kernels for an AVX-512 host)."""
    levels = walle_engine.supported_isas()
    if len(levels) < 2:
        pytest.skip("one SIMD level on this CPU: nothing to cap")
    # A cache of its own: other tests tuned the same layers, uncapped, in this process.
    monkeypatch.setenv("WALLE_ENGINE_CACHE_DIR", str(tmp_path / "cache"))
    _core.tuning_clear()
    model = TINY["encoder_layer"]()
    path = tmp_path / "m.walle"
    walle_engine.convert(model, path)
    best, low = walle_engine.isa(), levels[0]
    try:
        walle_engine.set_isa(low)
        capped = walle_engine.load(path).plan()
    finally:
        walle_engine.set_isa(best)
    assert all(p["choice"].split(":")[1] == low for p in capped)
    uncapped = walle_engine.load(path).plan()
    # Each op signature's first occurrence is tuned afresh (a repeat of it in the same model
    # then comes from the cache, which is how a model with equal layers is tuned once).
    first: dict[str, dict] = {}
    for p in uncapped:
        first.setdefault(p["signature"], p)
    tuned = [p for p in first.values() if p["source"] != "only"]
    assert tuned and all(p["source"] == "timed" for p in tuned)
    assert not {p["signature"] for p in capped} & set(first)
    again = walle_engine.load(path).plan()
    assert [p["choice"] for p in again] == [p["choice"] for p in uncapped]
    assert all(p["source"] in ("cache", "only") for p in again)


def test_a_tuning_profile_round_trips(tmp_path: Path) -> None:
    from walle_engine import _core

    model = TINY["resnet_basic"]()
    path = tmp_path / "r.walle"
    walle_engine.convert(model, path)
    walle_engine.load(path, cache=False)
    profile = tmp_path / "profile.json"
    n = walle_engine.export_profile(profile)
    assert n > 0
    _core.tuning_clear()
    assert walle_engine.import_profile(profile) == n
    plan = walle_engine.load(path, cache=False).plan()
    assert all(p["source"] in ("cache", "only") for p in plan)


@pytest.mark.parametrize(
    ("c", "o", "hw", "k", "stride", "pad", "group"),
    [
        (8, 16, (9, 7), 3, 1, 1, 1),  # winograd-eligible, ragged tiles
        (16, 16, (8, 8), 3, 1, 0, 1),
        (16, 16, (10, 10), 3, 2, 1, 16),  # depthwise, strided
        (12, 24, (6, 6), 1, 1, 0, 1),  # 1x1
        (6, 12, (9, 9), 5, 2, 2, 3),  # grouped
    ],
)
def test_every_conv_implementation_the_search_considers_is_correct(
    c: int, o: int, hw: tuple, k: int, stride: int, pad: int, group: int, tmp_path: Path
) -> None:
    from walle_engine import _core
    from walle_engine._format import ModelFile

    rng = np.random.default_rng(c * o)
    w = rng.standard_normal((o, c // group, k, k)).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    node = helper.make_node(
        "Conv",
        ["x", "w", "b"],
        ["y"],
        kernel_shape=[k, k],
        pads=[pad] * 4,
        strides=[stride] * 2,
        group=group,
    )
    out_hw = [(d + 2 * pad - k) // stride + 1 for d in hw]
    # Conv -> Add(residual) -> Relu: the converter fuses all three into the Conv.
    g = helper.make_graph(
        [node, helper.make_node("Add", ["y", "r"], ["s"]), helper.make_node("Relu", ["s"], ["z"])],
        "conv",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, c, *hw]),
            helper.make_tensor_value_info("r", TensorProto.FLOAT, [2, o, *out_hw]),
        ],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((2, c, *hw)).astype(np.float32)
    r = rng.standard_normal((2, o, *out_hw)).astype(np.float32)
    expected = ort_run(model, {"x": x, "r": r})[0]
    path = tmp_path / "conv.walle"
    report = walle_engine.convert(model, path)
    assert (report.fused_residuals, report.fused_activations) == (1, 1)
    (entry,) = walle_engine.load(path, tune=False, cache=False).plan()
    assert len(entry["candidates"]) > 1
    if k == 3 and stride == 1 and group == 1:
        assert any(ch.startswith("winograd:") for ch in entry["candidates"])
    for choice in entry["candidates"]:
        m = _core.Model(ModelFile(path).graph(), tune=False, forced={entry["signature"]: choice})
        got = np.asarray(m.run([_core.Tensor(x), _core.Tensor(r)])[0])
        assert rel_err(got, expected) <= 1e-4, choice


def test_chained_rasters_in_a_graph_become_one_copy(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Transpose", ["x"], ["t1"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["t1"], ["t2"], perm=[0, 1, 3, 2]),
        helper.make_node("Slice", ["t2", "starts", "ends", "axes"], ["y"]),
    ]
    inits = [
        onnx.numpy_helper.from_array(np.array([1, 2], np.int64), "starts"),
        onnx.numpy_helper.from_array(np.array([3, 5], np.int64), "ends"),
        onnx.numpy_helper.from_array(np.array([1, 3], np.int64), "axes"),
    ]
    g = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 6)).astype(np.float32)
    m = convert_and_load(model, tmp_path, tune=False)
    assert m.merged_rasters == 2
    assert len(m.steps()) == 1
    np.testing.assert_array_equal(m.run({"x": x})["y"], ort_run(model, {"x": x})[0])


def test_a_uint8_image_input_is_cast_inside_the_graph(tmp_path: Path) -> None:
    # The usual vision pre-processing in the graph: uint8 NHWC -> float, scale, NCHW.
    nodes = [
        helper.make_node("Cast", ["img"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["f", "scale"], ["s"]),
        helper.make_node("Transpose", ["s"], ["y"], perm=[0, 3, 1, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "u8_input",
        [helper.make_tensor_value_info("img", TensorProto.UINT8, [1, 5, 7, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 5, 7])],
        [helper.make_tensor("scale", TensorProto.FLOAT, [], [1 / 255])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m = convert_and_load(model, tmp_path)
    assert m.inputs[0].dtype == "uint8"
    img = np.random.default_rng(0).integers(0, 256, (1, 5, 7, 3), dtype=np.uint8)
    (ref,) = ort_run(model, {"img": img})
    np.testing.assert_allclose(m.run({"img": img})["y"], ref, rtol=1e-6)
    with pytest.raises(ValueError, match="input 'img' must be uint8, got float32"):
        m.run({"img": img.astype(np.float32)})


def test_a_uint8_input_used_without_a_cast_is_refused_at_conversion(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "a"], ["y"])],
        "u8_add",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [4])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(walle_engine.UnsupportedModelError, match="must go through Cast"):
        walle_engine.convert(model, tmp_path / "u8.walle")
