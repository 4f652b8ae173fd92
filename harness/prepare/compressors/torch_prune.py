"""Magnitude (L1) pruning of a torch reference with torch.nn.utils.prune.

Prunes the `weight` of every Conv/Linear module, globally (one threshold for
the whole model) or per layer, optionally fine-tunes with the masks in place,
then makes the zeros permanent with prune.remove and saves the whole module,
so every torch converter takes the variant like the reference.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import numpy as np

from harness.prepare.compress import VariantModel, register_compressor
from harness.prepare.compressors._common import require_source, take_params, training_data
from harness.prepare.compressors.weights import rel_frobenius, sparsity

DEFAULTS = {
    "sparsity": 0.5,
    "scope": "global",      # 'global' (one threshold over all layers) or 'layer' (each layer to the target)
    "epochs": 1,            # fine-tuning epochs with the masks in place (0: none)
    "learning_rate": 0.0,   # 0: the recipe's train.learning_rate / 10
}


@register_compressor("torch_prune", DEFAULTS)
def torch_prune(ctx, params: Dict[str, Any], out_dir: Path) -> VariantModel:
    require_source(ctx, "torch_prune", "torch_module")
    p = take_params(ctx, "torch_prune", params, DEFAULTS)
    import torch
    from torch.nn.utils import prune

    from harness.prepare.sources import SOURCES

    torch.manual_seed(ctx.seed)
    target = float(p["sparsity"])
    model = SOURCES.get("torch_module")().load(ctx.reference_model_path)
    reference = {n: t.detach().numpy().copy() for n, t in model.named_parameters()}
    prunable = [(m, "weight") for m in model.modules()
                if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear))]
    if not prunable:
        raise ValueError("no Conv or Linear layer to prune")
    if p["scope"] == "global":
        prune.global_unstructured(prunable, pruning_method=prune.L1Unstructured, amount=target)
    elif p["scope"] == "layer":
        for module, name in prunable:
            prune.l1_unstructured(module, name, amount=target)
    else:
        raise ValueError(f"scope must be 'global' or 'layer', not {p['scope']!r}")
    if int(p["epochs"]) > 0:
        _finetune(ctx, model, int(p["epochs"]), float(p["learning_rate"]) or ctx.recipe.train.learning_rate / 10)
    for module, name in prunable:
        prune.remove(module, name)
    model.eval()
    path = Path(out_dir) / "model.pt"
    torch.save(model, path)
    # By name: prune.remove re-registers `weight` after `bias`, so the parameter order changes.
    named = {n: t.detach().numpy() for n, t in model.named_parameters()}
    weights = [named[n] for n in reference]
    metrics = {"param_count": int(sum(w.size for w in weights)), "target_sparsity": target,
               "nonzero_param_count": int(sum((w != 0).sum() for w in weights)),
               "sparsity": sparsity(weights), "weight_rel_frobenius": rel_frobenius(list(reference.values()), weights)}
    return VariantModel(model_path=path, source_format="torch_module", metrics=metrics)


def _finetune(ctx, model, epochs: int, learning_rate: float) -> None:
    """Cross-entropy on the training split; the pruning masks keep pruned weights at zero."""
    import torch

    data = training_data(ctx, "torch_prune")
    x = torch.from_numpy(np.ascontiguousarray(data.x_train, dtype=np.float32))
    y = torch.from_numpy(np.asarray(data.y_train, dtype=np.int64))
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    probabilities = ctx.recipe.output.kind == "probabilities"
    generator = torch.Generator().manual_seed(ctx.seed)
    batch = ctx.recipe.train.batch_size
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            out = model(x[idx])
            logits = torch.log(out.clamp_min(1e-12)) if probabilities else out
            loss = torch.nn.functional.cross_entropy(logits, y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
