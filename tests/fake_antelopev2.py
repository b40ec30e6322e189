"""A tiny, weight-free stand-in for InsightFace's ``antelopev2`` pack, built in code for tests.

Adapted from ``shared/tools/make_fake_antelopev2.py``. insightface's ``model_zoo`` routes these ONNX
files by their input/output shapes exactly like the real pack, so the real insightface code runs:

- ``scrfd_10g_bnkps.onnx``: SCRFD-shaped detector. Cells of an 8-pixel grid whose mean RGB is above
  ~190 are "face"; every such cell regresses the bounding box of all bright cells, so NMS keeps one
  face, with 5 keypoints where the ArcFace template expects eyes, nose and mouth.
  Options: ``split=True`` treats the left and right halves of the detector input separately (two
  faces; left scores 0.95, right 0.99); ``reject_border=True`` ignores a bright region that touches
  the top or left edge of the detector input, like real detectors that miss faces cut by the frame.
- ``2d106det.onnx``: 106 landmarks at a fixed layout (33 outline + 73 inner points) around the box.
- ``1k3d68.onnx``, ``genderage.onnx``: only there so the pack looks complete.
- ``glintr100.onnx``: a fixed random projection of the 8x8-average-pooled 112x112 aligned crop.

Nothing here is a trained model. Needs numpy and onnx only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as oh
from onnx import numpy_helper as onh

OPSET = 13
IR_VERSION = 7  # loadable by old and new onnxruntime alike

# ArcFace 112x112 alignment template (eyes, nose, mouth corners) as fractions of the face box
ARCFACE_KPS = (
    np.array(
        [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
         [70.7299, 92.2041]],
        dtype=np.float32,
    )
    / 112.0
)  # fmt: skip


class _Graph:
    """Collects nodes and constants; names are unique per graph."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def const(self, value, dtype=np.float32) -> str:
        self._n += 1
        name = f"c{self._n}"
        self.inits.append(onh.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs) -> str:
        self._n += 1
        out = out or f"t{self._n}"
        # node names must not start with Sub/Mul: insightface would then assume raw 0..255 input
        self.nodes.append(oh.make_node(op_type, list(inputs), [out], name=f"n{self._n}", **attrs))
        return out

    def model(self, inputs, outputs, name: str) -> onnx.ModelProto:
        graph = oh.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", OPSET)])
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model, full_check=True)
        return model


def _group_outputs(
    g: _Graph, on: str, ax: str, ay: str, stride: str, score: float, reject_border: bool
) -> tuple[str, list[str], list[str]]:
    """Score map, 4 box-distance maps and 10 kps-distance maps for the bright cells in ``on``."""
    one, big = g.const(1.0), g.const(1e6)
    penalty = g.op("Mul", g.op("Sub", one, on), big)
    x1 = g.op("ReduceMin", g.op("Add", ax, penalty), keepdims=1)
    y1 = g.op("ReduceMin", g.op("Add", ay, penalty), keepdims=1)
    x2 = g.op("Add", g.op("ReduceMax", g.op("Mul", ax, on), keepdims=1), stride)
    y2 = g.op("Add", g.op("ReduceMax", g.op("Mul", ay, on), keepdims=1), stride)
    x1 = g.op("Min", x1, x2)  # no bright cell -> finite box
    y1 = g.op("Min", y1, y2)
    gain = g.op("Mul", on, g.const(score - 0.01))
    if reject_border:
        half = g.const(0.5)
        inside_x = g.op("Cast", g.op("Greater", x1, half), to=TensorProto.FLOAT)
        inside_y = g.op("Cast", g.op("Greater", y1, half), to=TensorProto.FLOAT)
        gain = g.op("Mul", gain, g.op("Mul", inside_x, inside_y))
    scores = g.op("Add", gain, g.const(0.01))
    dist = [
        g.op("Div", g.op("Sub", ax, x1), stride),
        g.op("Div", g.op("Sub", ay, y1), stride),
        g.op("Div", g.op("Sub", x2, ax), stride),
        g.op("Div", g.op("Sub", y2, ay), stride),
    ]
    width, height = g.op("Sub", x2, x1), g.op("Sub", y2, y1)
    kps = []
    for fx, fy in ARCFACE_KPS:
        px = g.op("Add", x1, g.op("Mul", width, g.const(fx)))
        py = g.op("Add", y1, g.op("Mul", height, g.const(fy)))
        kps += [g.op("Div", g.op("Sub", px, ax), stride), g.op("Div", g.op("Sub", py, ay), stride)]
    return scores, dist, kps


def _pack(g: _Graph, maps: list[str], out: str) -> None:
    """C maps [1,1,h,w] -> [h*w*2, C]: cell-major, repeated for the 2 anchors of each cell."""
    c = len(maps)
    x = g.op("Concat", *maps, axis=1) if c > 1 else maps[0]
    x = g.op("Transpose", x, perm=[0, 2, 3, 1])
    shape = g.const([-1, c], np.int64)
    x = g.op("Reshape", x, shape)
    g.op("Reshape", g.op("Concat", x, x, axis=1), shape, out=out)


def make_detector(split: bool = False, reject_border: bool = False) -> onnx.ModelProto:
    g = _Graph()
    gray = g.op("ReduceMean", "input.1", axes=[1], keepdims=1)
    zero = g.const(0.0)
    for s in (16, 32):  # inactive strides: all scores 0
        z = g.op("Mul", g.op("AveragePool", gray, kernel_shape=[s, s], strides=[s, s]), zero)
        _pack(g, [z], f"score_{s}")
        _pack(g, [z] * 4, f"bbox_{s}")
        _pack(g, [z] * 10, f"kps_{s}")
    pooled = g.op("AveragePool", gray, kernel_shape=[8, 8], strides=[8, 8])
    stride = g.const(8.0)
    on = g.op("Cast", g.op("Greater", pooled, g.const(0.5)), to=TensorProto.FLOAT)
    ones = g.op("Add", g.op("Mul", pooled, zero), g.const(1.0))
    ax = g.op("Mul", g.op("Sub", g.op("CumSum", ones, g.const(3, np.int64)), g.const(1.0)), stride)
    ay = g.op("Mul", g.op("Sub", g.op("CumSum", ones, g.const(2, np.int64)), g.const(1.0)), stride)
    if not split:
        scores, dist, kps = _group_outputs(g, on, ax, ay, stride, 0.99, reject_border)
    else:
        width = g.op("Add", g.op("ReduceMax", ax, keepdims=1), stride)
        left = g.op(
            "Cast", g.op("Less", ax, g.op("Mul", width, g.const(0.5))), to=TensorProto.FLOAT
        )
        right = g.op("Sub", g.const(1.0), left)
        lo = _group_outputs(g, g.op("Mul", on, left), ax, ay, stride, 0.95, reject_border)
        hi = _group_outputs(g, g.op("Mul", on, right), ax, ay, stride, 0.99, reject_border)

        def mix(a: str, b: str) -> str:
            return g.op("Add", g.op("Mul", a, left), g.op("Mul", b, right))

        scores = mix(lo[0], hi[0])
        dist = [mix(a, b) for a, b in zip(lo[1], hi[1], strict=True)]
        kps = [mix(a, b) for a, b in zip(lo[2], hi[2], strict=True)]
    _pack(g, [scores], "score_8")
    _pack(g, dist, "bbox_8")
    _pack(g, kps, "kps_8")
    outputs = [
        oh.make_tensor_value_info(f"{kind}_{s}", TensorProto.FLOAT, [f"n{s}", c])
        for kind, c in (("score", 1), ("bbox", 4), ("kps", 10))
        for s in (8, 16, 32)
    ]
    inp = oh.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])
    return g.model([inp], outputs, "fake_scrfd")


def _affine_head(
    in_name: str,
    size: int,
    out_dim: int,
    bias: np.ndarray,
    scale: float,
    batch: int | str = 1,
    pool: int | None = None,
    seed: int = 0,
) -> onnx.ModelProto:
    """input -> (global or k x k average pool) -> flatten -> Gemm."""
    g = _Graph()
    if pool is None:
        pooled, features = g.op("GlobalAveragePool", in_name), 3
    else:
        pooled = g.op("AveragePool", in_name, kernel_shape=[pool, pool], strides=[pool, pool])
        features = 3 * (size // pool) ** 2
    weight = np.random.default_rng(seed).standard_normal((features, out_dim)) * scale
    g.op("Gemm", g.op("Flatten", pooled, axis=1), g.const(weight), g.const(bias), out="fc1")
    inp = oh.make_tensor_value_info(in_name, TensorProto.FLOAT, [batch, 3, size, size])
    out = oh.make_tensor_value_info("fc1", TensorProto.FLOAT, [batch, out_dim])
    return g.model([inp], [out], "fake_head")


def landmark_layout() -> np.ndarray:
    """The 106 points (in [-1, 1] around the box centre) the fake landmark model returns."""
    t = np.linspace(0, 2 * np.pi, 33, endpoint=False)
    contour = np.stack([0.60 * np.sin(t), -0.65 * np.cos(t)], 1)
    t = np.linspace(0, 2 * np.pi, 73, endpoint=False)
    inner = np.stack([0.30 * np.sin(t), 0.05 - 0.35 * np.cos(t)], 1)
    return np.concatenate([contour, inner]).astype(np.float32)


def make_models(split: bool = False, reject_border: bool = False) -> dict[str, onnx.ModelProto]:
    pts68 = np.zeros((1103, 3), np.float32)
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    pts68[-68:] = np.stack([0.5 * np.sin(t), -0.6 * np.cos(t), 0.1 * np.cos(3 * t)], 1)
    return {
        "scrfd_10g_bnkps.onnx": make_detector(split, reject_border),
        "2d106det.onnx": _affine_head("data", 192, 212, landmark_layout().reshape(-1), 0.01),
        "1k3d68.onnx": _affine_head("data", 192, 3309, pts68.reshape(-1), 0.01),
        "genderage.onnx": _affine_head("data", 96, 3, np.array([0.2, 0.8, 0.3]), 0.01),
        "glintr100.onnx": _affine_head(
            "input.1", 112, 512, np.zeros(512), 1 / np.sqrt(588), batch="None", pool=8, seed=1234
        ),
    }


def build(out_dir: str | Path, split: bool = False, reject_border: bool = False) -> Path:
    """Write the five ONNX files into ``out_dir`` (e.g. ``<root>/models/antelopev2``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, model in make_models(split, reject_border).items():
        onnx.save(model, str(out / name))
    return out
