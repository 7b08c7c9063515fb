"""Crash-safe file writes and interpgram's cache location, shared by the cache, the report writer
and the training script. Imports nothing heavy (no torch), so writing a report does not load it."""
from __future__ import annotations

import os
from pathlib import Path


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
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(path.parent)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, text.encode("utf-8"))
