"""ONNX -> walle_engine model conversion (cloud side; needs the ``onnx`` package).

What happens here, in order:

1. Inputs get static shapes (symbolic dims from ``input_shapes`` or 1): the engine plans
   memory and picks kernels for fixed shapes.
2. Constant folding: ``Constant`` nodes become initializers; nodes the engine does not
   implement but whose inputs are all constant are evaluated with onnx's reference
   evaluator. (Supported nodes with constant inputs — shape arithmetic — are folded by
   the engine itself at load, where shapes are known.)
3. Any op still unsupported fails the conversion with the full list.
4. Rewrites into GEMM epilogues: BatchNormalization after a Conv is folded into its
   weights; a Relu/Clip after Conv/Gemm becomes a fused clamp; a residual Add after a
   Conv and a bias Add after a MatMul ride along in the epilogue; Softmax from opsets
   < 13 is marked with its old "flatten from axis" semantics.
5. The graph is written in the compact format of ``_format.py``. Shapes of every value
   are inferred again by the engine at load.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from walle_engine import _core
from walle_engine._errors import ModelError
from walle_engine._format import MAX_RANK, write_model

__all__ = ["ConversionReport", "ModelError", "UnsupportedModelError", "convert_model"]

_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.BOOL: "bool",
    # Images: a uint8 input is cast to float inside the graph (the engine stores uint8 but
    # computes nothing on it; ONNX needs the Cast anyway, its ops take one type).
    onnx.TensorProto.UINT8: "uint8",
}
_NP_TO_NAME = {
    np.dtype(np.float32): "float32",
    np.dtype(np.int32): "int32",
    np.dtype(np.int64): "int64",
    np.dtype(np.bool_): "bool",
}
# Inputs that must be known at load (the engine's shapes are static): a graph input
# feeding one of these makes the model dynamic-shaped, which the engine does not run.
_SHAPE_ARGS = {
    "Reshape": (1,),
    "Expand": (1,),
    "Tile": (1,),
    "ConstantOfShape": (0,),
    "Slice": (1, 2, 3, 4),
    "Pad": (1, 3),
    "Range": (0, 1, 2),
    "Squeeze": (1,),
    "Unsqueeze": (1,),
    "Split": (1,),
    "ReduceSum": (1,),
    "ReduceMean": (1,),
    "ReduceMax": (1,),
    "ReduceMin": (1,),
    "ReduceProd": (1,),
}
_SPATIAL_OPS = {"Conv", "MaxPool", "AveragePool"}
# Ops whose value must not be computed at conversion even with constant inputs.
_NONDETERMINISTIC = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
}


class UnsupportedModelError(ValueError):
    """The model uses operators or types the engine does not implement."""

    def __init__(self, unsupported: Sequence[str], detail: str = "") -> None:
        self.unsupported = sorted(set(unsupported))
        msg = "unsupported operators: " + ", ".join(self.unsupported)
        super().__init__(msg + (f" ({detail})" if detail else ""))


@dataclass
class ConversionReport:
    """What the converter did; returned by ``convert``."""

    ops: Counter[str] = field(default_factory=Counter)
    folded_nodes: int = 0
    fused_batchnorms: int = 0
    fused_activations: int = 0
    fused_residuals: int = 0
    fused_biases: int = 0
    fused_gelus: int = 0
    folded_softmax_scales: int = 0
    merged_matmuls: int = 0
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def _const_array(value: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)  # e.g. Range/ConstantOfShape folded in double
    if arr.dtype in (np.int8, np.int16, np.uint8, np.uint16, np.uint32):
        arr = arr.astype(np.int32)
    if arr.dtype == np.uint64:
        arr = arr.astype(np.int64)
    if arr.dtype not in _NP_TO_NAME:
        raise UnsupportedModelError([], f"constant {name!r} has dtype {arr.dtype}")
    # np.ascontiguousarray would turn 0-d scalars into 1-d arrays.
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def _evaluate(
    node: onnx.NodeProto, consts: Mapping[str, np.ndarray], opsets: Sequence[Any]
) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    inputs = [
        helper.make_tensor_value_info(
            f"i{k}", helper.np_dtype_to_tensor_dtype(consts[n].dtype), consts[n].shape
        )
        for k, n in enumerate(node.input)
        if n
    ]
    renamed = helper.make_node(
        node.op_type,
        [f"i{k}" if n else "" for k, n in enumerate(node.input)],
        [f"o{k}" for k in range(len(node.output))],
        domain=node.domain,
    )
    renamed.attribute.extend(node.attribute)
    outputs = [
        helper.make_tensor_value_info(f"o{k}", onnx.TensorProto.UNDEFINED, None)
        for k in range(len(node.output))
    ]
    g = helper.make_graph([renamed], "fold", inputs, outputs)
    m = helper.make_model(g, opset_imports=list(opsets))
    feeds = {f"i{k}": consts[n] for k, n in enumerate(node.input) if n}
    return ReferenceEvaluator(m).run(None, feeds)


def _attr_value(a: onnx.AttributeProto, tensors: dict[str, np.ndarray], prefix: str) -> Any:
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, onnx.TensorProto):
        name = f"{prefix}/{a.name}"
        tensors[name] = _const_array(numpy_helper.to_array(v), name)
        return {"tensor": name}
    if isinstance(v, list):
        if v and isinstance(v[0], bytes):
            return [x.decode() for x in v]
        if v and not isinstance(v[0], (int, float)):
            raise UnsupportedModelError([], f"attribute {a.name!r} of type {type(v[0]).__name__}")
        return list(v)
    if isinstance(v, (int, float)):
        return v
    raise UnsupportedModelError(
        [], f"attribute {a.name!r} of type {type(v).__name__} (subgraphs are not supported)"
    )


def convert_model(
    model: str | Path | onnx.ModelProto,
    out_path: str | Path,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> ConversionReport:
    """Convert an ONNX model to the engine's format; raises UnsupportedModelError listing
    every operator the engine cannot run."""
    proto = model if isinstance(model, onnx.ModelProto) else _load_onnx(model)
    _check_tensors(proto)
    graph = proto.graph
    opsets = list(proto.opset_import)
    opset = next((o.version for o in opsets if o.domain in ("", "ai.onnx")), 13)
    report = ConversionReport()
    consts: dict[str, np.ndarray] = {
        i.name: _const_array(numpy_helper.to_array(i), i.name) for i in graph.initializer
    }

    inputs = []
    for vi in graph.input:
        if vi.name in consts:
            continue
        tt = vi.type.tensor_type
        if tt.elem_type not in _DTYPES:
            raise UnsupportedModelError(
                [],
                f"input {vi.name!r} has type {onnx.TensorProto.DataType.Name(tt.elem_type)}; "
                "float32, int32, int64, bool and uint8 are supported",
            )
        override = (input_shapes or {}).get(vi.name)
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tt.shape.dim]
        if override is not None:
            dims = list(override)
        dims = [d if d > 0 else 1 for d in dims]
        report.input_shapes[vi.name] = tuple(dims)
        inputs.append((vi.name, _DTYPES[tt.elem_type], dims))
        if tt.elem_type == onnx.TensorProto.UINT8:
            # The kernels compute nothing on uint8: accept it only straight into a Cast.
            uses = sorted({n.op_type for n in graph.node if vi.name in n.input} - {"Cast"})
            if uses:
                raise UnsupportedModelError(
                    [f"{op}(uint8)" for op in uses],
                    f"uint8 input {vi.name!r} must go through Cast before other operators",
                )

    supported = set(_core.supported_ops())
    input_names = {name for name, _, _ in inputs}
    nodes: list[onnx.NodeProto] = []
    unsupported: list[str] = []
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            unsupported.append(f"{node.domain}.{node.op_type}")
            continue
        if node.op_type == "Constant":
            (out,) = _evaluate(node, consts, opsets)
            consts[node.output[0]] = _const_array(out, node.output[0])
            report.folded_nodes += 1
            continue
        all_const = all((not n) or n in consts for n in node.input)
        dynamic = [
            node.input[i]
            for i in _SHAPE_ARGS.get(node.op_type, ())
            if i < len(node.input) and node.input[i] in input_names
        ]
        if dynamic:
            unsupported.append(f"{node.op_type} (shape from input {dynamic[0]!r})")
            continue
        kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), [])
        if node.op_type in _SPATIAL_OPS and len(kernel) > 2:
            unsupported.append(f"{node.op_type} ({len(kernel)}-D)")
            continue
        if node.op_type not in supported:
            if all_const and node.op_type not in _NONDETERMINISTIC:
                try:
                    outs = _evaluate(node, consts, opsets)
                except Exception as e:  # the reference evaluator lacks this op too
                    unsupported.append(node.op_type)
                    del e
                    continue
                for name, value in zip(node.output, outs, strict=False):
                    if name:
                        consts[name] = _const_array(value, name)
                report.folded_nodes += 1
                continue
            unsupported.append(node.op_type)
            continue
        nodes.append(node)
    if unsupported:
        raise UnsupportedModelError(unsupported)

    graph_outputs = [o.name for o in graph.output]
    nodes = _fold_batchnorm(nodes, consts, graph_outputs, report)
    specs = _node_specs(nodes, consts, graph_outputs, opset, report)

    _check_loadable(inputs, graph_outputs, specs, consts)

    used = {n for _, _, ins, _, _ in specs for n in ins} | set(graph_outputs)
    tensors: dict[str, np.ndarray] = {}
    final_nodes = []
    for op, name, ins, outs, attrs in specs:
        enc = {
            k: _attr_value(a, tensors, name) if isinstance(a, onnx.AttributeProto) else a
            for k, a in attrs.items()
        }
        final_nodes.append((op, name, ins, outs, enc))
        report.ops[op] += 1
    for n, v in consts.items():
        if n in used:
            tensors[n] = v
    write_model(
        out_path,
        inputs=inputs,
        outputs=graph_outputs,
        nodes=final_nodes,
        constants={n: (_NP_TO_NAME[v.dtype], v.shape, v.tobytes()) for n, v in tensors.items()},
        metadata={"producer": "walle_engine.convert", "onnx_opset": opset},
    )
    return report


def _load_onnx(path: str | Path) -> onnx.ModelProto:
    """Parse an ONNX file without following its external-data references (a file naming
    ``../../etc/passwd`` as a tensor's data must not make the converter read it)."""
    try:
        return onnx.load(str(path), load_external_data=False)
    except OSError:
        raise
    except Exception as e:  # protobuf's DecodeError and friends
        raise ModelError(f"{path}: not a readable ONNX model ({str(e)[:200]})") from None


def _tensor_protos(graph: onnx.GraphProto, where: str) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every tensor a graph holds: initializers and tensor attributes, subgraphs too."""
    for t in graph.initializer:
        yield f"{where}initializer {t.name!r}", t
    for node in graph.node:
        for a in node.attribute:
            at = f"{where}node {node.name or node.op_type!r} attribute {a.name!r}"
            if a.HasField("t"):
                yield at, a.t
            for t in a.tensors:
                yield at, t
            subgraphs = ([a.g] if a.HasField("g") else []) + list(a.graphs)
            for g in subgraphs:
                yield from _tensor_protos(g, f"{at} > ")


def _check_tensors(proto: onnx.ModelProto) -> None:
    """Refuse tensors stored outside the model file and tensors whose declared size is
    out of bounds, before anything decodes them."""
    value_limit = _core.model_limits()[1]
    for what, t in _tensor_protos(proto.graph, ""):
        if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data):
            location = next((e.value for e in t.external_data if e.key == "location"), "?")
            raise ModelError(
                f"{what} keeps its data in an external file ({location[:200]!r}); "
                "external data is not supported: save the model as one file"
            )
        dims = list(t.dims)
        if len(dims) > MAX_RANK or any(d < 0 for d in dims):
            raise ModelError(f"{what} has shape {dims[:16]}: rank <= {MAX_RANK}, dims >= 0")
        count = 1
        for d in dims:
            count *= d
        try:
            dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
        except (KeyError, ValueError):
            raise ModelError(f"{what} has unknown data type {t.data_type}") from None
        itemsize = max(1, dtype.itemsize)
        if count * itemsize > value_limit:
            raise MemoryError(
                f"{what} of shape {dims} takes {count * itemsize} bytes; the limit per "
                f"value is {value_limit} (walle_engine.set_model_limits)"
            )
        if t.HasField("raw_data") and dtype.kind in "fiub":
            if len(t.raw_data) != count * itemsize:
                raise ModelError(
                    f"{what} holds {len(t.raw_data)} bytes; shape {dims} of {dtype} needs "
                    f"{count * itemsize}"
                )


def _check_loadable(
    inputs: list[tuple[str, str, list[int]]],
    outputs: list[str],
    specs: list[tuple[str, str, list[str], list[str], dict[str, Any]]],
    consts: Mapping[str, np.ndarray],
) -> None:
    """Build the engine model once (no tuning) so that what the engine cannot run —
    shapes computed from inputs, unsupported attribute values — fails here, in the cloud,
    with the operator named, instead of on a device."""
    tensors: dict[str, np.ndarray] = {}
    nodes = []
    for op, name, ins, outs, attrs in specs:
        enc = {
            k: _attr_value(a, tensors, name) if isinstance(a, onnx.AttributeProto) else a
            for k, a in attrs.items()
        }
        nodes.append(
            (
                op,
                name,
                ins,
                outs,
                {
                    k: _core.Tensor(tensors[v["tensor"]]) if isinstance(v, dict) else v
                    for k, v in enc.items()
                },
            )
        )
    graph = {
        "inputs": inputs,
        "outputs": outputs,
        "constants": {n: _core.Tensor(v) for n, v in consts.items()},
        "nodes": nodes,
    }
    try:
        _core.Model(graph, tune=False)
    except ValueError as e:
        msg = str(e)
        if "not supported" in msg or "must be a constant" in msg:
            op = msg.split(" node ")[0] if " node " in msg else "model"
            reason = (
                "shape computed at run time"
                if "must be a constant" in msg
                else msg.split(": ", 1)[-1]
            )
            raise UnsupportedModelError([f"{op} ({reason})"]) from e
        raise


def _consumers(nodes: Sequence[onnx.NodeProto]) -> Counter[str]:
    c: Counter[str] = Counter()
    for n in nodes:
        for i in n.input:
            c[i] += 1
    return c


def _fold_batchnorm(
    nodes: list[onnx.NodeProto],
    consts: dict[str, np.ndarray],
    outputs: Sequence[str],
    report: ConversionReport,
) -> list[onnx.NodeProto]:
    """Conv -> BatchNormalization becomes one Conv: W' = W * s, b' = (b - mean) * s + beta,
    s = gamma / sqrt(var + eps), per output channel."""
    uses = _consumers(nodes)
    producer = {o: n for n in nodes for o in n.output}
    drop: set[int] = set()
    out: list[onnx.NodeProto] = []
    for node in nodes:
        if node.op_type == "BatchNormalization" and len([o for o in node.output if o]) == 1:
            conv = producer.get(node.input[0])
            params = node.input[1:5]
            if (
                conv is not None
                and conv.op_type == "Conv"
                and uses[node.input[0]] == 1
                and node.input[0] not in outputs
                and conv.input[1] in consts
                and all(p in consts for p in params)
                and (len(conv.input) < 3 or not conv.input[2] or conv.input[2] in consts)
            ):
                eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
                gamma, beta, mean, var = (consts[p].astype(np.float64) for p in params)
                s = gamma / np.sqrt(var + eps)
                w = consts[conv.input[1]].astype(np.float64)
                b = (
                    consts[conv.input[2]].astype(np.float64)
                    if len(conv.input) > 2 and conv.input[2]
                    else np.zeros(w.shape[0])
                )
                wname, bname = conv.name + "/bn_weight", conv.name + "/bn_bias"
                consts[wname] = (w * s.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32)
                consts[bname] = ((b - mean) * s + beta).astype(np.float32)
                fused = helper.make_node(
                    "Conv",
                    [conv.input[0], wname, bname],
                    [node.output[0]],
                    name=conv.name or node.name,
                )
                fused.attribute.extend(conv.attribute)
                idx = next(i for i, n in enumerate(out) if n is conv)
                out[idx] = fused
                drop.add(id(node))
                report.fused_batchnorms += 1
                continue
        out.append(node)
    return [n for n in out if id(n) not in drop]


Spec = tuple[str, str, list[str], list[str], dict[str, Any]]


def _node_specs(
    nodes: list[onnx.NodeProto],
    consts: Mapping[str, np.ndarray],
    outputs: Sequence[str],
    opset: int,
    report: ConversionReport,
) -> list[Spec]:
    """Node tuples for the file, after the epilogue fusions below."""
    specs: list[Spec] = []
    for i, node in enumerate(nodes):
        name = node.name or f"{node.op_type}_{i}"
        attrs: dict[str, Any] = {a.name: a for a in node.attribute}
        if node.op_type in ("Softmax", "LogSoftmax") and opset < 13:
            attrs = {
                "axis": next((a.i for a in node.attribute if a.name == "axis"), 1),
                "legacy_axes": 1,
            }
        specs.append((node.op_type, name, list(node.input), list(node.output), attrs))
    specs = _fuse_gelu(specs, consts, outputs, report)
    specs = _fold_softmax_scale(specs, consts, outputs, report)
    specs = _fuse_activations(specs, consts, outputs, report)
    specs = _fuse_residuals(specs, consts, outputs, report)
    specs = _fuse_activations(specs, consts, outputs, report)
    specs = _fuse_matmul_bias(specs, consts, outputs, report)
    # Linear layers now carry their bias: a residual Add and an activation after them ride
    # in the GEMM epilogue too (transformer blocks: x + W h + b).
    specs = _fuse_residuals(specs, consts, outputs, report)
    specs = _fuse_activations(specs, consts, outputs, report)
    return _merge_parallel_matmuls(specs, consts, report)


def _merge_parallel_matmuls(
    specs: list[Spec], consts: dict[str, np.ndarray], report: ConversionReport
) -> list[Spec]:
    """MatMuls that read the same input with constant 2-D weights (attention's Q, K and
    V projections) become one MatMul over the concatenated weights (and biases) and a
    Split of its output along the last axis: one wider GEMM packs the input once and
    fills the register tiles better than three narrow ones. The Split's copies compose
    with the head transposes that follow, so no copy is added."""
    groups: dict[tuple[str, int, bool], list[int]] = {}
    for i, (op, _, ins, _, attrs) in enumerate(specs):
        w = consts.get(ins[1]) if op == "MatMul" and len(ins) in (2, 3) else None
        if w is None or w.ndim != 2 or w.dtype != np.float32 or attrs:
            continue
        has_bias = len(ins) == 3 and bool(ins[2])
        if has_bias and (ins[2] not in consts or consts[ins[2]].shape != (w.shape[1],)):
            continue
        groups.setdefault((ins[0], w.shape[0], has_bias), []).append(i)
    merged_at: dict[int, list[Spec]] = {}
    dead: set[int] = set()
    for (a, _, has_bias), idx in groups.items():
        if len(idx) < 2:
            continue
        first = specs[idx[0]]
        weights = [consts[specs[i][2][1]] for i in idx]
        wname = f"{first[1]}/merged_weight"
        consts[wname] = np.ascontiguousarray(np.concatenate(weights, axis=1))
        ins = [a, wname]
        if has_bias:
            bname = f"{first[1]}/merged_bias"
            consts[bname] = np.concatenate([consts[specs[i][2][2]] for i in idx])
            ins.append(bname)
        out = f"{first[1]}/merged"
        outs = [specs[i][3][0] for i in idx]
        split = {"axis": -1, "split": [int(w.shape[1]) for w in weights]}
        merged_at[idx[0]] = [
            ("MatMul", f"{first[1]}/merged", ins, [out], {}),
            ("Split", f"{first[1]}/split", [out], outs, split),
        ]
        dead.update(idx)
        report.merged_matmuls += len(idx)
    result: list[Spec] = []
    for i, spec in enumerate(specs):
        if i in merged_at:
            result.extend(merged_at[i])
        elif i not in dead:
            result.append(spec)
    return result


def _uses(specs: Sequence[Spec]) -> Counter[str]:
    return Counter(i for _, _, ins, _, _ in specs for i in ins if i)


def _fuse_activations(
    specs: list[Spec],
    consts: Mapping[str, np.ndarray],
    outputs: Sequence[str],
    report: ConversionReport,
) -> list[Spec]:
    """Relu/Clip after a Conv, Gemm or MatMul becomes that op's epilogue clamp
    (activation_min/max)."""
    uses = _uses(specs)
    producer = {o: i for i, (_, _, _, outs, _) in enumerate(specs) for o in outs}
    out = list(specs)
    dead: set[int] = set()
    for i, (op, _, ins, outs, attrs) in enumerate(specs):
        act = _activation_range(op, ins, attrs, consts)
        p = producer.get(ins[0]) if ins else None
        if act is None or p is None:
            continue
        pop, pname, pins, _, pattrs = out[p]
        if (
            pop in ("Conv", "Gemm", "MatMul")
            and uses[ins[0]] == 1
            and ins[0] not in outputs
            and "activation_min" not in pattrs
        ):
            pattrs = dict(pattrs)
            pattrs["activation_min"], pattrs["activation_max"] = act
            out[p] = (pop, pname, pins, [outs[0]], pattrs)
            dead.add(i)
            report.fused_activations += 1
    return [s for i, s in enumerate(out) if i not in dead]


def _fuse_residuals(
    specs: list[Spec],
    consts: Mapping[str, np.ndarray],
    outputs: Sequence[str],
    report: ConversionReport,
) -> list[Spec]:
    """Conv -> Add(conv, r) becomes Conv(x, w, b, r), and MatMul(a, w[, bias]) -> Add(mm, r)
    becomes MatMul(a, w, bias, r): the residual is added in the GEMM epilogue (the engine
    adds it explicitly if r broadcasts). The fused node moves to the Add's position, where
    r is known to exist."""
    uses = _uses(specs)
    producer = {o: i for i, (_, _, _, outs, _) in enumerate(specs) for o in outs}
    out: list[Spec | None] = list(specs)
    for i, (op, _, ins, outs, _) in enumerate(specs):
        if op != "Add" or len(ins) != 2:
            continue
        for k in (0, 1):
            p = producer.get(ins[k])
            other = ins[1 - k]
            prev = out[p] if p is not None else None
            if prev is None or other in consts:
                continue
            pop, pname, pins, _, pattrs = prev
            if (
                pop in ("Conv", "MatMul")
                and uses[ins[k]] == 1
                and ins[k] not in outputs
                and "activation_min" not in pattrs
                and len(pins) <= 3
            ):
                fused_ins = [*pins, *[""] * (3 - len(pins)), other]
                out[i] = (pop, pname, fused_ins, [outs[0]], pattrs)
                out[p] = None
                report.fused_residuals += 1
                break
    return [s for s in out if s is not None]


def _fuse_matmul_bias(
    specs: list[Spec],
    consts: Mapping[str, np.ndarray],
    outputs: Sequence[str],
    report: ConversionReport,
) -> list[Spec]:
    """MatMul -> Add(constant row vector [N]) becomes MatMul(a, w, bias) with the bias in
    the GEMM epilogue (the pattern exporters emit for every Linear layer)."""
    uses = _uses(specs)
    producer = {o: i for i, (_, _, _, outs, _) in enumerate(specs) for o in outs}
    out: list[Spec | None] = list(specs)
    for i, (op, _, ins, outs, _) in enumerate(specs):
        if op != "Add" or len(ins) != 2:
            continue
        for k in (0, 1):
            p = producer.get(ins[k])
            bias = ins[1 - k]
            prev = out[p] if p is not None else None
            if prev is None or bias not in consts:
                continue
            pop, pname, pins, _, pattrs = prev
            w = consts.get(pins[1]) if pop == "MatMul" and len(pins) == 2 else None
            b = consts[bias]
            if (
                w is not None
                and w.ndim == 2
                and b.ndim == 1
                and b.shape[0] == w.shape[1]
                and b.dtype == np.float32
                and uses[ins[k]] == 1
                and ins[k] not in outputs
            ):
                out[p] = None
                out[i] = ("MatMul", pname, [*pins, bias], [outs[0]], pattrs)
                report.fused_biases += 1
                break
    return [s for s in out if s is not None]


def _scalar(consts: Mapping[str, np.ndarray], name: str) -> float | None:
    """The value of a float32 constant with one element, else None."""
    v = consts.get(name)
    if v is None or v.dtype != np.float32 or v.size != 1:
        return None
    return float(v.reshape(-1)[0])


def _fuse_gelu(
    specs: list[Spec],
    consts: Mapping[str, np.ndarray],
    outputs: Sequence[str],
    report: ConversionReport,
) -> list[Spec]:
    """The erf-GELU exporters emit, x * 0.5 * (1 + erf(x / sqrt 2)) in any order of the
    products (x / sqrt 2 also as x * (1 / sqrt 2)), becomes one Gelu node, which the
    engine runs as a single kernel instead of five passes."""
    uses = _uses(specs)
    producer = {o: i for i, (_, _, _, outs, _) in enumerate(specs) for o in outs}
    consumers: dict[str, list[int]] = {}
    for i, (_, _, ins, _, _) in enumerate(specs):
        for n in ins:
            consumers.setdefault(n, []).append(i)

    def private(value: str) -> bool:  # read by one node and not a graph output
        return uses[value] == 1 and value not in outputs

    def only_reader(value: str) -> int | None:
        readers = consumers.get(value, [])
        return readers[0] if len(readers) == 1 and private(value) else None

    def other(ins: list[str], value: str) -> str | None:
        if len(ins) != 2 or value not in ins:
            return None
        return ins[1] if ins[0] == value else ins[0]

    def near(v: float | None, want: float) -> bool:
        return v is not None and abs(v - want) <= 1e-6 * abs(want)

    dead: set[int] = set()
    replace: dict[int, Spec] = {}
    for i, (op, name, ins, outs, _) in enumerate(specs):
        if op != "Erf" or i in dead:
            continue
        p = producer.get(ins[0])
        if p is None or not private(ins[0]):
            continue
        pop, _, pins, _, _ = specs[p]
        if len(pins) != 2:
            continue
        x = pins[0]
        if not (
            (pop == "Div" and near(_scalar(consts, pins[1]), 2**0.5))
            or (pop == "Mul" and near(_scalar(consts, pins[1]), 0.5**0.5))
        ):
            continue
        a = only_reader(outs[0])  # 1 + erf
        if a is None or specs[a][0] != "Add":
            continue
        if not near(_scalar(consts, other(specs[a][2], outs[0]) or ""), 1.0):
            continue
        m1 = only_reader(specs[a][3][0])
        if m1 is None or specs[m1][0] != "Mul":
            continue
        f = other(specs[m1][2], specs[a][3][0])
        chain: list[int] = [p, i, a, m1]
        if f == x:  # (x * (1 + erf)) * 0.5
            m2 = only_reader(specs[m1][3][0])
            if m2 is None or specs[m2][0] != "Mul":
                continue
            if not near(_scalar(consts, other(specs[m2][2], specs[m1][3][0]) or ""), 0.5):
                continue
            chain.append(m2)
            last = m2
        else:  # (x * 0.5) * (1 + erf)
            h = producer.get(f or "")
            if h is None or specs[h][0] != "Mul" or not private(f or ""):
                continue
            if other(specs[h][2], x) is None or not near(
                _scalar(consts, other(specs[h][2], x) or ""), 0.5
            ):
                continue
            chain.append(h)
            last = m1
        # x itself must be read by the chain's two entry points only through x.
        if any(k in dead for k in chain):
            continue
        dead.update(chain)
        replace[last] = ("Gelu", name + "/gelu", [x], [specs[last][3][0]], {})
        report.fused_gelus += 1
    return [replace.get(i, s) for i, s in enumerate(specs) if i not in dead or i in replace]


def _fold_softmax_scale(
    specs: list[Spec],
    consts: Mapping[str, np.ndarray],
    outputs: Sequence[str],
    report: ConversionReport,
) -> list[Spec]:
    """Softmax(x / c) or Softmax(x * c) with a positive scalar constant c (attention
    scores) becomes Softmax(x) with a scale attribute: the fused kernel applies it while
    it computes the exponentials, which saves a pass over the scores."""
    uses = _uses(specs)
    producer = {o: i for i, (_, _, _, outs, _) in enumerate(specs) for o in outs}
    out: list[Spec | None] = list(specs)
    for i, (op, name, ins, outs, attrs) in enumerate(specs):
        if op not in ("Softmax", "LogSoftmax") or not ins or "scale" in attrs:
            continue
        p = producer.get(ins[0])
        if p is None or out[p] is None or uses[ins[0]] != 1 or ins[0] in outputs:
            continue
        pop, _, pins, _, _ = specs[p]
        c = _scalar(consts, pins[1]) if len(pins) == 2 else None
        if pop not in ("Div", "Mul") or c is None or not (c > 0 and np.isfinite(c)):
            continue
        scale = 1.0 / c if pop == "Div" else c
        out[p] = None
        out[i] = (op, name, [pins[0]], outs, {**attrs, "scale": scale})
        report.folded_softmax_scales += 1
    return [s for s in out if s is not None]


def _activation_range(
    op: str, ins: Sequence[str], attrs: Mapping[str, Any], consts: Mapping[str, np.ndarray]
) -> tuple[float, float] | None:
    if op == "Relu":
        return (0.0, float("inf"))
    if op == "Clip":
        lo, hi = float("-inf"), float("inf")
        if isinstance(attrs.get("min"), onnx.AttributeProto):
            lo = attrs["min"].f
        if isinstance(attrs.get("max"), onnx.AttributeProto):
            hi = attrs["max"].f
        if len(ins) > 1 and ins[1]:
            if ins[1] not in consts:
                return None
            lo = float(consts[ins[1]].reshape(-1)[0])
        if len(ins) > 2 and ins[2]:
            if ins[2] not in consts:
                return None
            hi = float(consts[ins[2]].reshape(-1)[0])
        return (lo, hi)
    return None
