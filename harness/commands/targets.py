"""`harness targets`: list targets and probe their health."""
from __future__ import annotations

import json

from harness.core.errors import LibraryMissing


def register(subparsers) -> None:
    p = subparsers.add_parser("targets", help="list targets, or probe one device's health",
                              description="List the targets in targets/ or, with --probe, connect to each named "
                                          "target and print its health probe: Python, numpy, runtimes and "
                                          "versions, CPU, memory, disk, governor and temperature.")
    p.add_argument("names", nargs="*", help="targets to show (default: all)")
    p.add_argument("--probe", action="store_true", help="connect and run the health probe")
    p.set_defaults(func=cmd_targets)


def cmd_targets(args) -> int:
    from harness.run import probe as device
    from harness.schema.targets import list_target_names, load_target
    from harness.run.transport import open_transport

    names = args.names or list_target_names()
    status = 0
    for name in names:
        target = load_target(name)
        where = "this machine" if target.is_local else f"{target.user}@{target.host}:{target.port}"
        print(f"{target.name:<14} {target.transport:<6} {where:<28} runtimes={','.join(target.runtimes)} "
              f"threads={target.threads} p99<={target.budgets.latency_p99_ms}ms "
              f"mem<={target.budgets.peak_memory_mb}MB")
        named = [c for c in target.runtime_configs if not (c.is_default and c.name == c.runtime)]
        for config in named:
            options = ", ".join(f"{k}: {v}" for k, v in config.options.items()) or "the runtime's defaults"
            print(f"{'':<14} {config.runtime}/{config.name}: {options}")
        if args.probe:
            try:
                transport = open_transport(target)
                try:
                    print(json.dumps(device.probe(transport, device.device_python(target, transport), fresh=True), indent=1))
                finally:
                    transport.close()
            except LibraryMissing as exc:  # this host cannot talk to the device; the device may be fine
                print(f"  not probed: {exc}")
            except Exception as exc:  # report each unreachable device, keep probing the others
                print(f"  unreachable: {exc}")
                status = 1
    return status
