#!/usr/bin/env bash
# Creates .venv with Python 3.12 and installs the pinned requirements, once.
#
# Why a stamp file: the stack is ~6 GB (torch, Airflow, lerobot); a second `make demo` or
# `make test` must not re-run pip. The stamp holds a hash of the requirement files, so editing
# them re-installs, and nothing else does.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP="$VENV/.requirements.sha256"

find_python312() {
  for candidate in python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    local version
    for version in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.|$)' | sort -rV); do
      if PYENV_VERSION="$version" pyenv which python3.12 >/dev/null 2>&1; then
        PYENV_VERSION="$version" pyenv which python3.12
        return 0
      fi
    done
  fi
  return 1
}

want="$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  if ! python="$(find_python312)"; then
    echo "error: Python 3.12 is required (lerobot 0.6 needs it) and none was found." >&2
    echo "Install it, for example 'pyenv install 3.12' or 'apt-get install python3.12 python3.12-venv'," >&2
    echo "then run this command again." >&2
    exit 1
  fi
  echo "Creating $VENV with $python"
  "$python" -m venv "$VENV"
fi

echo "Installing pinned requirements into $VENV (first run only; a few minutes)..."
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -r requirements.txt -r requirements-dev.txt
"$VENV/bin/python" -m pip install --quiet --no-deps -e .
echo "$want" >"$STAMP"
echo "Environment ready: $VENV"
