"""Tiny ONNX models that the real insightface 0.7.3 routes as a detector and a recognizer.

The detector finds *painted faces*: axis-aligned rectangles of a marker colour
(red > 200, blue > 200, green < 128, i.e. magenta-ish). Everything it reports
is computed from the picture, so a test decides what it finds:

- score = 0.95 - green/255 inside the rectangle (paint green 0 for 0.95,
  green 60 for ~0.71, green >= 116 is below insightface's 0.5 threshold);
- bbox = the rectangle, from windowed sums of marker coverage at stride 8
  (distances in stride units, relative to the anchor, as SCRFD emits them);
- keypoints = fixed fractions of the rectangle (:data:`KEYPOINT_FRACTIONS`).

Only stride 8 fires, and only for rectangles narrower and shorter than
``WINDOW - 0.5`` cells (~108 px at the detection size): bigger faces are
missed, like tightly cropped faces are by SCRFD, and are found by the
analysis retrying at a smaller detection size or with padding. Faces in the
same row or column need a gap of ``WINDOW`` cells (112 px at detection size).

The recognizer pools the aligned 112x112 crop to 8x8 and projects it with a
fixed random matrix to 512-d: the same painted face gives the same vector,
different colours give different vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8
STRIDES = (8, 16, 32)
ACTIVE_STRIDE = 8
WINDOW = 14  # cells summed each side of an anchor
# (x, y) of each keypoint as a fraction of the face rectangle.
KEYPOINT_FRACTIONS = np.array(
    [[0.30, 0.38], [0.70, 0.38], [0.50, 0.58], [0.35, 0.78], [0.65, 0.78]],
    dtype=np.float32,
)
MAX_FACE_CELLS = WINDOW - 0.5


class _Graph:
    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, value, dtype=np.float32) -> str:
        n = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), n))
        return n

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"n{self._n}_{op_type.lower()}", **attrs))
        return out

    def op_to(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=f"out_{output}", **attrs))
        return output


def _clip01(g: _Graph, x: str) -> str:
    return g.op("Clip", [x, g.const(0.0), g.const(1.0)])


def _affine(g: _Graph, x: str, scale: float, shift: float) -> str:
    return g.op("Add", [g.op("Mul", [x, g.const(scale)]), g.const(shift)])


def _window_sum(g: _Graph, x: str, horizontal: bool, before: bool) -> str:
    """Sum of x over the WINDOW cells before (exclusive) or from (inclusive) each cell."""
    k = 2 * WINDOW + 1
    w = np.zeros(k, dtype=np.float32)
    if before:
        w[:WINDOW] = 1.0  # offsets -WINDOW .. -1
    else:
        w[WINDOW : 2 * WINDOW] = 1.0  # offsets 0 .. WINDOW-1
    if horizontal:
        kernel, pads = w.reshape(1, 1, 1, k), [0, WINDOW, 0, WINDOW]
    else:
        kernel, pads = w.reshape(1, 1, k, 1), [WINDOW, 0, WINDOW, 0]
    return g.op("Conv", [x, g.const(kernel)], pads=pads)


def _flatten_anchors(g: _Graph, x: str, channels: int, output: str) -> str:
    """[1,C,h,w] -> [h*w*2, C], each cell repeated for its two anchors (insightface's order)."""
    t = g.op("Transpose", [x], perm=[0, 2, 3, 1])
    t = g.op("Reshape", [t, g.const([-1, 1, channels], np.int64)])
    t = g.op("Concat", [t, t], axis=1)
    return g.op_to("Reshape", [t, g.const([-1, channels], np.int64)], output)


def build_detector(path: Path) -> Path:
    """Write the painted-face detector (9 outputs, dynamic H/W input) to ``path``."""
    g = _Graph()
    # blob = (BGR->RGB pixel - 127.5) / 128  ->  pixel = blob * 128 + 127.5
    pixels = _affine(g, "input.1", 128.0, 127.5)
    r = g.op(
        "Slice",
        [
            pixels,
            g.const([0], np.int64),
            g.const([1], np.int64),
            g.const([1], np.int64),
        ],
    )
    gr = g.op(
        "Slice",
        [
            pixels,
            g.const([1], np.int64),
            g.const([2], np.int64),
            g.const([1], np.int64),
        ],
    )
    b = g.op(
        "Slice",
        [
            pixels,
            g.const([2], np.int64),
            g.const([3], np.int64),
            g.const([1], np.int64),
        ],
    )
    marker = g.op(
        "Mul",
        [
            g.op(
                "Mul",
                [
                    _clip01(g, _affine(g, r, 0.1, -20.0)),
                    _clip01(g, _affine(g, b, 0.1, -20.0)),
                ],
            ),
            _clip01(g, _affine(g, gr, -0.1, 12.8)),
        ],
    )
    strength = g.op("Mul", [marker, _affine(g, gr, -1.0 / 255.0, 0.95)])

    scores_out, bbox_out, kps_out = [], [], []
    kps_matrix = np.zeros((10, 4, 1, 1), dtype=np.float32)  # from [L, T, R, B]
    for i, (fx, fy) in enumerate(KEYPOINT_FRACTIONS):
        kps_matrix[2 * i, 0] = fx - 1.0
        kps_matrix[2 * i, 2] = fx
        kps_matrix[2 * i + 1, 1] = fy - 1.0
        kps_matrix[2 * i + 1, 3] = fy
    for stride in STRIDES:
        pool = {"kernel_shape": [stride, stride], "strides": [stride, stride]}
        cover = g.op("AveragePool", [marker], **pool)
        value = g.op("AveragePool", [strength], **pool)
        left = _window_sum(g, cover, horizontal=True, before=True)
        right = _window_sum(g, cover, horizontal=True, before=False)
        top = _window_sum(g, cover, horizontal=False, before=True)
        bottom = _window_sum(g, cover, horizontal=False, before=False)
        interior = _clip01(g, _affine(g, cover, 100.0, -97.0))
        fits_w = _clip01(g, _affine(g, g.op("Add", [left, right]), -4.0, 4.0 * MAX_FACE_CELLS))
        fits_h = _clip01(g, _affine(g, g.op("Add", [top, bottom]), -4.0, 4.0 * MAX_FACE_CELLS))
        score = g.op("Mul", [g.op("Mul", [interior, value]), g.op("Mul", [fits_w, fits_h])])
        if stride != ACTIVE_STRIDE:
            score = g.op("Mul", [score, g.const(0.0)])
        dist = g.op("Concat", [left, top, right, bottom], axis=1)
        kps = g.op("Conv", [dist, g.const(kps_matrix)])
        scores_out.append(_flatten_anchors(g, score, 1, f"score_{stride}"))
        bbox_out.append(_flatten_anchors(g, dist, 4, f"bbox_{stride}"))
        kps_out.append(_flatten_anchors(g, kps, 10, f"kps_{stride}"))

    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in scores_out]
    outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 4]) for n in bbox_out]
    outputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 10]) for n in kps_out]
    graph = helper.make_graph(
        g.nodes,
        "painted_face_detector",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])],
        outputs,
        g.inits,
    )
    return _save(graph, path)


def build_recognizer(path: Path, seed: int = 0) -> Path:
    """Write the recognizer (input ``[N,3,112,112]``, output ``[N,512]``) to ``path``."""
    g = _Graph()
    rng = np.random.default_rng(seed)
    projection = rng.standard_normal((192, 512)).astype(np.float32) * 0.5
    bias = rng.standard_normal(512).astype(np.float32) * 0.1
    # Node names must not start with "Sub"/"Mul": insightface would take that for an mxnet model.
    pooled = g.op("AveragePool", ["input.1"], kernel_shape=[14, 14], strides=[14, 14])
    flat = g.op("Flatten", [pooled], axis=1)
    feat = g.op_to("Gemm", [flat, g.const(projection), g.const(bias)], "embedding")
    graph = helper.make_graph(
        g.nodes,
        "painted_face_recognizer",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info(feat, TensorProto.FLOAT, ["N", 512])],
        g.inits,
    )
    return _save(graph, path)


def _save(graph, path: Path) -> Path:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="instantid-tests",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
