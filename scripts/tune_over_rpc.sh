#!/usr/bin/env bash
# Tune for aarch64 through a TVM RPC tracker that serves two devices, on one
# machine: the standard TVM way to spread measurement over several devices.
#
#   1. a TVM RPC tracker on loopback
#   2. an RPC server for this x86 CPU, registered under key "x86"
#   3. the emulated aarch64 RPC server, registered under key "aarch64"
#      (needs scripts/setup_aarch64_emulator.sh, run once as root)
#   4. graphopt tune --target arm --rpc-tracker ... --rpc-key aarch64: candidates
#      are cross-compiled here and measured on the device behind the key
#   5. graphopt compile --target arm --db ...: the tuned aarch64 library, then
#      run on the aarch64 device through the tracker and checked against torch
#
# Every process started here is stopped on exit (also on errors and Ctrl-C).
# Takes ~6 min on a busy 2-core machine, mostly tuning (the emulated device
# runs code ~10x slower than native).
# With real boards, point their `python -m tvm.exec.rpc_server --tracker
# HOST:PORT --key KEY` at the tracker instead of starting servers here; with
# N boards under one key, `graphopt tune --rpc-workers N` measures on all.
#
# Usage: scripts/tune_over_rpc.sh [--trials N] [--work DIR] [--python PY]
#   --trials N   trial budget for the model (default 16)
#   --work DIR   where the model, tuning database and library go
#                (default: a new temporary directory)
#   --python PY  Python with graphopt installed (default: python3); the
#                graphopt commands run as `PY -m graphopt.cli`
set -Eeuo pipefail

TRIALS=16
WORK=""
PY=python3
HOST=127.0.0.1

while [[ $# -gt 0 ]]; do
    case "$1" in
        --trials) TRIALS="$2"; shift 2 ;;
        --work) WORK="$2"; shift 2 ;;
        --python) PY="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
WORK="${WORK:-$(mktemp -d -t graphopt-rpc-tune-XXXXXX)}"
mkdir -p "$WORK"

step() { printf '\n== %s\n' "$*"; }
# Shows a graphopt command as a user would type it, then runs it.
graphopt() {
    echo "\$ graphopt $*"
    "$PY" -m graphopt.cli "$@"
}

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || true   # each runs in its own process group
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts "$@" in the background in a process group of its own, logging to $WORK.
start() {
    local name="$1"; shift
    setsid "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=("$!")
}

"$PY" -c 'from graphopt.backends.tvm.emulator import emulator_available as ok; exit(not ok())' || {
    echo "no emulated aarch64 root here; run (as root): scripts/setup_aarch64_emulator.sh" >&2
    exit 1
}
PORT=$("$PY" -c 'from graphopt.backends.tvm.rpc import free_port; print(free_port())')

step "tracker on $HOST:$PORT, x86 server (key x86), emulated aarch64 server (key aarch64)"
start tracker "$PY" -m tvm.exec.rpc_tracker --host "$HOST" --port "$PORT" --port-end "$((PORT + 1))"
"$PY" - "$HOST" "$PORT" <<'EOF'
import socket, sys, time
deadline = time.monotonic() + 60
while True:
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("the tracker did not come up; see tracker.log")
        time.sleep(0.3)
EOF
start server-x86 "$PY" -m tvm.exec.rpc_server --host "$HOST" --port 9090 --port-end 9199 \
    --tracker "$HOST:$PORT" --key x86
EMULATED_SERVER=$(cat <<'EOF'
import signal, sys
from graphopt.backends.tvm.emulator import Aarch64Emulator
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
emu = Aarch64Emulator(tracker=(sys.argv[1], int(sys.argv[2])), key="aarch64").start()
print(f"emulated aarch64 server ({emu.mode} mode) on {emu.host}:{emu.port}", flush=True)
try:
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
finally:
    emu.stop()
EOF
)
start server-aarch64 "$PY" -c "$EMULATED_SERVER" "$HOST" "$PORT"
until "$PY" -c "from graphopt.backends.tvm.rpc import wait_for_keys as w
w(('$HOST', $PORT), ['x86', 'aarch64'], timeout=10)" 2>/dev/null; do
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || { echo "a server exited; logs in $WORK" >&2; exit 1; }
    done
done
"$PY" -m tvm.exec.query_rpc_tracker --host "$HOST" --port "$PORT"

step "a small ONNX model: $WORK/model.onnx (graphopt's digits_cnn, batch 1)"
"$PY" - "$WORK" <<'EOF'
import sys, warnings
import numpy as np, torch
from graphopt.models import get_model
work = sys.argv[1]
model, (x,) = get_model("digits_cnn")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.onnx.export(model, (x,), f"{work}/model.onnx", dynamo=False)
with torch.no_grad():
    np.savez(f"{work}/reference.npz", x=x.numpy(), y=model(x).numpy())
EOF

step "graphopt tune --target arm, measured on the device under key aarch64"
graphopt tune "$WORK/model.onnx" --target arm --db "$WORK/tuning-arm" \
    --trials "$TRIALS" --rpc-tracker "$HOST:$PORT" --rpc-key aarch64

step "graphopt compile --target arm --db $WORK/tuning-arm"
graphopt compile "$WORK/model.onnx" --target arm --db "$WORK/tuning-arm" \
    -o "$WORK/model-arm.so"

step "run model-arm.so on the device under key aarch64, compare with torch"
"$PY" - "$WORK" "$HOST" "$PORT" <<'EOF'
import sys
import numpy as np
from tvm import rpc
from graphopt import load_compiled
work, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
ref = np.load(f"{work}/reference.npz")
model = load_compiled(f"{work}/model-arm.so")
session = rpc.connect_tracker(host, port).request("aarch64", session_timeout=120)
y = model.run_remote(session, ref["x"])
err = float(np.abs(y - ref["y"]).max())
print(f"{model!r}: output {y.shape}, max |aarch64 - torch| = {err:.2e}")
sys.exit(0 if err <= 1e-4 else "the aarch64 output does not match torch")
EOF

step "done; files in $WORK (servers stop now)"
ls "$WORK"
