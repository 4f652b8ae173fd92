"""Run the `harness` CLI in this process and record the process's own peak memory at exit.

    python -m harness.bench.controller PEAK.json [--preload-registries] -- profile --model digits_cnn ...

The host controller is this process; the device agents it starts are
separate processes, so this process's VmHWM at exit is exactly the
controller's own peak resident set size, agents excluded.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _vm_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def main(argv: list[str]) -> int:
    if "--" not in argv or not argv:
        print("usage: python -m harness.bench.controller PEAK.json [--preload-registries] -- HARNESS-ARGS...",
              file=sys.stderr)
        return 2
    split = argv.index("--")
    own, harness_args = argv[:split], argv[split + 1:]
    peak_path = Path(own[0])
    if "--preload-registries" in own:
        # Load the transport plugins before worker threads look them up (see harness.bench.scaling).
        from harness.run.transport import TRANSPORTS
        TRANSPORTS.names()
    from harness.cli import main as harness_main
    code = 2
    try:
        code = harness_main(harness_args)
    finally:
        hwm, rss = _vm_kib("VmHWM"), _vm_kib("VmRSS")
        peak_path.write_text(json.dumps({"exit_code": code, "peak_rss_bytes": hwm * 1024 if hwm else None,
                                         "final_rss_bytes": rss * 1024 if rss else None}))
    return code


if __name__ == "__main__":
    from harness.cli import end_process
    end_process(main(sys.argv[1:]))  # as the `harness` console script ends
