#!/usr/bin/env bash
# Source this file: it creates (or refreshes) the project environment in .venv with the exact
# pins of requirements/lock.txt, torch held at the CPU build by requirements/constraints.txt,
# installs the recur package into it, and puts .venv/bin first on PATH. Idempotent: it
# reinstalls only when the lock, the constraints or pyproject.toml changed.
set -euo pipefail
RECUR_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$RECUR_ROOT/.venv"
stamp="$venv/.recur-env.sha256"
want=$(cat "$RECUR_ROOT/requirements/lock.txt" "$RECUR_ROOT/requirements/constraints.txt" \
  "$RECUR_ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  py="${PYTHON:-python3}"
  if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "recur needs Python >= 3.11 (found: $("$py" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 1
  fi
  echo "[bootstrap] creating $venv with pinned dependencies (once; about a minute)" >&2
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check torch==2.13.0
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c "$RECUR_ROOT/requirements/constraints.txt" -r "$RECUR_ROOT/requirements/lock.txt"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e "$RECUR_ROOT"
  echo "$want" >"$stamp"
fi
export PATH="$venv/bin:$PATH"
export PYTHONNOUSERSITE=1
