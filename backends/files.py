"""Crash-safe file writes and interpgram's cache location, shared by the cache, the report writer
and the training script. Imports nothing heavy (no torch), so writing a report does not load it."""
from __future__ import annotations

import errno
import os
import re
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional


class OutputError(OSError):
    """An output file or folder that cannot be written (read-only, full, not a folder, ...); the
    message names the path, the reason and what to do. An :class:`OSError`, so code that degrades on
    an unwritable location (a cache) keeps working."""


_REASONS = {
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on the device (the disk is full)",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.ENAMETOOLONG: "the name is too long",
    errno.ELOOP: "the path is a symlink loop",
    errno.ENOENT: "a part of the path does not exist",
}


def _reason(e: OSError) -> str:
    return _REASONS.get(e.errno, e.strerror or str(e))


def output_error(path: Path, e: OSError, doing: str = "write") -> OutputError:
    return OutputError(f"cannot {doing} {path}: {_reason(e)}; choose another output folder (-o) or free space there")


def path_problem(path: Path) -> Optional[tuple[str, str]]:
    """Why ``path`` cannot be read as a regular file, as (kind, text), or None if it can be opened.

    kind is ``missing``, ``broken-link``, ``loop``, ``denied``, ``folder``, ``fifo``, ``device``,
    ``socket`` or ``other``; text completes a sentence that starts with the path. A named pipe or a
    device is refused because reading it would block or never end; a symlink loop is reported as a
    loop, not as "not found"."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "loop", "is a symlink loop (a chain of symbolic links that leads back to itself)"
        if e.errno == errno.ENOENT:
            if os.path.islink(path):
                return "broken-link", f"is a broken symbolic link (to {os.readlink(path)!r}, which does not exist)"
            return "missing", "was not found"
        if e.errno in (errno.EACCES, errno.EPERM):
            return "denied", "cannot be read (permission denied)"
        if e.errno == errno.ENOTDIR:
            return "missing", "was not found (a part of its path is a file, not a folder)"
        return "other", f"cannot be read ({_reason(e)})"
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "folder", "is a folder, not a file"
    if stat.S_ISFIFO(mode):
        return "fifo", "is a named pipe (FIFO), not a regular file (reading it would wait for a writer forever)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device", "is a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "socket", "is a socket, not a regular file"
    return "other", "is not a regular file"


def describe_path_problem(path: Path) -> Optional[str]:
    """The text of :func:`path_problem`, or None."""
    pr = path_problem(path)
    return pr[1] if pr else None


def open_regular(path: Path):
    """``path`` opened for binary reading, refusing anything but a regular file *after* opening it
    (``O_NONBLOCK``, so a named pipe swapped in after a check cannot block the open; ``fstat`` on the
    open descriptor, so nothing can change between the check and the read). Raises ``OSError`` with a
    clear ``strerror`` for a non-regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            pr = path_problem(path)
            raise OSError(errno.EINVAL, pr[1] if pr else "is not a regular file", str(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_output_dir(out_dir: Path) -> Path:
    """Fail fast, before any compute, if files cannot be created in ``out_dir`` (which need not exist
    yet: then its nearest existing ancestor must be a writable folder). The probe really creates,
    writes, fsyncs and removes a small file, so it works where permission bits say nothing (root,
    read-only mounts, a full disk). Creates nothing that stays. Returns ``out_dir``."""
    out_dir = Path(out_dir)
    probe_dir = out_dir
    while True:
        try:
            st = os.stat(probe_dir)
        except (FileNotFoundError, NotADirectoryError):  # not there yet, or a file in the way: look above
            parent = probe_dir.parent
            if parent == probe_dir:
                break
            probe_dir = parent
            continue
        except OSError as e:
            raise output_error(out_dir, e, "create the output folder") from None
        if not stat.S_ISDIR(st.st_mode):
            raise OutputError(f"cannot write into {out_dir}: {probe_dir} is a file, not a folder; "
                              "choose another output folder (-o)")
        break
    probe = probe_dir / f".interpgram-probe-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        what = "write into" if probe_dir == out_dir else f"create {out_dir} in"
        target = out_dir if probe_dir == out_dir else probe_dir
        raise OutputError(f"cannot {what} {target}: {_reason(e)}; choose another output folder (-o)") from None
    try:
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        except OSError as e:
            raise OutputError(f"cannot write into {probe_dir}: {_reason(e)}; choose another output folder (-o) "
                              "or free space there") from None
    finally:
        os.close(fd)
        try:
            os.unlink(probe)
        except OSError:
            pass  # a probe that cannot be removed is 4 KiB under a hidden name; the write itself worked
    return out_dir


_TMP = re.compile(r"\.tmp-(\d+)$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    except OSError:
        return True  # cannot tell (e.g. Windows semantics): keep the file
    return True


def clean_stale_temps(path: Path) -> list[Path]:
    """Remove ``<name>.tmp-<pid>`` files next to ``path`` left by processes that no longer run (a
    kill inside a write window); never one of a live process. Returns what was removed."""
    path = Path(path)
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    prefix = f"{path.name}.tmp-"
    for ent in entries:
        if not ent.name.startswith(prefix):
            continue
        m = _TMP.search(ent.name)
        if not m or ent.name != f"{prefix}{m.group(1)}" or _alive(int(m.group(1))):
            continue
        try:
            os.unlink(ent.path)
            removed.append(Path(ent.path))
        except FileNotFoundError:
            pass  # another process cleaned it first
        except OSError:
            pass  # not ours to remove (permissions): it is only clutter, the write goes on
    return removed


def default_root() -> Path:
    """The result cache folder: ``$INTERPGRAM_CACHE`` if set, else ``~/.cache/interpgram/results``."""
    env = os.environ.get("INTERPGRAM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "interpgram" / "results"


def fsync_path(path: Path) -> None:
    """fsync a file, or a folder to make a rename inside it durable (best effort: some systems
    cannot open folders)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows: directories cannot be opened; os.replace is still atomic there
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through ``<name>.tmp-<pid>`` in the same folder, fsync, ``os.replace``.

    Whatever happens (an exception, KeyboardInterrupt), the temporary file is removed and ``path``
    holds either its previous content or the new one, never a part.
    Temporary files of earlier writers that were killed inside the window (their pid no longer runs)
    are removed first. An ``OSError`` (read-only, full disk, ...) becomes an :class:`OutputError`
    naming ``path`` and the reason.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(path.parent, e, "create the folder") from None
    clean_stale_temps(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OutputError:
        raise
    except OSError as e:
        raise output_error(path, e) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # e.g. the folder became unreadable: the error above says why the write failed
    fsync_path(path.parent)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, text.encode("utf-8"))


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """An advisory exclusive lock on the file ``path``, created if missing (the cache's evictors and an
    atlas store's writers). Where fcntl is missing (Windows) it is a no-op: renames stay atomic there,
    so concurrent writers may at worst redo work."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
