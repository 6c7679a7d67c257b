"""Hostile model files: every malformed or oversized file is refused with a clear error
(walle_engine.ModelError, or MemoryError past the size limits) and never crashes, hangs or
exhausts the process.

Each case loads (and where it loads, runs) the file in a child process, so a crash fails
the test instead of killing pytest: the child's exit status and its one line of JSON say
what happened."""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from walle_engine._format import ALIGN, MAGIC, VERSION, write_model

pytestmark = pytest.mark.timeout(120)

FUZZ_REGRESS = Path(__file__).resolve().parent.parent / "fuzz" / "corpus"

CHILD = r"""
import json, sys
import walle_engine as we

path, opts = sys.argv[1], json.loads(sys.argv[2])
if opts.get("limits"):
    we.set_model_limits(**opts["limits"])
try:
    if opts.get("onnx"):
        from walle_engine.converter import convert_model
        convert_model(path, path + ".walle")
        path = path + ".walle"
    m = we.load(path, tune=False, cache=False)
    feeds = {i.name: we.np.ones(i.shape, dtype=i.dtype) for i in m.inputs}
    m.run(feeds)
    out = {"type": "ok", "msg": "", "model_error": False}
except Exception as e:
    out = {"type": type(e).__name__, "msg": str(e), "model_error": isinstance(e, we.ModelError)}
print("RESULT " + json.dumps(out))
"""


def outcome(path: Path, **opts: Any) -> dict[str, Any]:
    """Load and run `path` in a child; fail the test on a crash or hang."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), json.dumps(opts)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading {path.name} hung (over 60 s)")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        pytest.fail(
            f"loading {path.name} crashed the process (exit {proc.returncode}):\n"
            f"{proc.stderr[-3000:]}"
        )
    return json.loads(lines[-1][len("RESULT ") :])


def refused(path: Path, *words: str, memory: bool = False, **opts: Any) -> str:
    """Assert the file is refused: ModelError (or MemoryError with `memory`) whose
    message contains every word in `words` (case-insensitive)."""
    r = outcome(path, **opts)
    if memory:
        assert r["type"] == "MemoryError" or r["model_error"], r
    else:
        assert r["model_error"], r
    for w in words:
        assert w.lower() in r["msg"].lower(), (w, r)
    return r["msg"]


def not_crashing(path: Path, **opts: Any) -> dict[str, Any]:
    """Any clean outcome is fine (the file may happen to be valid); errors are ValueError
    family or MemoryError."""
    r = outcome(path, **opts)
    assert r["type"] in ("ok", "ModelError", "MemoryError", "ValueError"), r
    return r


# ---- building files ---------------------------------------------------------------------


def f32(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def i64(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}q", *values)


def base_parts() -> dict[str, Any]:
    """A small valid model: z = relu(x @ w)."""
    return {
        "inputs": [("x", "float32", [1, 4])],
        "outputs": ["z"],
        "nodes": [
            ("MatMul", "mm", ["x", "w"], ["y"], {}),
            ("Relu", "relu", ["y"], ["z"], {}),
        ],
        "constants": {"w": ("float32", [4, 4], f32(*range(16)))},
    }


def model(tmp_path: Path, name: str = "m.walle", **parts: Any) -> Path:
    p = base_parts()
    p.update(parts)
    path = tmp_path / name
    write_model(path, **p)
    return path


def unary_model(tmp_path: Path, nodes: list[Any], constants: Any = None, **kw: Any) -> Path:
    """Input x float32 [1, 2, 4, 4]; the nodes must produce 'z'."""
    return model(
        tmp_path,
        inputs=kw.get("inputs", [("x", "float32", [1, 2, 4, 4])]),
        outputs=kw.get("outputs", ["z"]),
        nodes=nodes,
        constants=constants or {},
    )


def raw_file(
    tmp_path: Path,
    header: Any,
    blob: bytes = b"",
    *,
    magic: bytes = MAGIC,
    version: int = VERSION,
    head_len: int | None = None,
    head: bytes | None = None,
) -> Path:
    """A file with a hand-made header (anything JSON can say, or raw bytes)."""
    body = head if head is not None else json.dumps(header).encode()
    n = len(body) if head_len is None else head_len
    prefix = magic + struct.pack("<IQ", version, n) + body
    path = tmp_path / "raw.walle"
    path.write_bytes(prefix + b"\0" * ((-len(prefix)) % ALIGN) + blob)
    return path


def header(**over: Any) -> dict[str, Any]:
    h: dict[str, Any] = {
        "format": VERSION,
        "metadata": {},
        "inputs": [["x", "float32", [1, 4]]],
        "outputs": ["z"],
        "nodes": [["MatMul", "mm", ["x", "w"], ["y"], {}], ["Relu", "relu", ["y"], ["z"], {}]],
        "constants": [["w", "float32", [4, 4], 0, 64]],
    }
    h.update(over)
    return h


BLOB = f32(*range(16))


def test_the_base_model_loads_and_runs(tmp_path: Path) -> None:
    assert outcome(model(tmp_path))["type"] == "ok"
    assert outcome(raw_file(tmp_path, header(), BLOB))["type"] == "ok"


def test_model_error_is_a_value_error_exported_from_the_package() -> None:
    import walle_engine as we

    assert issubclass(we.ModelError, ValueError)
    assert "ModelError" in we.__all__


# ---- truncation -------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [0, 1, 7, 8, 11, 12, 19, 20, 21, 40, -70, -65, -64, -1])
def test_truncated_file_is_refused(tmp_path: Path, cut: int) -> None:
    path = model(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    msg = refused(path)
    assert str(path) in msg


# ---- bit flips in every header field ------------------------------------------------------


@pytest.mark.parametrize("byte", range(20))
def test_bit_flip_in_the_prefix_is_refused(tmp_path: Path, byte: int) -> None:
    path = model(tmp_path)
    data = bytearray(path.read_bytes())
    data[byte] ^= 0x40
    path.write_bytes(bytes(data))
    if byte < 8:
        refused(path, "not a walle_engine model")
    elif byte < 12:
        refused(path, "version")
    else:
        refused(path, memory=True)  # a header length past the file or the 64 MiB bound


def test_bit_flips_across_the_header_never_crash(tmp_path: Path) -> None:
    path = model(tmp_path)
    data = path.read_bytes()
    head_len = struct.unpack("<Q", data[12:20])[0]
    rng = random.Random(12)
    for i in range(12):
        flipped = bytearray(data)
        flipped[20 + rng.randrange(head_len)] ^= 1 << rng.randrange(7)
        p = tmp_path / f"flip{i}.walle"
        p.write_bytes(bytes(flipped))
        not_crashing(p)


def test_header_length_past_64_mib_is_refused(tmp_path: Path) -> None:
    refused(raw_file(tmp_path, header(), BLOB, head_len=(64 << 20) + 1), "header length")
    refused(raw_file(tmp_path, header(), BLOB, head_len=2**64 - 1), "header length")


@pytest.mark.parametrize(
    "head",
    [b"not json", b"\xff\xfe\xfd", b"[1, 2]", b"null", b'"s"', b"[" * 100000 + b"]" * 100000],
    ids=["text", "bytes", "array", "null", "string", "deep"],
)
def test_header_that_is_not_a_json_object_is_refused(tmp_path: Path, head: bytes) -> None:
    refused(raw_file(tmp_path, None, head=head))


# ---- header fields of the wrong type ---------------------------------------------------------


@pytest.mark.parametrize(
    "over, word",
    [
        ({"inputs": {"x": 1}}, "inputs"),
        ({"outputs": "z"}, "outputs"),
        ({"nodes": None}, "nodes"),
        ({"constants": 7}, "constants"),
        ({"metadata": []}, "metadata"),
        ({"format": 2}, "format"),
        ({"inputs": [["x", "float32"]]}, "inputs[0]"),
        ({"inputs": [["x", "float32", [1, 4], 9]]}, "inputs[0]"),
        ({"inputs": [[5, "float32", [1, 4]]]}, "name"),
        ({"inputs": [["x", "float32", "14"]]}, "shape"),
        ({"outputs": [1]}, "outputs[0]"),
        ({"nodes": [["MatMul", "mm", "xw", ["y"], {}]]}, "inputs"),
        ({"nodes": [["MatMul", "mm", ["x", "w"], ["y"], []]]}, "attributes"),
        ({"nodes": [["MatMul", "mm", ["x", 3], ["y"], {}]]}, "input 1"),
        ({"nodes": [[None, "mm", ["x", "w"], ["y"], {}]]}, "op"),
        ({"constants": [["w", "float32", [4, 4], "0", 64]]}, "offset"),
        ({"constants": [["w", "float32", [4, 4], 0, 64.0]]}, "offset"),
    ],
)
def test_header_field_of_the_wrong_type_is_refused(
    tmp_path: Path, over: dict[str, Any], word: str
) -> None:
    refused(raw_file(tmp_path, header(**over), BLOB), word)


def test_missing_header_key_is_refused(tmp_path: Path) -> None:
    for key in ("inputs", "outputs", "nodes", "constants"):
        h = header()
        del h[key]
        refused(raw_file(tmp_path, h, BLOB), key)


def test_overlong_names_and_lists_are_refused(tmp_path: Path) -> None:
    refused(raw_file(tmp_path, header(outputs=["z" * 5000]), BLOB), "characters")
    refused(raw_file(tmp_path, header(outputs=["z"] * ((1 << 20) + 1)), BLOB), "entries")


# ---- dtypes -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "", "FLOAT", "object", 5, None, ["float32"]])
def test_unknown_constant_dtype_is_refused(tmp_path: Path, dtype: Any) -> None:
    h = header(constants=[["w", dtype, [4, 4], 0, 64]])
    refused(raw_file(tmp_path, h, BLOB), "dtype")


@pytest.mark.parametrize("dtype", ["float16", "str", 1])
def test_unknown_input_dtype_is_refused(tmp_path: Path, dtype: Any) -> None:
    refused(raw_file(tmp_path, header(inputs=[["x", dtype, [1, 4]]]), BLOB), "dtype")


def test_bool_constant_with_bytes_other_than_0_and_1_is_refused(tmp_path: Path) -> None:
    h = header(constants=[["w", "float32", [4, 4], 0, 64], ["b", "bool", [4], 64, 4]])
    refused(raw_file(tmp_path, h, BLOB + b"\x00\x01\x02\x01"), "bool")


# ---- shapes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [[-1, 16], [2**62, 4], [2**31, 2**31, 2**31], [2**64], [1] * 9, [1.0, 16], [True, 16], [None]],
    ids=["negative", "2^62", "wraps", "2^64", "rank9", "float", "bool", "null"],
)
def test_bad_constant_shape_is_refused(tmp_path: Path, shape: list[Any]) -> None:
    h = header(constants=[["w", "float32", shape, 0, 64]])
    refused(raw_file(tmp_path, h, BLOB), memory=True)


@pytest.mark.parametrize(
    "shape", [[-4], [2**40, 2**40], [1] * 9, [2**63]], ids=["negative", "huge", "rank9", "2^63"]
)
def test_bad_input_shape_is_refused(tmp_path: Path, shape: list[int]) -> None:
    refused(raw_file(tmp_path, header(inputs=[["x", "float32", shape]]), BLOB), memory=True)


def test_constant_length_must_match_its_shape(tmp_path: Path) -> None:
    h = header(constants=[["w", "float32", [4, 4], 0, 60]])
    refused(raw_file(tmp_path, h, BLOB), "needs 64")
    h = header(constants=[["w", "float32", [4, 4], 0, 2**62]])
    refused(raw_file(tmp_path, h, BLOB), "needs 64")


# ---- data offsets -------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [1, 32, 63, 65])
def test_misaligned_constant_offset_is_refused(tmp_path: Path, offset: int) -> None:
    h = header(constants=[["w", "float32", [4, 4], offset, 64]])
    refused(raw_file(tmp_path, h, BLOB + bytes(128)), "aligned")


@pytest.mark.parametrize("offset", [64, 4096, 2**40, 2**63 - 64])
def test_constant_outside_the_file_is_refused(tmp_path: Path, offset: int) -> None:
    h = header(constants=[["w", "float32", [4, 4], offset, 64]])
    refused(raw_file(tmp_path, h, BLOB), "outside the file")


def test_negative_constant_offset_is_refused(tmp_path: Path) -> None:
    h = header(constants=[["w", "float32", [4, 4], -64, 64]])
    refused(raw_file(tmp_path, h, BLOB), "offset")


# ---- values defined once, before use -------------------------------------------------------


def test_duplicate_input_is_refused(tmp_path: Path) -> None:
    h = header(inputs=[["x", "float32", [1, 4]], ["x", "float32", [1, 4]]])
    refused(raw_file(tmp_path, h, BLOB), "twice")


def test_constant_named_like_an_input_is_refused(tmp_path: Path) -> None:
    h = header(constants=[["x", "float32", [4, 4], 0, 64], ["w", "float32", [4, 4], 0, 64]])
    refused(raw_file(tmp_path, h, BLOB), "twice")


def test_node_redefining_a_value_is_refused(tmp_path: Path) -> None:
    path = model(
        tmp_path,
        nodes=[("MatMul", "mm", ["x", "w"], ["y"], {}), ("Relu", "r", ["y"], ["x"], {})],
        outputs=["x"],
    )
    refused(path, "already defined")
    path = model(
        tmp_path,
        nodes=[
            ("MatMul", "mm", ["x", "w"], ["y"], {}),
            ("Relu", "r1", ["y"], ["z"], {}),
            ("Relu", "r2", ["y"], ["z"], {}),
        ],
    )
    refused(path, "already defined")


def test_undefined_input_is_refused(tmp_path: Path) -> None:
    refused(model(tmp_path, nodes=[("Relu", "r", ["nowhere"], ["z"], {})]), "nowhere")


def test_cycle_is_refused(tmp_path: Path) -> None:
    path = model(
        tmp_path,
        nodes=[
            ("Add", "a", ["x", "b_out"], ["a_out"], {}),
            ("Relu", "b", ["a_out"], ["b_out"], {}),
        ],
        outputs=["b_out"],
    )
    refused(path, "b_out", "not defined before")
    refused(model(tmp_path, nodes=[("Relu", "self", ["z"], ["z"], {})]), "not defined before")


def test_graph_output_never_produced_is_refused(tmp_path: Path) -> None:
    refused(model(tmp_path, outputs=["ghost"]), "ghost")


def test_unknown_operator_is_refused(tmp_path: Path) -> None:
    refused(model(tmp_path, nodes=[("EvilOp", "e", ["x"], ["z"], {})]), "EvilOp", "not supported")


# ---- arity --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "node, words",
    [
        (("Relu", "r", [], ["z"], {}), ["0 inputs"]),
        (("Relu", "r", ["x", "x"], ["z"], {}), ["2 inputs"]),
        (("Add", "a", ["x"], ["z"], {}), ["1 inputs"]),
        (("Where", "w", ["x", "x"], ["z"], {}), ["2 inputs"]),
        (("MatMul", "m", ["x"], ["z"], {}), ["1 inputs"]),
        (("Conv", "c", ["x"], ["z"], {}), ["1 inputs"]),
        (("Relu", "r", ["x"], [], {}), ["0 outputs"]),
        (("Relu", "r", ["x"], ["z", "z2"], {}), ["2 outputs"]),
        (("Add", "a", ["x", ""], ["z"], {}), ["required"]),
        (("Concat", "c", ["x", ""], ["z"], {"axis": 0}), ["required"]),
        (("Sum", "s", ["", "x"], ["z"], {}), ["required"]),
        (("Relu", "r", ["x"], [""], {}), ["first output"]),
        (("Slice", "s", ["x", "x"], ["z"], {}), ["starts"]),
        (("Constant", "k", ["x"], ["z"], {"value_float": 1.0}), ["1 inputs"]),
    ],
    ids=lambda v: v[1] if isinstance(v, tuple) else "",
)
def test_wrong_arity_is_refused(tmp_path: Path, node: Any, words: list[str]) -> None:
    refused(unary_model(tmp_path, [node]), *words)


# ---- attributes ---------------------------------------------------------------------------


CONV_W = {"w": ("float32", [2, 2, 3, 3], f32(*([0.1] * 36)))}


@pytest.mark.parametrize(
    "op, ins, attrs, word",
    [
        ("Transpose", ["x"], {"perm": [0, 0, 1, 2]}, "permutation"),
        ("Transpose", ["x"], {"perm": [0, 1, 2, 9]}, "perm"),
        ("Transpose", ["x"], {"perm": [0, 1, 3]}, "permutation"),
        ("Transpose", ["x"], {"perm": "0123"}, "list of integers"),
        ("Conv", ["x", "w"], {"strides": [0, 1]}, "strides"),
        ("Conv", ["x", "w"], {"dilations": [0, 0]}, "dilations"),
        ("Conv", ["x", "w"], {"pads": [-1, 0, 0, 0]}, "pads"),
        ("Conv", ["x", "w"], {"pads": [1, 1, 1]}, "pads"),
        ("Conv", ["x", "w"], {"strides": [1]}, "spatial"),
        ("Conv", ["x", "w"], {"group": 0}, "group"),
        ("Conv", ["x", "w"], {"auto_pad": "BOGUS"}, "auto_pad"),
        ("Conv", ["x", "w"], {"group": 1.5}, "integer"),
        ("MaxPool", ["x"], {"kernel_shape": [0, 0]}, "kernel_shape"),
        ("MaxPool", ["x"], {}, "kernel_shape"),
        ("MaxPool", ["x"], {"kernel_shape": [2, 2], "strides": [0, 1]}, "strides"),
        ("AveragePool", ["x"], {"kernel_shape": [2, 2], "ceil_mode": 7}, "ceil_mode"),
        ("LRN", ["x"], {"size": 0}, "size"),
        ("Gemm", ["x", "x"], {"transA": 2}, "transA"),
        ("Gelu", ["x"], {"approximate": "fast"}, "approximate"),
        ("Relu", ["x"], {"alpha": [[1]]}, "list of numbers"),
        ("Relu", ["x"], {"alpha": {"tensor": "missing"}}, "tensor"),
        ("Relu", ["x"], {"alpha": None}, "unsupported type"),
        ("Softmax", ["x"], {"axis": "1"}, "integer"),
        ("Split", ["x"], {"num_outputs": 0}, "num_outputs"),
        ("Split", ["x"], {"split": [1, 1, 1]}, "split"),
        ("Constant", [], {}, "exactly one"),
        ("Constant", [], {"value": 3}, "tensor"),
        ("Pad", ["x"], {"mode": "wrap", "pads": [0] * 8}, "mode"),
        ("Slice", ["x"], {"starts": [0, 0], "ends": [1]}, "equal lengths"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_attribute_is_refused(
    tmp_path: Path, op: str, ins: list[str], attrs: dict[str, Any], word: str
) -> None:
    path = unary_model(tmp_path, [(op, "n", ins, ["z"], attrs)], CONV_W if "w" in ins else None)
    refused(path, word)


def test_constant_of_shape_value_must_hold_one_element(tmp_path: Path) -> None:
    consts = {
        "shape": ("int64", [1], i64(4)),
        "v": ("float32", [2], f32(1, 2)),
    }
    nodes = [("ConstantOfShape", "c", ["shape"], ["z"], {"value": {"tensor": "v"}})]
    refused(unary_model(tmp_path, nodes, consts), "exactly one element")


# ---- sizes: declared and computed ------------------------------------------------------------


@pytest.mark.parametrize(
    "dims", [[2**40], [2**31, 2**31, 4], [2**62, 2**62], [-1]], ids=["2^40", "2^64", "wrap", "neg"]
)
def test_constant_of_shape_beyond_the_limits_is_refused(tmp_path: Path, dims: list[int]) -> None:
    consts = {"shape": ("int64", [len(dims)], i64(*dims))}
    path = unary_model(tmp_path, [("ConstantOfShape", "c", ["shape"], ["z"], {})], consts)
    refused(path, memory=True)


@pytest.mark.parametrize("dims", [[2**40, 1, 1, 1], [1, 2**32, 2**32, 4]], ids=["2^40", "wrap"])
def test_expand_and_tile_beyond_the_limits_are_refused(tmp_path: Path, dims: list[int]) -> None:
    consts = {"dims": ("int64", [4], i64(*dims))}
    for op in ("Expand", "Tile"):
        path = unary_model(tmp_path, [(op, "e", ["x", "dims"], ["z"], {})], consts)
        refused(path, memory=True)


def test_range_with_zero_or_tiny_delta_is_refused(tmp_path: Path) -> None:
    for delta in (0.0, 1e-30):
        consts = {
            "a": ("float32", [], f32(0)),
            "b": ("float32", [], f32(1e30)),
            "d": ("float32", [], f32(delta)),
        }
        path = unary_model(tmp_path, [("Range", "r", ["a", "b", "d"], ["z"], {})], consts)
        refused(path, memory=True)


def test_model_limits_are_configurable(tmp_path: Path) -> None:
    path = model(tmp_path)
    assert outcome(path)["type"] == "ok"
    refused(path, "limit", memory=True, limits={"value_bytes": 32})
    refused(path, "limit", memory=True, limits={"total_bytes": 96})


def test_set_model_limits_checks_its_arguments() -> None:
    import walle_engine as we

    before = we.model_limits()
    assert before == {"total_bytes": 4 << 30, "value_bytes": 2 << 30}
    with pytest.raises(ValueError):
        we.set_model_limits(total_bytes=0)
    with pytest.raises(ValueError):
        we.set_model_limits(value_bytes=-5)
    assert we.model_limits() == before


# ---- crashes found by these tests and the fuzzers -------------------------------------------


def test_zero_size_conv_and_pool_do_not_crash(tmp_path: Path) -> None:
    consts = {"w": ("float32", [2, 2, 3, 3], f32(*([0.1] * 36)))}
    for shape in ([1, 2, 0, 0], [0, 2, 4, 4], [1, 2, 2, 2]):
        path = unary_model(
            tmp_path,
            [("Conv", "c", ["x", "w"], ["z"], {})],
            consts,
            inputs=[("x", "float32", shape)],
        )
        not_crashing(path)
        path = unary_model(
            tmp_path,
            [("MaxPool", "p", ["x"], ["z"], {"kernel_shape": [3, 3]})],
            inputs=[("x", "float32", shape)],
        )
        not_crashing(path)
    zero_w = {"w": ("float32", [2, 2, 0, 0], b"")}
    not_crashing(unary_model(tmp_path, [("Conv", "c", ["x", "w"], ["z"], {})], zero_w))
    grouped = {"w": ("float32", [0, 2, 3, 3], b"")}
    not_crashing(unary_model(tmp_path, [("Conv", "c", ["x", "w"], ["z"], {"group": 2})], grouped))


@pytest.mark.parametrize("op", ["Gemm", "MatMul"])
def test_mismatched_matmul_dims_are_refused(tmp_path: Path, op: str) -> None:
    consts = {"w": ("float32", [3, 5], f32(*range(15)))}
    path = unary_model(
        tmp_path, [(op, "g", ["x", "w"], ["z"], {})], consts, inputs=[("x", "float32", [2, 4])]
    )
    refused(path)


def test_conv_weight_of_the_wrong_rank_is_refused(tmp_path: Path) -> None:
    for shape, raw in (([2, 2], f32(1, 2, 3, 4)), ([2], f32(1, 2)), ([], f32(1))):
        consts = {"w": ("float32", shape, raw)}
        refused(unary_model(tmp_path, [("Conv", "c", ["x", "w"], ["z"], {})], consts))


def test_transpose_perm_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    path = unary_model(tmp_path, [("Transpose", "t", ["x"], ["z"], {"perm": [1, 0]})])
    refused(path, "perm")


def test_slice_inputs_of_different_lengths_are_refused(tmp_path: Path) -> None:
    consts = {"s": ("int64", [2], i64(0, 0)), "e": ("int64", [1], i64(1))}
    path = unary_model(tmp_path, [("Slice", "s", ["x", "s", "e"], ["z"], {})], consts)
    refused(path)


def test_fuzz_regressions_replay(tmp_path: Path) -> None:
    """Every crash the model-file fuzzer found, kept as regress-*: refused cleanly now."""
    cases = sorted(FUZZ_REGRESS.glob("*/regress-*"))
    for case in cases:
        if case.parent.name != "model_file":
            continue
        path = tmp_path / case.name
        path.write_bytes(case.read_bytes())
        not_crashing(path)


# ---- ONNX through the converter ---------------------------------------------------------------


def _onnx_model(tmp_path: Path, init: Any) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [init],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.mark.parametrize("location", ["../../../../etc/passwd", "/etc/passwd", "weights.bin"])
def test_onnx_with_external_data_is_refused(tmp_path: Path, location: str) -> None:
    from onnx import TensorProto

    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    t.data_location = TensorProto.EXTERNAL
    e = t.external_data.add()
    e.key, e.value = "location", location
    (tmp_path / "weights.bin").write_bytes(bytes(16))
    refused(_onnx_model(tmp_path, t), "external", onnx=True)


def test_onnx_with_huge_declared_initializer_is_refused(tmp_path: Path) -> None:
    from onnx import TensorProto

    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[2**40, 2**20])
    refused(_onnx_model(tmp_path, t), memory=True, onnx=True)
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], raw_data=bytes(12))
    refused(_onnx_model(tmp_path, t), "needs 16", onnx=True)
    t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[-4])
    refused(_onnx_model(tmp_path, t), "dims", onnx=True)


def test_onnx_file_that_is_not_protobuf_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\xff" * 64)
    refused(path, "ONNX", onnx=True)


def test_integer_arithmetic_wraps_like_numpy(tmp_path: Path) -> None:
    """int32/int64 add, sub, mul, neg and abs at the extremes wrap (two's complement) as
    numpy does, in a model and in walle_engine.np; signed overflow was undefined
    behaviour (UBSan fails it in make sanitize)."""
    np = pytest.importorskip("numpy")
    import walle_engine as we

    for dtype, lo, hi in (("int32", -(2**31), 2**31 - 1), ("int64", -(2**63), 2**63 - 1)):
        x = np.array([hi, lo, -1, 7], dtype=dtype)
        w = we.np.asarray(x.tolist(), dtype=dtype)
        with np.errstate(over="ignore"):
            for got, want in (
                (w + w, x + x),
                (w - (-w), x - (-x)),
                (w * w, x * x),
                (-w, -x),
                (we.np.abs(w), np.abs(x)),
            ):
                assert got.tolist() == want.tolist(), (dtype, got, want)
    fmt = "<4i"
    consts = {"k": ("int32", [4], struct.pack(fmt, 2**31 - 1, -(2**31), 7, -1))}
    nodes = [("Add", "a", ["x", "k"], ["y"], {}), ("Neg", "n", ["y"], ["z"], {})]
    path = unary_model(tmp_path, nodes, consts, inputs=[("x", "int32", [4])])
    m = we.load(path, tune=False, cache=False)
    x = np.array([1, -1, 2**31 - 1, -(2**31)], dtype=np.int32)
    k = np.array([2**31 - 1, -(2**31), 7, -1], dtype=np.int32)
    with np.errstate(over="ignore"):
        want = -(x + k)
    assert m.run({"x": x})["z"].tolist() == want.tolist()
    assert want.tolist() == [-(2**31), 1 - 2**31, 2**31 - 6, 1 - 2**31]  # wrapped twice
