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
# The README's arm example links an aarch64 .so with Debian's cross compiler. Installed where
# apt-get can run as root (or through sudo without a password); otherwise a note. Never fatal.
install_cross_compiler() {
    command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 && return 0
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo="none"; fi
    fi
    if command -v apt-get >/dev/null 2>&1 && [ "$sudo" != "none" ]; then
        echo "==> installing the aarch64 cross compiler (apt-get install g++-aarch64-linux-gnu)"
        if $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends g++-aarch64-linux-gnu \
            || { $sudo apt-get update && $sudo env DEBIAN_FRONTEND=noninteractive \
                 apt-get install -y --no-install-recommends g++-aarch64-linux-gnu; }; then
            return 0
        fi
    fi
    echo "setup: note: no aarch64 cross compiler (aarch64-linux-gnu-g++); 'graphopt compile --target arm'" >&2
    echo "       can still write a .tar; for a .so install it, e.g. 'sudo apt-get install g++-aarch64-linux-gnu'" >&2
}
install_cross_compiler || true

echo "==> graphopt demo"
"$PYTHON" -m graphopt.cli demo
