"""Static checks of an exported graph against the rules TensorRT's ONNX parser states.

No machine this project is developed on has TensorRT, so an engine build is the first place a
graph meets the parser. Everything the parser refuses that can be seen in the file without
running TensorRT is checked here instead, on every graph `cyclemask-export` writes (FP32 and
FP16), so a graph TensorRT would refuse fails the export on any machine, with the rule named.

The rules, and where each comes from (onnx-tensorrt, the parser TensorRT ships; read at the
10.1 GA release, commit 96e7811, and the TensorRT 10.0-11.x operator matrix in its
docs/operators.md):

- ``uint8-intermediate``: a node may produce a UINT8 tensor only if that tensor is a graph
  output. ModelImporter.cpp, parseNode: "UINT8 is only allowed as network inputs and outputs.
  Therefore any node that produces an UINT8-typed output that is not also a graph output is
  unsupported" -> "TensorRT does not support UINT8 types for intermediate tensors!".
- ``opset``: the default-domain opset must lie in 9..20 ("TensorRT 10.0 supports operators in
  the inclusive range of opset 9 to opset 20", docs/operators.md; the narrowest range of the
  TensorRT versions cyclemask supports).
- ``op-type`` / ``op-input-type``: every op must be one the parser imports, and every tensor
  input of it of a type the operator matrix lists for that op (e.g. Transpose: FP32, FP16,
  BF16, INT32, INT64, BOOL: no UINT8; Cast: also UINT8). Only the ops cyclemask's generators
  use are listed (`SUPPORTED_OPS`); a new op fails here until its row is added from the matrix.
- ``instancenorm-types``: InstanceNormalization's input, scale and bias must all be FLOAT or all
  FLOAT16 (onnxOpImporters.cpp, InstanceNormalization: "Inputs must be either all FLOAT or all
  FLOAT16").
- ``pad-axes``: Pad's optional `axes` input must be an initializer (onnxOpImporters.cpp, Pad:
  "TensorRT does not support dynamic axes for pad!").
- ``clip-bounds``: Clip's min and max must be initializers or the outputs of Cast nodes of
  initializers (a tensor bound is accepted through the elementwise path, onnxOpImporters.cpp,
  Clip; anything computed at run time is not something our exporter writes: flagged).
"""

from __future__ import annotations

from dataclasses import dataclass

#: ONNX TensorProto element types by name (spelled out: this module needs onnx only when a
#: ModelProto is given to it, and then onnx is loaded already).
_TYPES = {1: "FLOAT", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE",
          16: "BFLOAT16"}
UINT8 = 2

OPSET_MIN, OPSET_MAX = 9, 20

_FLOATS = ("FLOAT", "FLOAT16", "BFLOAT16")
_NUMERIC = _FLOATS + ("INT32", "INT64")

#: op type -> input types the operator matrix lists (docs/operators.md of onnx-tensorrt).
SUPPORTED_OPS: dict[str, tuple[str, ...]] = {
    "Add": _NUMERIC,
    "Cast": _NUMERIC + ("UINT8", "BOOL"),
    "Clip": _FLOATS,
    "Conv": _FLOATS,
    "ConvTranspose": _FLOATS,
    "Div": _NUMERIC,
    "InstanceNormalization": _FLOATS,
    "Mul": _NUMERIC,
    "Pad": _NUMERIC,
    "Relu": _NUMERIC,
    "Round": _FLOATS,
    "Sub": _NUMERIC,
    "Tanh": _FLOATS,
    "Transpose": _NUMERIC + ("BOOL",),
    # The erase-then-restore unmasking graph (cyclemask.restore_models): its U-Nets, the
    # segmenter's half-size pass, the hole's growth and the composite.
    "AveragePool": _FLOATS,
    "Concat": _NUMERIC + ("BOOL",),
    "LeakyRelu": _FLOATS,
    "MaxPool": _FLOATS,
    "Resize": _FLOATS,
    "Sigmoid": _FLOATS,
    # The mirrored segmenter's view (SegmenterConfig.mirror): Gather with a constant index.
    "Gather": _NUMERIC + ("BOOL",),
    # BatchNormalization and Identity: generators built with norm "batch" / "none".
    "BatchNormalization": _FLOATS,
    "Identity": _NUMERIC + ("BOOL",),
}

#: Inputs that are parameters rather than data, per op (their type is the op's business, e.g.
#: Pad's int64 `pads`): not checked against the op's data types.
_PARAM_INPUTS = {"Pad": {1, 2, 3}, "Clip": {1, 2}, "Conv": {1, 2}, "ConvTranspose": {1, 2},
                 "InstanceNormalization": {1, 2}, "BatchNormalization": {1, 2, 3, 4}, "Resize": {1, 2, 3}}


@dataclass(frozen=True)
class LintProblem:
    rule: str
    node: str  # the node's name (or op type and index), "" for graph-level rules
    message: str

    def __str__(self) -> str:
        where = f"{self.node}: " if self.node else ""
        return f"[{self.rule}] {where}{self.message}"


def _tensor_types(model) -> dict[str, int]:
    """Element type of every tensor: graph I/O, initializers, value_info after shape inference."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # an invalid graph: use what is declared
        inferred = model
    g = inferred.graph
    types: dict[str, int] = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for t in g.initializer:
        types[t.name] = t.data_type
    for n in g.node:  # Cast's output type is its `to`, whatever inference managed
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and n.output:
                    types[n.output[0]] = a.i
    return types


def lint_tensorrt(model) -> list[LintProblem]:
    """Every rule above that `model` (an onnx.ModelProto) breaks; [] for a graph the parser
    should accept. Nothing is run and TensorRT is not needed."""
    g = model.graph
    problems: list[LintProblem] = []
    opsets = {o.domain: o.version for o in model.opset_import}
    opset = opsets.get("", opsets.get("ai.onnx"))
    if opset is None or not OPSET_MIN <= opset <= OPSET_MAX:
        problems.append(LintProblem("opset", "", f"default-domain opset {opset}; TensorRT's parser takes "
                                                 f"{OPSET_MIN}..{OPSET_MAX}"))
    types = _tensor_types(model)
    outputs = {o.name for o in g.output}
    initializers = {t.name for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}

    def type_name(name: str) -> str:
        return _TYPES.get(types.get(name, 0), f"type {types.get(name)}" if name in types else "unknown type")

    for i, n in enumerate(g.node):
        label = n.name or f"{n.op_type}#{i}"
        if n.domain not in ("", "ai.onnx"):
            problems.append(LintProblem("op-type", label, f"op {n.domain}::{n.op_type} is not a standard ONNX op"))
            continue
        allowed = SUPPORTED_OPS.get(n.op_type)
        if allowed is None:
            problems.append(LintProblem("op-type", label, f"op {n.op_type} is not in the checked list of ops "
                                                          "TensorRT's parser imports (graph_lint.SUPPORTED_OPS)"))
        else:
            params = _PARAM_INPUTS.get(n.op_type, set())
            for k, name in enumerate(n.input):
                if not name or k in params or name in initializers:
                    continue
                t = type_name(name)
                if t not in allowed:
                    problems.append(LintProblem("op-input-type", label,
                                                f"{n.op_type} input {name!r} is {t}; TensorRT takes {', '.join(allowed)}"))
        for out in n.output:
            if types.get(out) == UINT8 and out not in outputs:
                problems.append(LintProblem("uint8-intermediate", label,
                                            f"{n.op_type} produces UINT8 tensor {out!r}, which is not a graph output: "
                                            "TensorRT does not support UINT8 types for intermediate tensors"))
        if n.op_type == "InstanceNormalization" and len(n.input) >= 3:
            got = [type_name(x) for x in n.input[:3]]
            if len(set(got)) != 1 or got[0] not in ("FLOAT", "FLOAT16"):
                problems.append(LintProblem("instancenorm-types", label,
                                            f"input, scale and bias are {', '.join(got)}; TensorRT needs all FLOAT or all FLOAT16"))
        if n.op_type == "Pad" and len(n.input) >= 4 and n.input[3] and n.input[3] not in initializers:
            problems.append(LintProblem("pad-axes", label, "Pad axes must be an initializer for TensorRT"))
        if n.op_type == "Clip":
            for name in n.input[1:3]:
                if not name or name in initializers:
                    continue
                src = producers.get(name)
                if not (src is not None and src.op_type == "Cast" and src.input[0] in initializers):
                    problems.append(LintProblem("clip-bounds", label,
                                                f"Clip bound {name!r} is computed at run time; expected a constant"))
    return problems


def check_tensorrt_rules(model, what: str) -> None:
    """Raise ExportError listing every broken rule (see `lint_tensorrt`)."""
    from cyclemask.errors import ExportError

    problems = lint_tensorrt(model)
    if problems:
        shown = "; ".join(str(p) for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ExportError(f"{what} breaks TensorRT's ONNX parser rules: {shown}{more}")
