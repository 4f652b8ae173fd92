"""The gate's verdict as JUnit XML: one testsuite per target, one testcase per check."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List


def junit_xml(result: Any) -> str:
    """JUnit XML: one testsuite per target, one testcase per check."""
    suites = ET.Element("testsuites", name="harness-gate", tests=str(len(result.checks)),
                        failures=str(len(result.violations)))
    by_target: Dict[str, List[Any]] = {}
    for check in result.checks:
        by_target.setdefault(check.target, []).append(check)
    for target in sorted(by_target):
        checks = by_target[target]
        suite = ET.SubElement(suites, "testsuite", name=f"gate.{target}", tests=str(len(checks)),
                              failures=str(sum(not c.passed and not c.skipped for c in checks)),
                              skipped=str(sum(c.skipped for c in checks)), errors="0")
        props = ET.SubElement(suite, "properties")
        for name, value in (("run_id", result.run_id), ("policy", result.policy_path),
                            ("baseline", result.baseline_id or "")):
            ET.SubElement(props, "property", name=name, value=value)
        for note in result.notes:
            ET.SubElement(props, "property", name="note", value=note)
        for check in checks:
            case = ET.SubElement(suite, "testcase", classname=f"gate.{target}.{check.rule}", name=check.subject)
            if check.skipped:
                ET.SubElement(case, "skipped", message=check.message)
            elif not check.passed:
                failure = ET.SubElement(case, "failure", message=check.message, type=check.rule)
                failure.text = f"[{target}] {check.rule}: {check.subject}: {check.message}"
            else:
                ET.SubElement(case, "system-out").text = check.message
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def write_junit(result: Any, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(junit_xml(result), encoding="utf-8")
    tmp.replace(path)
    return path
