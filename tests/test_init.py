"""`harness init` writes the layout a team commits; the templates are the harness's own files."""
from __future__ import annotations

import filecmp
from pathlib import Path

from harness.cli import main
from harness.commands.init import TEMPLATES
from harness.schema.targets import load_target

ROOT = Path(__file__).resolve().parents[1]


def test_templates_are_this_repository_s_own_files():
    for template in TEMPLATES.rglob("*.yaml"):
        own = ROOT / template.relative_to(TEMPLATES)
        assert own.exists() and filecmp.cmp(template, own, shallow=False), f"{own} and {template} differ"


def test_init_writes_a_layout_that_loads_and_keeps_what_exists(tmp_path, capsys):
    (tmp_path / ".gitignore").write_text("build/\n")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "default.yaml").write_text("# ours\n")
    assert main(["init", str(tmp_path)]) == 0
    assert load_target("local", tmp_path / "targets").transport == "local"
    assert (tmp_path / "policies" / "default.yaml").read_text() == "# ours\n"   # never overwritten
    ignored = (tmp_path / ".gitignore").read_text().splitlines()
    assert ignored[0] == "build/" and ".harness/" in ignored and "reports/*/" in ignored
    assert main(["init", str(tmp_path)]) == 0                                   # a second run changes nothing
    assert (tmp_path / ".gitignore").read_text().splitlines() == ignored
    assert "kept" in capsys.readouterr().out
