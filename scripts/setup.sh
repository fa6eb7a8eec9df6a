#!/usr/bin/env bash
# Install graphopt and every extra (TVM backend, scikit-learn data, test tools)
# into the current Python, then run the demo on the bundled digits CNN.
#
#   ./scripts/setup.sh            uses python3 (or $PYTHON)
#
# torch is pinned (torch==2.13.0, CPU is enough); everything comes from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

# Debian's own Python refuses pip installs (PEP 668): use a virtual environment there.
if "$PYTHON" - <<'PY'
import sys, sysconfig, pathlib
managed = pathlib.Path(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED").exists()
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)
PY
then
    echo "setup: $PYTHON is managed by the system (PEP 668); create a virtual environment first:" >&2
    echo "  python3 -m venv .venv && . .venv/bin/activate && ./scripts/setup.sh" >&2
    exit 1
fi

echo "==> installing graphopt with all extras (pip install -e '.[all]')"
"$PYTHON" -m pip install -e ".[all]"
echo "==> graphopt demo"
"$PYTHON" -m graphopt.cli demo
