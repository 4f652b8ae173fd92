"""Read an artifact's interface and operators.

The interface is read with the same runtime classes the device agent uses,
so the host sees exactly what the device will see (harness.schema.interface checks
it against the source's; a mismatch makes the cell 'incompatible').
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

from harness.prepare.sources.runtimes import load_on_host


def read_interface(path: Path, fmt: str, shapes: Optional[Mapping[str, Sequence[int]]] = None) -> Dict[str, Any]:
    """The artifact's interface, loaded for the fixed input sizes (a dynamic model must load at them)."""
    return load_on_host(path, fmt, shapes).interface()


def list_operators(path: Path, fmt: str, shapes: Optional[Mapping[str, Sequence[int]]] = None) -> Dict[str, int]:
    """Operator type → count, per format."""
    if fmt == "onnx":
        import onnx
        model = onnx.load(str(path), load_external_data=False)
        return dict(Counter(node.op_type for node in model.graph.node))
    if fmt == "openvino":
        import openvino as ov
        model = ov.Core().read_model(str(path))
        skip = {"Parameter", "Result", "Constant"}
        return dict(Counter(op.get_type_name() for op in model.get_ordered_ops() if op.get_type_name() not in skip))
    if fmt == "tflite":
        # the runtime's node list, without the DELEGATE nodes that took over the real ops (None: very old
        # runtimes list no ops)
        layers = load_on_host(path, "tflite", shapes).layers
        return dict(Counter(layer["type"] for layer in layers)) if layers is not None else {}
    if fmt == "torch":
        import torch
        if str(path).endswith(".pt2"):
            graph = torch.export.load(str(path)).graph
            return dict(Counter(str(n.target).split(".")[-2] if "." in str(n.target) else str(n.target)
                                for n in graph.nodes if n.op == "call_function"))
        module = torch.jit.load(str(path), map_location="cpu")
        return dict(Counter(n.kind() for n in module.inlined_graph.nodes()
                            if n.kind() not in ("prim::Constant", "prim::GetAttr", "prim::ListConstruct")))
    raise ValueError(f"unknown format {fmt!r}")
