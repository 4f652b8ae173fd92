"""`harness farm`: start, stop and inspect the simulated device farm; profile every target at once."""
from __future__ import annotations

from pathlib import Path

from harness.commands.arguments import integer


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "farm", help="the device farm: simulated devices on this machine, and profiling every target at once",
        description="`farm up` starts simulated devices on this machine (one OpenSSH server each on 127.0.0.1, "
                    "with its own keys, CPU pinning, cgroup CPU quota and memory limit, and a device Python) and "
                    "writes targets/sim-*.yaml for them; `farm down` stops them; `farm status` lists them; "
                    "`farm run` profiles every target in parallel, one worker per device, into one report.")
    sub = p.add_subparsers(dest="farm_command", metavar="ACTION")
    up = sub.add_parser("up", help="start the simulated farm (restarts it if it runs)")
    up.add_argument("--devices", type=integer(1), default=None, metavar="N",
                    help="how many devices, cycling through the classes of --arch: sim-pi4, sim-jetson, sim-x86, "
                         "sim-pi4-2, ... (default: one of each)")
    up.add_argument("--arch", default="", metavar="ARCHS",
                    help="comma-separated architectures: x86_64 (this machine's stand-ins, the default), aarch64 "
                         "(sim-pi4-arm64 and sim-jetson-arm64: an arm64 Python under qemu-aarch64-static), or "
                         "x86_64,aarch64 for both, as cross-architecture parity needs")
    up.add_argument("--with", dest="extra", action="append", default=[], metavar="CLASS",
                    help="also start this opt-in device class: sim-intel-ovep (ONNX Runtime with OpenVINO's "
                         "execution provider, onnxruntime-openvino in its own venv)")
    _add_dirs(up)
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop the simulated farm and remove its generated targets")
    _add_dirs(down)
    down.set_defaults(func=cmd_down)
    status = sub.add_parser("status", help="list the simulated devices and whether they answer")
    _add_dirs(status)
    status.set_defaults(func=cmd_status)
    run = sub.add_parser("run", help="profile every target (or those given with -t) in parallel, one report",
                         description="Profile on every target in targets/ (or those given with -t) at once, one "
                                     "worker per device. A device that is unreachable or fails ends as failed "
                                     "rows in the report; the others go on.")
    from harness.commands.profile import add_run_options
    add_run_options(run)
    run.set_defaults(func=cmd_run)
    p.set_defaults(func=lambda args: (p.print_help(), 3)[1])  # no ACTION: a user error


def _add_dirs(p) -> None:
    from harness.farm import DEFAULT_ENVS_DIR, DEFAULT_STATE_DIR, DEFAULT_TARGETS_DIR
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                   help=f"keys, configs, logs and device directories (default {DEFAULT_STATE_DIR})")
    p.add_argument("--targets-dir", type=Path, default=DEFAULT_TARGETS_DIR,
                   help=f"where the generated target files go (default {DEFAULT_TARGETS_DIR}/)")
    p.add_argument("--envs-dir", type=Path, default=DEFAULT_ENVS_DIR,
                   help=f"cached device Python environments (default {DEFAULT_ENVS_DIR})")


def cmd_up(args) -> int:
    from harness.farm import farm_up
    farm = farm_up(args.devices, args.state_dir, args.targets_dir, args.envs_dir,
                   arches=[a for a in args.arch.split(",") if a.strip()], extra=args.extra)
    for d in farm.devices:
        print(f"{d.name:<17} 127.0.0.1:{d.port:<6} cpus={','.join(map(str, d.cpus)):<8} python={d.python}")
        for note in d.notes:
            print(f"{'':<17} note: {note}")
    print(f"farm up in {farm.started_s:.1f}s; profile with `make profile TARGET={farm.devices[0].name}` "
          f"or `harness farm run`; stop with `make farm-down`")
    return 0


def cmd_down(args) -> int:
    from harness.farm import farm_down
    stopped = farm_down(args.state_dir)
    print(f"stopped {', '.join(stopped)}" if stopped else f"no simulated farm recorded in {args.state_dir}")
    return 0


def cmd_status(args) -> int:
    from harness.farm import farm_status
    statuses = farm_status(args.state_dir)
    if not statuses:
        print(f"no simulated farm recorded in {args.state_dir}; start one with `make farm-up`")
        return 1
    for s in statuses:
        state = "up" if s.running and s.listening else "DOWN"
        print(f"{s.name:<17} {state:<5} 127.0.0.1:{s.port:<6} pid={s.pid:<8} cpus={','.join(map(str, s.cpus))} "
              f"target={s.target_file}")
    return 0 if all(s.running and s.listening for s in statuses) else 1


def cmd_run(args) -> int:
    """Every target (or the -t ones) through `harness profile`'s run: the pipeline dispatches one worker per device."""
    from harness.schema.targets import list_target_names
    from harness.commands.profile import cmd_profile
    if not args.target:
        args.target = list_target_names()
    args.resume = None
    return cmd_profile(args)
