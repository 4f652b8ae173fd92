"""The one rule for names a user gives (targets, recipes, runtime configurations, devices): they become file
and directory names and cell ids, so they are plain."""
from __future__ import annotations

import re

#: letters, digits, '_', '.', '-'; starting with a letter or digit
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_valid_name(name: str) -> bool:
    return bool(NAME_PATTERN.match(name))
