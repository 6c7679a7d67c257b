"""Small real-architecture ONNX graphs built offline with onnx.helper and seeded random
weights: shared by the tests (tiny sizes) and bench/engine.py (full sizes)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class GraphBuilder:
    """Appends nodes and seeded initializers; names are unique per builder."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def name(self, p: str) -> str:
        self.n += 1
        return f"{p}{self.n}"

    def const(self, arr: np.ndarray, p: str = "c") -> str:
        n = self.name(p)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def weight(self, shape: tuple[int, ...], fan_in: int) -> str:
        return self.const(
            (self.rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), "w"
        )

    def op(self, op: str, inputs: list[str], n_out: int = 1, **attrs: object) -> str | list[str]:
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(op), **attrs))
        return outs[0] if n_out == 1 else outs

    def conv_bn(
        self,
        x: str,
        cin: int,
        cout: int,
        k: int,
        stride: int = 1,
        group: int = 1,
        act: str | None = "relu",
    ) -> str:
        w = self.weight((cout, cin // group, k, k), cin // group * k * k)
        y = self.op(
            "Conv",
            [x, w],
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[k // 2] * 4,
            group=group,
        )
        r = self.rng
        bn = [
            self.const((1 + 0.1 * r.standard_normal(cout)).astype(np.float32)),
            self.const((0.1 * r.standard_normal(cout)).astype(np.float32)),
            self.const((0.1 * r.standard_normal(cout)).astype(np.float32)),
            self.const((1 + 0.1 * r.random(cout)).astype(np.float32)),
        ]
        y = self.op("BatchNormalization", [y, *bn], epsilon=1e-5)
        if act == "relu":
            y = self.op("Relu", [y])
        elif act == "relu6":
            y = self.op("Clip", [y, self.const(np.float32(0)), self.const(np.float32(6))])
        return y

    def linear(self, x: str, cin: int, cout: int) -> str:
        w = self.weight((cin, cout), cin)
        b = self.const((0.01 * self.rng.standard_normal(cout)).astype(np.float32), "b")
        return self.op("Add", [self.op("MatMul", [x, w]), b])

    def model(
        self, inputs: list[onnx.ValueInfoProto], outputs: list[str], name: str
    ) -> onnx.ModelProto:
        g = helper.make_graph(
            self.nodes,
            name,
            inputs,
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
            self.inits,
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
        m.ir_version = 8
        return m


def mobilenet_v2(res: int = 224, width: float = 1.0, classes: int = 1000) -> onnx.ModelProto:
    """MobileNetV2: inverted residuals (1x1 expand, 3x3 depthwise, 1x1 project), ReLU6."""
    b = GraphBuilder(1)
    c = lambda v: max(8, int(v * width + 4) // 8 * 8)  # noqa: E731
    y = b.conv_bn("input", 3, c(32), 3, 2, act="relu6")
    cin = c(32)
    cfg = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]
    for t, ch, n, s in cfg:
        cout = c(ch)
        for i in range(n):
            stride = s if i == 0 else 1
            h = y
            hid = cin * t
            if t != 1:
                h = b.conv_bn(h, cin, hid, 1, act="relu6")
            h = b.conv_bn(h, hid, hid, 3, stride, group=hid, act="relu6")
            h = b.conv_bn(h, hid, cout, 1, act=None)
            y = b.op("Add", [y, h]) if stride == 1 and cin == cout else h
            cin = cout
    y = b.conv_bn(y, cin, c(1280), 1, act="relu6")
    y = b.op("GlobalAveragePool", [y])
    y = b.op("Flatten", [y], axis=1)
    w = b.weight((classes, c(1280)), c(1280))
    y = b.op("Gemm", [y, w, b.const(np.zeros(classes, np.float32))], transB=1)
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, res, res])
    return b.model([inp], [y], "mobilenet_v2")


def resnet(
    res: int = 224, blocks: tuple[int, ...] = (2, 2, 2, 2), width: int = 64, classes: int = 1000
) -> onnx.ModelProto:
    """ResNet with basic blocks ((2,2,2,2) is ResNet-18)."""
    b = GraphBuilder(2)
    y = b.conv_bn("input", 3, width, 7, 2)
    y = b.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = width
    for stage, n in enumerate(blocks):
        cout = width * 2**stage
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            h = b.conv_bn(y, cin, cout, 3, stride)
            h = b.conv_bn(h, cout, cout, 3, 1, act=None)
            sc = b.conv_bn(y, cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else y
            y = b.op("Relu", [b.op("Add", [h, sc])])
            cin = cout
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])], axis=1)
    y = b.op("Gemm", [y, b.weight((cin, classes), cin), b.const(np.zeros(classes, np.float32))])
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, res, res])
    return b.model([inp], [y], "resnet")


def resnet50(res: int = 224, classes: int = 1000) -> onnx.ModelProto:
    """ResNet-50: bottleneck blocks (1x1 reduce, 3x3, 1x1 expand x4), (3, 4, 6, 3)."""
    b = GraphBuilder(6)
    y = b.conv_bn("input", 3, 64, 7, 2)
    y = b.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, n in enumerate((3, 4, 6, 3)):
        mid = 64 * 2**stage
        cout = mid * 4
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            h = b.conv_bn(y, cin, mid, 1)
            h = b.conv_bn(h, mid, mid, 3, stride)
            h = b.conv_bn(h, mid, cout, 1, act=None)
            sc = b.conv_bn(y, cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else y
            y = b.op("Relu", [b.op("Add", [h, sc])])
            cin = cout
    y = b.op("Flatten", [b.op("GlobalAveragePool", [y])], axis=1)
    y = b.op("Gemm", [y, b.weight((cin, classes), cin), b.const(np.zeros(classes, np.float32))])
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, res, res])
    return b.model([inp], [y], "resnet50")


def encoder(
    layers: int = 6,
    seq: int = 128,
    hidden: int = 384,
    heads: int = 12,
    ffn: int = 1536,
    vocab: int = 30522,
) -> onnx.ModelProto:
    """MiniLM-style BERT encoder: embeddings + LayerNorm, then post-LN layers with
    multi-head self-attention and an erf-GELU feed-forward, as exporters emit them."""
    b = GraphBuilder(3)
    d = hidden // heads
    emb = b.const((0.02 * b.rng.standard_normal((vocab, hidden))).astype(np.float32), "emb")
    pos = b.const((0.02 * b.rng.standard_normal((1, seq, hidden))).astype(np.float32), "pos")
    ones, zeros = np.ones(hidden, np.float32), np.zeros(hidden, np.float32)

    def ln(x: str) -> str:
        return b.op(
            "LayerNormalization", [x, b.const(ones), b.const(zeros)], axis=-1, epsilon=1e-12
        )

    x = ln(b.op("Add", [b.op("Gather", [emb, "input_ids"], axis=0), pos]))
    heads_shape = b.const(np.array([1, seq, heads, d], np.int64))
    flat_shape = b.const(np.array([1, seq, hidden], np.int64))
    scale = b.const(np.float32(np.sqrt(d)))
    for _ in range(layers):
        q, k, v = (b.op("Reshape", [b.linear(x, hidden, hidden), heads_shape]) for _ in range(3))
        q = b.op("Transpose", [q], perm=[0, 2, 1, 3])
        k = b.op("Transpose", [k], perm=[0, 2, 3, 1])
        v = b.op("Transpose", [v], perm=[0, 2, 1, 3])
        att = b.op("Softmax", [b.op("Div", [b.op("MatMul", [q, k]), scale])], axis=-1)
        ctx = b.op("Transpose", [b.op("MatMul", [att, v])], perm=[0, 2, 1, 3])
        ctx = b.op("Reshape", [ctx, flat_shape])
        x = ln(b.op("Add", [x, b.linear(ctx, hidden, hidden)]))
        h = b.linear(x, hidden, ffn)
        gelu = b.op(
            "Mul",
            [
                b.op(
                    "Mul",
                    [
                        h,
                        b.op(
                            "Add",
                            [
                                b.op("Erf", [b.op("Div", [h, b.const(np.float32(np.sqrt(2)))])]),
                                b.const(np.float32(1)),
                            ],
                        ),
                    ],
                ),
                b.const(np.float32(0.5)),
            ],
        )
        x = ln(b.op("Add", [x, b.linear(gelu, ffn, hidden)]))
    inp = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, seq])
    return b.model([inp], [x], "encoder")


def recommender(
    dense: int = 13,
    sparse: int = 26,
    vocab: int = 1000,
    emb: int = 16,
    bottom: tuple[int, ...] = (512, 256, 64),
    top: tuple[int, ...] = (512, 256, 1),
) -> onnx.ModelProto:
    """DLRM-style: bottom MLP on dense features, embedding lookups for sparse ids,
    concatenation, top MLP, sigmoid click probability."""
    b = GraphBuilder(4)
    x = "dense"
    cin = dense
    for c in bottom:
        x = b.op("Gemm", [x, b.weight((cin, c), cin), b.const(np.zeros(c, np.float32))])
        x = b.op("Relu", [x])
        cin = c
    table = b.const(
        (0.05 * b.rng.standard_normal((sparse * vocab, emb))).astype(np.float32), "table"
    )
    offsets = b.const((np.arange(sparse, dtype=np.int64) * vocab).reshape(1, sparse))
    ids = b.op("Add", ["sparse", offsets])
    e = b.op("Gather", [table, ids], axis=0)  # [1, sparse, emb]
    e = b.op("Reshape", [e, b.const(np.array([1, sparse * emb], np.int64))])
    z = b.op("Concat", [x, e], axis=1)
    cin = cin + sparse * emb
    for i, c in enumerate(top):
        z = b.op("Gemm", [z, b.weight((cin, c), cin), b.const(np.zeros(c, np.float32))])
        z = b.op("Relu", [z]) if i < len(top) - 1 else b.op("Sigmoid", [z])
        cin = c
    inputs = [
        helper.make_tensor_value_info("dense", TensorProto.FLOAT, [1, dense]),
        helper.make_tensor_value_info("sparse", TensorProto.INT64, [1, sparse]),
    ]
    return b.model(inputs, [z], "recommender")


def mlp(batch: int = 1, dims: tuple[int, ...] = (64, 128, 128, 10)) -> onnx.ModelProto:
    b = GraphBuilder(5)
    x = "x"
    for i in range(len(dims) - 1):
        x = b.op(
            "Gemm",
            [
                x,
                b.weight((dims[i + 1], dims[i]), dims[i]),
                b.const(np.full(dims[i + 1], 0.01, np.float32)),
            ],
            transB=1,
        )
        if i < len(dims) - 2:
            x = b.op("Relu", [x])
    x = b.op("Softmax", [x], axis=-1)
    return b.model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, dims[0]])], [x], "mlp"
    )


def random_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for a zoo model: normal floats, ids in range for int64 inputs."""
    rng = np.random.default_rng(seed)
    feeds = {}
    inits = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if vi.type.tensor_type.elem_type == TensorProto.INT64:
            feeds[vi.name] = rng.integers(0, 1000, size=shape).astype(np.int64)
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds
