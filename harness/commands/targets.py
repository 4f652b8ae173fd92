"""`harness targets`: list targets and probe their health."""
from __future__ import annotations

import json
import time
from typing import Any, Dict, Optional

from harness.core.errors import ConfigError, DeviceBusy, HarnessError, LibraryMissing, TransportError


def register(subparsers) -> None:
    from harness.commands.arguments import number
    p = subparsers.add_parser("targets", help="list targets, or probe one device's health",
                              description="List the targets in targets/ or, with --probe, connect to each named "
                                          "target and print its health probe: Python, numpy, runtimes and "
                                          "versions, CPU, memory, disk, governor and temperature.")
    p.add_argument("names", nargs="*", help="targets to show (default: all)")
    p.add_argument("--probe", action="store_true", help="connect and run the health probe")
    p.add_argument("--cache", action="store_true",
                   help="connect and list each device's cache: entries, bytes, oldest and newest use, free space")
    p.add_argument("--verify", action="store_true", help="with --cache: check every entry's sha256, evict bad ones")
    p.add_argument("--prune", action="store_true",
                   help="with --cache: evict the entries no run in progress needs (all, or see --older-than)")
    p.add_argument("--older-than", type=number(0), default=0.0, metavar="DAYS",
                   help="with --prune: only entries last used more than DAYS ago")
    p.add_argument("--wait", type=number(0), default=0.0, metavar="SECONDS",
                   help="with --cache: wait this long for a device another run has locked (default: say busy)")
    p.set_defaults(func=cmd_targets)


def cmd_targets(args) -> int:
    from harness.run import probe as device
    from harness.schema.targets import list_target_names, load_target
    from harness.run.transport import open_transport

    if (args.verify or args.prune) and not args.cache:
        raise ConfigError("--verify/--prune", "they work on the device's cache: add --cache")
    if args.older_than and not args.prune:
        raise ConfigError("--older-than", "DAYS says which entries --prune evicts: add --cache --prune")
    if args.older_than < 0 or args.wait < 0:
        raise ConfigError("--older-than/--wait", "must be 0 or more")
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
        if args.cache:
            status = max(status, show_cache(target, args))
    return status


def show_cache(target, args) -> int:
    """`--cache`: the device's cache (and --verify / --prune), under its lock; 1 when it is busy or unreachable."""
    from harness.run import probe as device
    from harness.run.storage import DeviceCache
    from harness.run.transport import open_transport

    try:
        transport = open_transport(target)
    except LibraryMissing as exc:
        print(f"  cache not read: {exc}")
        return 0
    except HarnessError as exc:
        print(f"  unreachable: {exc}")
        return 1
    try:
        cache = DeviceCache.of(target, transport, device.device_python(target, transport), device.ensure_agent(transport))
        if args.verify:
            answer = cache.verify(args.wait)
            checked, bad = answer["verify"]["checked"], answer["verify"]["bad"]
            print(f"  verified {checked} entr{'y' if checked == 1 else 'ies'}: " +
                  (f"{len(bad)} bad, evicted: " + "; ".join(f"{b['key'][:12]} ({', '.join(b['problems'])})"
                                                          for b in bad) if bad else "all match their sha256"))
        elif args.prune:
            answer = cache.prune(args.older_than, args.wait)
            evicted = answer["evicted"]
            print(f"  pruned {len(evicted)} entr{'y' if len(evicted) == 1 else 'ies'} "
                  f"({_size(answer['freed_bytes'])})" + (f" unused for more than {args.older_than:g} days"
                                                         if args.older_than else ""))
            answer = answer["state"]
        else:
            answer = cache.list(args.wait)
        print(cache_text(answer))
        return 0
    except DeviceBusy as exc:
        print(f"  busy: {exc}. Nothing was read or changed; try again later or pass --wait SECONDS")
        return 1
    except TransportError as exc:
        print(f"  cache not read: {exc}")
        return 1
    finally:
        transport.close()


def _size(n: Optional[float]) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return ""


def _when(epoch: Optional[float]) -> str:
    return "never" if epoch is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))


_PINNED = {"agent": "  [the agent: never evicted]", "run": "  [needed by a run in progress: not evicted]"}


def cache_text(state: Dict[str, Any]) -> str:
    """The cache's summary line and one line per entry, least recently used first."""
    budget = state.get("budget") or {}
    lines = [f"  cache {state.get('workdir')}/cache: {state.get('n_entries')} entries, {_size(state.get('bytes'))} "
             f"of a {_size(budget.get('max_bytes'))} budget ({'cache_max_bytes' if budget.get('max_bytes_from') == 'target' else 'default'}); "
             f"oldest use {_when(state.get('oldest_use'))}, newest {_when(state.get('newest_use'))}; "
             f"{_size(state.get('free_bytes'))} free of {_size(state.get('total_bytes'))} "
             f"(keeps {_size(budget.get('keep_free_bytes'))} free)"]
    if state.get("suspect"):
        lines.append(f"  STORAGE SUSPECT: {state['suspect'].get('reason')} (marked {state['suspect'].get('marked_at')})")
    for entry in sorted(state.get("entries", []), key=lambda e: e["last_used"]):
        what = ", ".join(entry["files"] or entry.get("what") or []) or entry["kind"]
        lines.append(f"    {entry['key'][:16]:<16} {_size(entry['bytes']):>10}  last used {_when(entry['last_used'])}  "
                     f"{what}{_PINNED.get(entry.get('pinned'), '')}")
    return "\n".join(lines)
