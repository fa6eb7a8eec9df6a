"""Atomic file output: write to a temporary file beside the target, then rename.

Readers see the old file or the whole new one, never a part; on failure the
temporary file is removed and the target is untouched.

Only regular files are written. An existing output that is a symbolic link, a
device, a FIFO, a socket or a directory is refused (`OutputPathError`) rather
than replaced: the rename would swap a device node or a link for a plain file
(as root, `-o /dev/null` would replace /dev/null). Symbolic links are refused,
not written through, because either reading of "write to a link" (replace
the link, or replace its target) silently destroys what the other expected,
and a link planted in a shared directory must not redirect a write. Name the
link's target to write there.

Temporary files are named `.<name>.<pid>.<random>.tmp<suffix>`. A write killed
before it could clean up (SIGKILL) leaves one; the next write to the same path
removes those of its exact pattern that are older than itself and whose writer
process is gone.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from graphopt.errors import GraphoptError

_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


class OutputPathError(GraphoptError, ValueError):
    """An output path that graphopt refuses to write (not a regular file, empty, ...)."""


def check_output_path(path: str | os.PathLike) -> Path:
    """`path` as a Path if `atomic_output` would write it; else OutputPathError.

    Cheap: call it before long work, so that a bad `-o` fails first.
    """
    _existing_regular(path)
    return Path(path)


def _existing_regular(path: str | os.PathLike) -> os.stat_result | None:
    """The stat of the regular file at `path`, None if there is none; refuses anything else."""
    text = os.fspath(path)
    if not text:
        raise OutputPathError("the output path is empty")
    if text.endswith(os.sep):
        raise OutputPathError(f"cannot write '{text}': the path names a directory; give a file name")
    try:
        st = os.lstat(text)
    except FileNotFoundError:
        return None
    for test, kind in _KINDS:
        if test(st.st_mode):
            hint = ""
            if stat.S_ISLNK(st.st_mode):
                kind, hint = f"{kind} to '{os.readlink(text)}'", "; name its target to write there"
            raise OutputPathError(f"refusing to write '{text}': it is {kind}, not a regular file{hint}")
    return st


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds it replaces `path`.

    For writers that want a file name (linkers, exporters). An existing file keeps
    its permission bits, setuid/setgid/sticky excepted (its owner becomes the writer); a new one gets the mode a
    plain open() would give (0666 less the umask; 0777 if made executable).
    """
    started = time.time()
    _existing_regular(path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path, started)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        old = _existing_regular(path)  # again: the target may have changed during the write
        if old is not None:
            mode = stat.S_IMODE(old.st_mode) & 0o777
        else:
            mode = (0o777 if os.stat(tmp).st_mode & 0o100 else 0o666) & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (and durably: fsync before the rename)."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def _remove_stale_temporaries(path: Path, before: float) -> None:
    """Remove temporaries of `path` left by dead writers that started before `before`."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[a-z0-9_]+\.tmp{re.escape(path.suffix)}")
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if not m or _process_exists(int(m.group(1))):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_mtime < before:
                os.unlink(entry.path)
        except OSError:  # gone already, or not ours to remove
            pass


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process, or a pid we cannot ask about
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
