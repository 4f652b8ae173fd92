"""What the report needs to know about architectures: which targets were emulated, which
architecture each device ran, and every output array of each cell (for cross-architecture parity).

A target's facts come from, in order: the run's manifest (`target_specs`, what the target was
when the run was made), the TargetSpecs the caller passes, today's targets/<name>.yaml. A
device's architecture is what its probe reported (`platform.machine()`), before any of those.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, FrozenSet, Mapping, Optional, Sequence

import numpy as np

from harness.judge.evaluate import read_outputs

from harness.core.errors import HarnessError
from harness.schema.rundir import RunDir
from harness.schema.targets import TARGETS_DIR, TargetSpec, load_target

log = logging.getLogger("harness.report")


def _target_field(name: str, field: str, manifest: Mapping[str, Any], targets: Mapping[str, TargetSpec] | None,
                  targets_dir: Path) -> Optional[Any]:
    for spec in manifest.get("target_specs") or []:
        if isinstance(spec, Mapping) and spec.get("name") == name:
            return spec.get(field)
    if targets and name in targets:
        return getattr(targets[name], field)
    try:
        return getattr(load_target(name, targets_dir), field)
    except HarnessError:
        return None


def emulated_targets(target_names: Sequence[str], manifest: Mapping[str, Any],
                     targets: Mapping[str, TargetSpec] | None = None,
                     targets_dir: Path = TARGETS_DIR) -> FrozenSet[str]:
    """The targets whose device Python ran under an emulator (TargetSpec.emulated)."""
    return frozenset(n for n in target_names if _target_field(n, "emulated", manifest, targets, targets_dir) is True)


def target_arches(target_names: Sequence[str], devices: Mapping[str, Mapping[str, Any]],
                  manifest: Mapping[str, Any], targets: Mapping[str, TargetSpec] | None = None,
                  targets_dir: Path = TARGETS_DIR) -> Dict[str, str]:
    """Each target's architecture: what its probe reported, else what its target file says."""
    arches: Dict[str, str] = {}
    for name in target_names:
        machine = (devices.get(name) or {}).get("machine")
        arch = machine or _target_field(name, "arch", manifest, targets, targets_dir)
        if arch:
            arches[name] = str(arch)
    return arches


def load_all_outputs(run_dir: RunDir, cell_ids: Sequence[str]) -> Dict[str, Dict[str, np.ndarray]]:
    """Every array each cell kept (outputs/<cell_id>.npz), by key: one per model output."""
    outputs: Dict[str, Dict[str, np.ndarray]] = {}
    for cell in cell_ids:
        path = run_dir.outputs_path(cell)
        if not path.exists():
            continue
        try:
            arrays = read_outputs(path)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("cannot read outputs %s: %s", path, exc)
            continue
        # Outputs whose size varies per sample (detections) are compared by the cells' own parity columns.
        arrays = {k: v for k, v in arrays.items() if not isinstance(v, list)}
        if arrays:
            outputs[cell] = arrays
    return outputs
