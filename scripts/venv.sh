#!/usr/bin/env bash
# make venv: create the virtual environment VENV with PYTHON, every extra, pinned by constraints.txt, unless its
# stamp (VENV/.installed) is newer than constraints.txt and setup.cfg, as a make rule on the stamp would.
# Usage: scripts/venv.sh PYTHON VENV. Both are used only as quoted words, never evaluated (see the Makefile).
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: scripts/venv.sh PYTHON VENV" >&2
  exit 3
fi
python=$1 venv=$2
stamp=$venv/.installed
if [ -f "$stamp" ] && ! [ constraints.txt -nt "$stamp" ] && ! [ setup.cfg -nt "$stamp" ]; then
  exit 0
fi
py=$venv/bin/python
test -x "$py" || "$python" -m venv -- "$venv"
echo "$py -m pip install -q --upgrade pip"
"$py" -m pip install -q --upgrade pip
# torch first, exactly the CPU build on disk; never let pip choose torch freely.
echo "$py -m pip install -q torch==2.13.0"
"$py" -m pip install -q torch==2.13.0
# the pinned environment: every extra, pinned by constraints.txt; build warnings shown only if it fails
"$py" -m pip install -q -e '.[all,test]' -c constraints.txt > "$venv/install.log" 2>&1 || { cat "$venv/install.log"; exit 1; }
touch "$stamp"
