"""torch sources: TorchScript (.pt, torch.jit.save), torch.export programs (.pt2) and pickled nn.Modules
(what the zoo's torch builders save)."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, List, Optional

import numpy as np

from harness.agent.agent import contiguous
from harness.schema.interface import Interface, TensorSpec
from harness.prepare.sources import not_a_model, register_source


def flatten(value: Any) -> List[Any]:
    """A model's return value as a flat list of tensors (tuples, lists and dicts in order)."""
    if isinstance(value, dict):
        return [t for k in value for t in flatten(value[k])]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in flatten(v)]
    return [value]


class TorchHostModel:
    """Runs a torch callable on numpy feeds; output names are output_0, output_1, ... unless the
    interface names them (a recipe's declared outputs, or an exported program's own names)."""

    def __init__(self, module, input_names, output_names, dtypes):
        self.module, self.input_names, self.dtypes = module, input_names, dtypes
        self.output_names = list(output_names)

    def prepare(self, feeds):
        import torch
        return [torch.from_numpy(contiguous(x if str(x.dtype) == d else x.astype(d)))
                for x, d in zip(feeds, self.dtypes)]

    def infer(self, prepared):
        import torch
        with torch.no_grad():
            self.last = [t.detach().cpu().numpy() for t in flatten(self.module(*prepared))]
        if len(self.output_names) != len(self.last):
            self.output_names = [f"output_{i}" for i in range(len(self.last))]

    def fetch(self):
        return self.last


def _forward_names(module) -> List[str]:
    try:
        return [a.name for a in module.forward.schema.arguments[1:]]  # TorchScript
    except AttributeError:
        params = inspect.signature(module.forward).parameters.values()
        return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


@register_source("torchscript")
class TorchScriptSource:
    def load(self, path: Path):
        import torch
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise not_a_model(path, "torchscript", exc) from None
        return module.eval()

    def describe(self, path: Path) -> Interface:
        # TorchScript records neither shapes nor dtypes nor output names: shapes come from --input-shape or
        # the data, outputs from running the reference.
        return Interface(tuple(TensorSpec(n, None, "") for n in _forward_names(self.load(path))), ())

    def open(self, path: Path, interface: Interface):
        return TorchHostModel(self.load(path), interface.input_names, interface.output_names,
                              [s.dtype for s in interface.inputs])

    def param_count(self, path: Path) -> Optional[int]:
        return int(sum(p.numel() for p in self.load(path).parameters()))


@register_source("torch_module")
class TorchModuleSource(TorchScriptSource):
    def load(self, path: Path):
        import torch
        try:
            module = torch.load(str(path), weights_only=False, map_location="cpu")
        except Exception as exc:
            raise not_a_model(path, "torch_module", exc) from None
        return module.eval()


def _spec(name: str, value) -> TensorSpec:
    shape = tuple(int(d) if isinstance(d, int) or str(d).lstrip("-").isdigit() else str(d) for d in value.shape)
    return TensorSpec(name, shape, str(value.dtype).replace("torch.", ""))


@register_source("torch_export")
class TorchExportSource:
    def load(self, path: Path):
        import torch
        try:
            return torch.export.load(str(path))
        except Exception as exc:
            raise not_a_model(path, "torch_export", exc) from None

    def describe(self, path: Path) -> Interface:
        program = self.load(path)
        nodes = {n.name: n for n in program.graph.nodes}
        inputs = tuple(_spec(n, nodes[n].meta["val"]) for n in program.graph_signature.user_inputs)
        output_node = next(n for n in program.graph.nodes if n.op == "output")
        values = [a.meta.get("val") if hasattr(a, "meta") else None for a in flatten(output_node.args[0])]
        names = list(program.graph_signature.user_outputs)
        outputs = tuple(_spec(n, v) for n, v in zip(names, values[-len(names):]) if v is not None)
        return Interface(inputs, outputs if len(outputs) == len(names) else ())

    def open(self, path: Path, interface: Interface):
        return TorchHostModel(self.load(path).module(), interface.input_names, interface.output_names,
                              [s.dtype for s in interface.inputs])

    def param_count(self, path: Path) -> Optional[int]:
        return int(sum(int(np.prod(p.shape)) for p in self.load(path).state_dict.values()))
