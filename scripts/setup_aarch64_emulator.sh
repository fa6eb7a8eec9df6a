#!/usr/bin/env bash
# Set up an emulated aarch64 (arm64) Debian root with TVM inside it, so that
# code cross-compiled for aarch64 can run on an x86_64 host through TVM RPC
# under qemu user-mode emulation (see graphopt/backends/tvm/emulator.py).
#
# Idempotent and cached: every phase is skipped when its result is already in
# place. The root lives in ${GRAPHOPT_CACHE:-$HOME/.cache/graphopt}/aarch64-root
# (or --cache-dir); a root or venv without a matching stamp file is rebuilt.
#
# Usage (as root):
#   scripts/setup_aarch64_emulator.sh [--cache-dir DIR] [--mirror URL]
#                                     [--python PY] [--no-binfmt] [--force]
#
#   --cache-dir DIR  cache directory (default: $GRAPHOPT_CACHE or ~/.cache/graphopt)
#   --mirror URL     Debian mirror (default: the one this host's apt uses)
#   --python PY      host Python whose apache-tvm, apache-tvm-ffi and numpy
#                    versions the root gets (default: python3)
#   --no-binfmt      do not use binfmt_misc (also the automatic fallback when it
#                    cannot be registered): unpack the packages without running
#                    their scripts; the server then runs under
#                    `qemu-aarch64-static -L ROOT` instead of chroot
#   --force          rebuild the root and its venv from scratch
#
# Phases: packages, binfmt, root, wheels, venv, verify. Each prints its time.
# The packages phase also pip-installs tornado into the host Python if it is
# missing (the TVM RPC tracker needs it).
set -Eeuo pipefail

SUITE=bookworm
ROOT_FORMAT=1   # bump to force every cached root to be rebuilt
ENV_FORMAT=1    # bump to force every cached venv to be rebuilt
ROOT_PACKAGES=python3,python3-venv
HOST_PACKAGES=(qemu-user-static debootstrap gcc-aarch64-linux-gnu
               g++-aarch64-linux-gnu binutils-aarch64-linux-gnu)
VENV=/opt/tvmenv        # path inside the root
WHEELS=/opt/wheels      # path inside the root
ROOT_STAMP_NAME=.graphopt-root-stamp
ENV_STAMP_NAME=.graphopt-env-stamp

CACHE_DIR="${GRAPHOPT_CACHE:-$HOME/.cache/graphopt}"
MIRROR=""
HOST_PY=python3
USE_BINFMT=1
FORCE=0

log()  { printf '[setup-aarch64] %s\n' "$*"; }
die()  { printf '[setup-aarch64] ERROR: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --cache-dir) CACHE_DIR="${2:?--cache-dir needs a value}"; shift 2 ;;
        --mirror)    MIRROR="${2:?--mirror needs a value}"; shift 2 ;;
        --python)    HOST_PY="${2:?--python needs a value}"; shift 2 ;;
        --no-binfmt) USE_BINFMT=0; shift ;;
        --force)     FORCE=1; shift ;;
        -h|--help)   awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

[ "$(uname -m)" = x86_64 ] || die "this script sets up aarch64 emulation on an x86_64 host; this is $(uname -m)"
[ "$(id -u)" = 0 ] || die "must run as root (apt-get, mount, chroot); try: sudo $0 $*"

ROOT="$CACHE_DIR/aarch64-root"
SITE="$VENV/lib/python3.11/site-packages"
declare -a TIMINGS=()
PHASE_NAME="" PHASE_START=0

phase_begin() { PHASE_NAME="$1"; PHASE_START=$(date +%s.%N); log "== phase $1: $2"; }
phase_end() {
    local dt; dt=$(awk -v a="$PHASE_START" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
    TIMINGS+=("$PHASE_NAME=${dt}s${1:+ ($1)}")
    log "   phase $PHASE_NAME done in ${dt}s${1:+ ($1)}"
}
on_error() { die "phase '${PHASE_NAME:-startup}' failed (line $1); fix the cause above and rerun $0"; }
trap 'on_error $LINENO' ERR

# Run a command inside the root with a clean environment (host variables such
# as REQUESTS_CA_BUNDLE or PIP_FIND_LINKS must not leak into the root).
in_root() {
    env -i HOME=/root LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        /usr/sbin/chroot "$ROOT" "$@"
}

# Unmount anything left mounted below the root (an interrupted debootstrap
# leaves proc/sys mounted), deepest first, then delete it without crossing
# file systems.
remove_root() {
    local m
    for m in $(awk -v r="$ROOT/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do
        umount -l "$m" || die "cannot unmount $m; unmount it by hand and rerun"
    done
    rm -rf --one-file-system "$ROOT"
}

# The Debian mirror this host's apt uses for $SUITE (deb822 .sources files
# first, then one-line .list files).
detect_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk -v rel="$SUITE" '
            BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; suites = ""; types = ""; on = 1
                for (i = 1; i <= NF; i++) {
                    l = $i
                    if (l ~ /^[ \t]*#/) continue
                    if (l ~ /^URIs:/)    { sub(/^URIs:[ \t]*/, "", l); uris = l }
                    if (l ~ /^Suites:/)  { sub(/^Suites:[ \t]*/, "", l); suites = l }
                    if (l ~ /^Types:/)   { sub(/^Types:[ \t]*/, "", l); types = l }
                    if (l ~ /^Enabled:[ \t]*no/) on = 0
                }
                if (!on || types !~ /(^|[ \t])deb([ \t]|$)/) next
                n = split(suites, s, /[ \t]+/)
                for (j = 1; j <= n; j++)
                    if (s[j] == rel) { split(uris, u, /[ \t]+/); print u[1]; exit }
            }' "$f")
        [ -n "$uri" ] && { echo "${uri%/}"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk -v rel="$SUITE" '
            $1 == "deb" {
                i = 2
                if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == rel) { print $i; exit }
            }' "$f")
        [ -n "$uri" ] && { echo "${uri%/}"; return; }
    done
    echo "http://deb.debian.org/debian"
}

binfmt_works() {
    # A static aarch64 test binary proves that the kernel hands arm64 ELF
    # files to qemu (what chroot needs).
    local dir; dir=$(mktemp -d)
    printf 'int main(void){return 42;}\n' > "$dir/t.c"
    aarch64-linux-gnu-gcc -static -o "$dir/t" "$dir/t.c" 2>/dev/null || { rm -rf "$dir"; return 1; }
    local rc=0; "$dir/t" 2>/dev/null || rc=$?
    rm -rf "$dir"
    [ "$rc" = 42 ]
}

log "cache dir: $CACHE_DIR"
mkdir -p "$CACHE_DIR"

# Host TVM versions: the root must run the same ones (same RPC protocol).
HOST_VERSIONS=$("$HOST_PY" -c '
from importlib.metadata import version
print(version("apache-tvm"), version("apache-tvm-ffi"), version("numpy"))' 2>/dev/null) \
    || die "'$HOST_PY' has no apache-tvm / apache-tvm-ffi / numpy; install them first (pip install -e '.[tvm]')"
read -r TVM_VERSION FFI_VERSION NUMPY_VERSION <<<"$HOST_VERSIONS"
log "host: apache-tvm $TVM_VERSION, apache-tvm-ffi $FFI_VERSION, numpy $NUMPY_VERSION"

# ---------------------------------------------------------------- packages
phase_begin packages "Debian packages ${HOST_PACKAGES[*]}"
missing=()
for p in "${HOST_PACKAGES[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The TVM RPC tracker (graphopt.backends.tvm.rpc.start_tracker) needs tornado.
if ! "$HOST_PY" -c "import tornado" 2>/dev/null; then
    log "installing tornado into $HOST_PY"
    "$HOST_PY" -m pip install -q --root-user-action=ignore tornado
    missing+=(tornado)
fi
if [ ${#missing[@]} -gt 0 ]; then phase_end "installed ${missing[*]}"; else phase_end cached; fi

# ---------------------------------------------------------------- binfmt
phase_begin binfmt "register qemu-aarch64 with binfmt_misc"
MODE=extract
if [ "$USE_BINFMT" = 1 ]; then
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
            || log "warning: cannot mount binfmt_misc (not permitted here)"
    fi
    if [ -e /proc/sys/fs/binfmt_misc/register ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        conf=""
        for c in /usr/lib/binfmt.d/qemu-aarch64.conf /usr/share/binfmts/qemu-aarch64; do
            [ -f "$c" ] && { conf=$c; break; }
        done
        if [ "$conf" = /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
            cat "$conf" > /proc/sys/fs/binfmt_misc/register 2>/dev/null \
                || log "warning: cannot register qemu-aarch64 in binfmt_misc"
        elif [ -n "$conf" ] && command -v update-binfmts >/dev/null; then
            update-binfmts --enable qemu-aarch64 || log "warning: update-binfmts failed"
        else
            log "warning: no qemu-aarch64 binfmt definition found"
        fi
    fi
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
        && binfmt_works && MODE=chroot
    [ "$MODE" = chroot ] || log "warning: binfmt_misc unavailable; falling back to an extracted root run with qemu-aarch64-static -L"
else
    log "binfmt disabled by --no-binfmt"
fi
phase_end "mode=$MODE"

# ---------------------------------------------------------------- root
ROOT_STAMP="format=$ROOT_FORMAT suite=$SUITE arch=arm64 variant=minbase include=$ROOT_PACKAGES mode=$MODE"
phase_begin root "arm64 $SUITE root in $ROOT"
if [ "$FORCE" = 0 ] && [ "$(cat "$ROOT/$ROOT_STAMP_NAME" 2>/dev/null)" = "$ROOT_STAMP" ]; then
    phase_end cached
else
    [ -e "$ROOT" ] && { log "removing incomplete or outdated root"; remove_root; }
    [ -n "$MIRROR" ] || MIRROR=$(detect_mirror)
    log "mirror: $MIRROR"
    t0=$(date +%s)
    debootstrap --arch=arm64 --foreign --variant=minbase --include="$ROOT_PACKAGES" \
        "$SUITE" "$ROOT" "$MIRROR" > "$CACHE_DIR/debootstrap-stage1.log" 2>&1 \
        || { tail -n 20 "$CACHE_DIR/debootstrap-stage1.log" >&2; die "debootstrap first stage failed (log: $CACHE_DIR/debootstrap-stage1.log)"; }
    log "first stage done in $(( $(date +%s) - t0 ))s"
    cp /usr/bin/qemu-aarch64-static "$ROOT/usr/bin/"
    t0=$(date +%s)
    if [ "$MODE" = chroot ]; then
        log "second stage (runs emulated; several minutes)"
        in_root /debootstrap/debootstrap --second-stage > "$CACHE_DIR/debootstrap-stage2.log" 2>&1 \
            || { tail -n 20 "$CACHE_DIR/debootstrap-stage2.log" >&2; die "debootstrap second stage failed (log: $CACHE_DIR/debootstrap-stage2.log)"; }
    else
        # No binfmt: unpack the packages without running maintainer scripts.
        # Keep /lib, /bin... as the merged-/usr symlinks the first stage made.
        log "unpacking packages (no maintainer scripts)"
        for deb in "$ROOT"/var/cache/apt/archives/*.deb; do
            dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$ROOT" --keep-directory-symlink
        done
    fi
    log "second stage done in $(( $(date +%s) - t0 ))s"
    rm -f "$ROOT"/var/cache/apt/archives/*.deb
    echo "$ROOT_STAMP" > "$ROOT/$ROOT_STAMP_NAME"
    phase_end built
fi

# ---------------------------------------------------------------- wheels + venv
ENV_STAMP="format=$ENV_FORMAT apache-tvm=$TVM_VERSION apache-tvm-ffi=$FFI_VERSION numpy=$NUMPY_VERSION mode=$MODE"
if [ "$FORCE" = 0 ] && [ "$(cat "$ROOT$VENV/$ENV_STAMP_NAME" 2>/dev/null)" = "$ENV_STAMP" ]; then
    phase_begin wheels "aarch64 wheels"; phase_end cached
    phase_begin venv "venv $VENV"; phase_end cached
else
    phase_begin wheels "aarch64 wheels of apache-tvm==$TVM_VERSION apache-tvm-ffi==$FFI_VERSION"
    rm -rf "$ROOT$WHEELS" "$ROOT$VENV"
    mkdir -p "$ROOT$WHEELS"
    "$HOST_PY" -m pip download -q --no-deps --only-binary=:all: \
        --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
        --python-version 3.11 --implementation cp -d "$ROOT$WHEELS" \
        "apache-tvm==$TVM_VERSION" "apache-tvm-ffi==$FFI_VERSION" \
        "numpy==$NUMPY_VERSION" ml_dtypes "typing_extensions>=4.13" psutil cloudpickle \
        || die "pip download of the aarch64 wheels failed (is PyPI reachable?)"
    phase_end "$(ls "$ROOT$WHEELS" | wc -l) wheels"

    phase_begin venv "venv $VENV inside the root"
    # The host's pip unpacks the wheels into the venv (same Python 3.11, so the
    # byte code it compiles is valid there); pip under emulation is ~20x slower.
    if [ "$MODE" = chroot ]; then
        in_root python3 -m venv --without-pip "$VENV"
    fi
    "$HOST_PY" -m pip install -q --no-deps --only-binary=:all: \
        --platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
        --python-version 3.11 --implementation cp --root-user-action=ignore \
        --target "$ROOT$SITE" "$ROOT$WHEELS"/*.whl
    rm -rf "$ROOT$WHEELS"
    phase_end
fi

# ---------------------------------------------------------------- verify
# Import what the RPC server imports, with the runtime library only, as the
# server runs (graphopt.backends.tvm.emulator).
phase_begin verify "import the TVM RPC server under emulation"
CHECK='import cloudpickle, numpy, psutil, tvm, tvm_ffi
from tvm.rpc.server import PopenRPCServerState
print(tvm.__version__, tvm_ffi.__version__, numpy.__version__)'
if [ "$MODE" = chroot ]; then
    got=$(in_root /usr/bin/env TVM_USE_RUNTIME_LIB=1 "$VENV/bin/python" -c "$CHECK") \
        || die "importing tvm inside the root failed"
else
    got=$(env -i LANG=C.UTF-8 TVM_USE_RUNTIME_LIB=1 PYTHONPATH="$ROOT$SITE" \
          qemu-aarch64-static -L "$ROOT" "$ROOT/usr/bin/python3.11" -c "$CHECK") \
        || die "importing tvm under qemu-aarch64-static failed"
fi
got=${got##*$'\n'}   # last line: warnings may precede it
read -r got_tvm got_ffi got_np <<<"$got"
[ "$got_tvm $got_ffi $got_np" = "$TVM_VERSION $FFI_VERSION $NUMPY_VERSION" ] \
    || die "version mismatch: root has tvm/tvm-ffi/numpy $got_tvm/$got_ffi/$got_np, host has $TVM_VERSION/$FFI_VERSION/$NUMPY_VERSION; rerun with --force"
echo "$ENV_STAMP" > "$ROOT$VENV/$ENV_STAMP_NAME"
phase_end "tvm $got_tvm, tvm-ffi $got_ffi, numpy $got_np"

log "ready: $ROOT (mode=$MODE)"
log "timings: ${TIMINGS[*]}"
