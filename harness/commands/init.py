"""`harness init`: a starting layout a team commits in its own repository."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List

#: the files `harness init` writes, copied from the package (the harness's own repository holds the same files)
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
IGNORED = [".harness/", "reports/*/", "targets/sim-*.yaml"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "init", help="write a starting layout (targets/, policies/, .gitignore entries) into a directory",
        description="Write the files a team commits to run the harness from its own repository: targets/local.yaml "
                    "(this machine), targets/examples/ (a Raspberry Pi, a Jetson, an x86 box over SSH), "
                    "policies/default.yaml (the release gate) and .gitignore entries for the cache and reports. "
                    "Every command resolves targets/, models/, policies/, reports/ and .harness/ against the "
                    "directory it runs in. Existing files are never overwritten.")
    p.add_argument("directory", nargs="?", type=Path, default=Path("."), help="where to write (default: here)")
    p.set_defaults(func=cmd_init)


def cmd_init(args) -> int:
    root: Path = args.directory
    root.mkdir(parents=True, exist_ok=True)
    written: List[str] = []
    for template in sorted(TEMPLATES.rglob("*.yaml")):
        target = root / template.relative_to(TEMPLATES)
        if target.exists():
            print(f"kept     {target} (exists)")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(template.read_text())
        written.append(str(target))
        print(f"wrote    {target}")
    (root / "models").mkdir(exist_ok=True)
    gitignore = root / ".gitignore"
    lines = gitignore.read_text().splitlines() if gitignore.exists() else []
    missing = [entry for entry in IGNORED if entry not in lines]
    if missing:
        with gitignore.open("a") as out:
            out.write(("\n" if lines and lines[-1] else "") + "# edge-harness: build cache, run reports, simulated farm\n"
                      + "".join(f"{entry}\n" for entry in missing))
        print(f"updated  {gitignore} ({', '.join(missing)})")
    print("next: harness profile --model-file YOUR_MODEL --target local   (harness profile --help)", file=sys.stdout)
    return 0
