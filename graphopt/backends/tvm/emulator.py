"""Run aarch64 code on an x86_64 host: a TVM RPC server in an emulated arm64 root.

``scripts/setup_aarch64_emulator.sh`` builds the root (Debian arm64 with the
same apache-tvm / apache-tvm-ffi as the host, in a venv at /opt/tvmenv) under
the cache directory. This module finds that root and starts
``python -m tvm.exec.rpc_server`` inside it:

* ``chroot`` mode (binfmt_misc registered for aarch64, running as root): the
  server runs chrooted into the root; the kernel hands arm64 binaries to qemu.
* ``qemu`` mode (no binfmt): the root's python3.11 runs under
  ``qemu-aarch64-static -L ROOT``; the server runs in-process, since its usual
  helper subprocess cannot exec an arm64 binary without binfmt.

Emulated code is ~10x slower than native: use it for correctness and relative
comparisons, never for absolute ARM timings.

Settings: the cache directory is ``$GRAPHOPT_CACHE`` if set, else
``~/.cache/graphopt`` (resolved only in :func:`cache_dir`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .rpc import TrackerLike, free_port, tracker_address

SETUP_COMMAND = "scripts/setup_aarch64_emulator.sh"
_ROOT_NAME = "aarch64-root"
_VENV = "opt/tvmenv"
_ROOT_STAMP = ".graphopt-root-stamp"
_ENV_STAMP = ".graphopt-env-stamp"
_BINFMT_ENTRY = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
_CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"

# Started under qemu mode: serve in this process (no popen worker subprocess).
_INPROCESS_SERVER = """\
import logging, sys
logging.basicConfig(level=logging.INFO)
from tvm.rpc.server import PopenRPCServerState
host, port, port_end, tracker, key = sys.argv[1:6]
addr = (tracker.rsplit(":", 1)[0], int(tracker.rsplit(":", 1)[1])) if tracker else None
state = PopenRPCServerState(host, int(port), int(port_end), tracker_addr=addr, key=key)
state.thread.join()
"""


def cache_dir() -> Path:
    """graphopt's cache directory: ``$GRAPHOPT_CACHE`` or ``~/.cache/graphopt``."""
    env = os.environ.get("GRAPHOPT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "graphopt"


def _is_complete(root: Path) -> bool:
    # The set-up script writes both stamps only after the phase succeeded.
    return (root / _ROOT_STAMP).is_file() and (root / _VENV / _ENV_STAMP).is_file()


def find_aarch64_root(cache: str | os.PathLike | None = None) -> Path | None:
    """The set-up arm64 root, or None when the set-up script has not completed."""
    root = (Path(cache) if cache is not None else cache_dir()) / _ROOT_NAME
    return root if _is_complete(root) else None


def binfmt_registered() -> bool:
    """Whether the kernel runs aarch64 ELF files through qemu (binfmt_misc)."""
    try:
        return _BINFMT_ENTRY.read_text().startswith("enabled")
    except OSError:
        return False


def _is_listening(port: int) -> bool:
    """Whether some socket listens on TCP ``port`` (read from /proc, so that no
    probe connection disturbs the server)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def _site_packages(root: Path) -> Path:
    found = sorted((root / _VENV / "lib").glob("python3*/site-packages"))
    if not found:
        raise RuntimeError(f"no venv site-packages under {root / _VENV}; run {SETUP_COMMAND}")
    return found[-1]


def _pick_mode(root: Path) -> str | None:
    venv_python = root / _VENV / "bin" / "python"
    if binfmt_registered() and os.geteuid() == 0 and venv_python.exists():
        return "chroot"
    if shutil.which("qemu-aarch64-static"):
        return "qemu"
    return None


def emulator_available(cache: str | os.PathLike | None = None) -> bool:
    """Whether an emulated aarch64 server can be started here."""
    root = find_aarch64_root(cache)
    return root is not None and _pick_mode(root) is not None


class Aarch64Emulator:
    """A TVM RPC server running in the emulated arm64 root.

    Use as a context manager (or call start()/stop()). Without a tracker,
    connect with ``rpc.connect(emu.host, emu.port)`` or :meth:`connect`.
    With a tracker, the server registers under ``key`` and is reached through
    the tracker (``connect_tracker(...).request(key)``; :meth:`connect` does that).

    ``port=None`` picks a free port. ``mode`` is "auto", "chroot" or "qemu"
    (see the module docstring). ``runtime_only`` loads only TVM's runtime
    library on the server (enough to load and run modules; starts ~3x faster
    under emulation); set it False for server-side compiler functions.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        tracker: TrackerLike | None = None,
        key: str = "aarch64",
        mode: str = "auto",
        runtime_only: bool = True,
        startup_timeout: float = 300.0,
    ):
        self.root = Path(root) if root is not None else cache_dir() / _ROOT_NAME
        if not _is_complete(self.root):
            raise RuntimeError(f"no complete emulated aarch64 root at {self.root}; run (as root): {SETUP_COMMAND}")
        if mode == "auto":
            picked = _pick_mode(self.root)
            if picked is None:
                raise RuntimeError(
                    "cannot run aarch64 binaries: binfmt_misc has no qemu-aarch64 entry and "
                    f"qemu-aarch64-static is not installed; run (as root): {SETUP_COMMAND}"
                )
            mode = picked
        if mode not in ("chroot", "qemu"):
            raise ValueError(f"mode must be 'auto', 'chroot' or 'qemu', not {mode!r}")
        self.mode = mode
        self.host = host
        self.port: int | None = None
        self.tracker = tracker_address(tracker) if tracker is not None else None
        self.key = key
        self.runtime_only = runtime_only
        self.startup_timeout = startup_timeout
        self._requested_port = port
        self._proc: subprocess.Popen | None = None
        self._logdir: tempfile.TemporaryDirectory | None = None
        self.log_path: Path | None = None

    # -- lifecycle --------------------------------------------------------------

    def _command(self, port: int, port_end: int) -> list[str]:
        tracker = f"{self.tracker[0]}:{self.tracker[1]}" if self.tracker else ""
        key = self.key if self.tracker else ""
        # Loading only libtvm_runtime (not the 240 MB compiler library) cuts the
        # emulated start-up by ~2/3; serving modules needs nothing more.
        env = ["TVM_USE_RUNTIME_LIB=1"] if self.runtime_only else []
        if self.mode == "chroot":
            chroot = shutil.which("chroot") or "/usr/sbin/chroot"
            cmd = [
                "env", "-i", "HOME=/root", "LANG=C.UTF-8", f"PATH=/{_VENV}/bin:{_CLEAN_PATH}", *env,
                chroot, str(self.root), f"/{_VENV}/bin/python", "-m", "tvm.exec.rpc_server",
                "--host", self.host, "--port", str(port), "--port-end", str(port_end),
            ]  # fmt: skip
            if tracker:
                cmd += ["--tracker", tracker, "--key", key]
            return cmd
        return [
            "env", "-i", "LANG=C.UTF-8", f"PATH={_CLEAN_PATH}", *env,
            f"PYTHONPATH={_site_packages(self.root)}",
            shutil.which("qemu-aarch64-static") or "qemu-aarch64-static",
            "-L", str(self.root), str(self.root / "usr/bin/python3.11"),
            "-c", _INPROCESS_SERVER, self.host, str(port), str(port_end), tracker, key,
        ]  # fmt: skip

    def start(self) -> Aarch64Emulator:
        """Start the server and wait until it accepts connections."""
        if self._proc is not None:
            return self
        if self._requested_port is not None:
            port, port_end = self._requested_port, self._requested_port + 1
        else:
            port = free_port(self.host)
            port_end = min(port + 100, 65536)
        self._logdir = tempfile.TemporaryDirectory(prefix="graphopt-aarch64-rpc-")
        self.log_path = Path(self._logdir.name) / "server.log"
        with open(self.log_path, "wb") as log:
            # Own process group, so stop() reaches the server's children too.
            self._proc = subprocess.Popen(
                self._command(port, port_end),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.port = self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> int:
        deadline = time.monotonic() + self.startup_timeout
        bound = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"emulated aarch64 RPC server ({self.mode} mode) exited with code "
                    f"{self._proc.returncode}; log tail:\n{self.log_tail()}"
                )
            if bound is None:
                m = re.search(r"bind to \S+?:(\d+)", self.log_path.read_text(errors="replace"))
                bound = int(m.group(1)) if m else None
            if bound is not None and _is_listening(bound):
                return bound
            time.sleep(0.5)
        raise TimeoutError(
            f"emulated aarch64 RPC server ({self.mode} mode) did not accept connections within "
            f"{self.startup_timeout:.0f}s; log tail:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server and everything it started (its process group)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc is not None:
            # Children outliving the leader (a session fork) still hold the group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        self.port = None
        if self._logdir is not None:
            self._logdir.cleanup()
            self._logdir = None
            self.log_path = None

    def __enter__(self) -> Aarch64Emulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- use ----------------------------------------------------------------------

    def connect(self, session_timeout: float = 0):
        """An RPC session on the emulated device (through the tracker if one is set)."""
        from tvm import rpc

        if self._proc is None:
            raise RuntimeError("the emulated aarch64 server is not running; call start() first")
        if self.tracker is not None:
            client = rpc.connect_tracker(*self.tracker)
            return client.request(self.key, session_timeout=session_timeout)
        return rpc.connect(self.host, self.port, session_timeout=session_timeout)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's output."""
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def emulated_aarch64_server(
    port: int | None = None,
    tracker: TrackerLike | None = None,
    key: str = "aarch64",
    **kwargs,
) -> Iterator[Aarch64Emulator]:
    """Context manager: a running emulated aarch64 RPC server (``.host``, ``.port``).

    Extra keyword arguments go to :class:`Aarch64Emulator` (root, host, mode,
    startup_timeout).
    """
    with Aarch64Emulator(port=port, tracker=tracker, key=key, **kwargs) as emu:
        yield emu
