"""backends/files.py on real files: FIFOs, symlink loops, read-only and full file systems, and a real
SIGKILL inside the atomic write window."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from support import ROOT
from interpgram.backends.files import (OutputError, atomic_write, atomic_write_text, check_output_dir,
                                       clean_stale_temps, open_regular, path_problem)



# ----------------------------------------------------------------------------- real file systems
def _mount_tmpfs(where: Path, *opts: str) -> bool:
    """A real tmpfs at ``where`` (root with CAP_SYS_ADMIN only); False when mounting is not allowed."""
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(opts) or "defaults", "tmpfs", str(where)],
                       capture_output=True, text=True)
    return r.returncode == 0


@pytest.fixture
def tmpfs(tmp_path):
    """Mount tmpfs file systems for one test (unmounted after it); skips where mounting is not allowed."""
    mounted: list[Path] = []

    def mount(name: str, *opts: str) -> Path:
        where = tmp_path / name
        if not _mount_tmpfs(where, *opts):
            pytest.skip("mounting a tmpfs needs root with CAP_SYS_ADMIN (a real read-only / full file system)")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _sysfs_dir() -> Path:
    """A folder under /sys: sysfs refuses to create files for everyone, root included."""
    p = Path("/sys/kernel")
    if not p.is_dir():
        pytest.skip("no /sys here (not Linux)")
    return p


# ----------------------------------------------------------------------------- path problems
def test_path_problem_names_what_the_path_is(tmp_path):
    (tmp_path / "ok.png").write_bytes(b"x")
    os.mkfifo(tmp_path / "pipe.png")
    os.symlink("loop-b", tmp_path / "loop-a")
    os.symlink("loop-a", tmp_path / "loop-b")
    os.symlink("nowhere.png", tmp_path / "dangling.png")
    (tmp_path / "dir.png").mkdir()
    assert path_problem(tmp_path / "ok.png") is None
    assert path_problem(tmp_path / "pipe.png")[0] == "fifo" and "named pipe" in path_problem(tmp_path / "pipe.png")[1]
    assert path_problem(tmp_path / "loop-a") == ("loop", path_problem(tmp_path / "loop-a")[1])
    assert "symlink loop" in path_problem(tmp_path / "loop-a")[1]
    assert path_problem(tmp_path / "dangling.png")[0] == "broken-link"
    assert "nowhere.png" in path_problem(tmp_path / "dangling.png")[1]
    assert path_problem(tmp_path / "missing.png") == ("missing", "was not found")
    assert path_problem(tmp_path / "dir.png")[0] == "folder"
    assert path_problem(Path("/dev/null"))[0] == "device"


def test_open_regular_refuses_a_fifo_without_waiting_for_a_writer(tmp_path):
    """In a child process with a generous limit: if opening blocked (no writer ever comes), the child
    would be killed by the timeout and the test fail, instead of hanging the suite."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    code = textwrap.dedent(f"""
        from interpgram.backends.files import open_regular
        try:
            open_regular({str(fifo)!r})
        except OSError as e:
            print("refused:", e.strerror)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "refused: is a named pipe (FIFO)" in r.stdout
    (tmp_path / "real.png").write_bytes(b"data")
    with open_regular(tmp_path / "real.png") as f:  # a regular file opens, in blocking mode
        assert os.get_blocking(f.fileno()) and f.read() == b"data"


# ----------------------------------------------------------------------------- the output probe
def test_probe_accepts_a_writable_folder_and_leaves_nothing(tmp_path):
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # nothing created for a folder that is not there yet
    check_output_dir(tmp_path)
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


def test_probe_refuses_a_folder_where_files_cannot_be_created():
    """sysfs refuses file creation to every user, root included: a real refusal, no permission bits."""
    with pytest.raises(OutputError, match=r"cannot create /sys/kernel/interpgram-out in /sys/kernel: "
                                          r"(permission denied|operation not permitted)"):
        check_output_dir(_sysfs_dir() / "interpgram-out")
    with pytest.raises(OutputError, match="choose another output folder"):
        atomic_write_text(_sysfs_dir() / "interpgram-report" / "index.html", "x")


def test_probe_refuses_a_read_only_file_system(tmpfs):
    ro = tmpfs("ro", "ro", "size=1m")
    with pytest.raises(OutputError, match="the file system is read-only"):
        check_output_dir(ro / "report")
    with pytest.raises(OutputError, match=f"cannot create the folder {ro}/report: the file system is read-only"):
        atomic_write_text(ro / "report" / "index.html", "<html>")


def test_chmod_read_only_folder_for_a_user_without_root(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes through chmod 0555; the sysfs and read-only tmpfs tests cover root")
    d = tmp_path / "locked"
    d.mkdir()
    d.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            check_output_dir(d)
    finally:
        d.chmod(0o755)


def test_probe_refuses_a_file_in_the_way(tmp_path):
    (tmp_path / "report").write_text("a file, not a folder")
    with pytest.raises(OutputError, match=r"report is a file, not a folder"):
        check_output_dir(tmp_path / "report")
    with pytest.raises(OutputError, match=r"report is a file, not a folder"):
        check_output_dir(tmp_path / "report" / "sub")


def test_full_disk_probe_and_write(tmpfs):
    full = tmpfs("full", "size=64k")
    filler = full / "filler"
    with open(filler, "wb", buffering=0) as f:  # fill it up for real
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    with pytest.raises(OutputError, match=r"no space left on the device \(the disk is full\)"):
        check_output_dir(full)
    filler.unlink()
    check_output_dir(full)  # 64 KiB free again: the probe passes

    (full / "index.html").write_text("the previous report")
    with pytest.raises(OutputError, match=r"cannot write .*index.html: no space left on the device"):
        atomic_write(full / "index.html", b"x" * (1 << 20))  # 1 MiB into 64 KiB: fails mid-write
    assert (full / "index.html").read_text() == "the previous report"  # the old one survives
    assert sorted(p.name for p in full.iterdir()) == ["index.html"]  # and no temp file is left


# ----------------------------------------------------------------------------- a kill in the write window
WRITER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import interpgram.backends.files as files

    def stop_in_window(src, dst):  # called where os.replace would move the temp file into place
        print("in-window", os.getpid(), flush=True)
        sys.stdin.read()  # blocks until the parent kills us (or closes stdin)
        raise SystemExit(3)

    files.os.replace = stop_in_window
    files.atomic_write_text(Path(sys.argv[1]), "the new report")
""")


def _writer_in_window(target: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # waits for the child to be inside the window: no sleep, no race
    assert line.startswith("in-window"), proc.stderr.read()
    return proc, int(line.split()[1])


def test_a_kill_inside_the_write_window_leaves_no_temp_file_for_good(tmp_path):
    target = tmp_path / "index.html"
    target.write_text("the previous report")
    proc, pid = _writer_in_window(target)
    tmp = tmp_path / f"index.html.tmp-{pid}"
    assert tmp.read_text() == "the new report"  # fully written and fsynced, not yet moved
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert target.read_text() == "the previous report"  # a kill never leaves a half-written report
    assert tmp.exists()  # SIGKILL runs no cleanup: the temp file is left behind ...
    atomic_write_text(target, "the next report")  # ... until the next write of the same file
    assert not tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html"]
    assert target.read_text() == "the next report"


def test_a_live_writers_temp_file_is_never_removed(tmp_path):
    target = tmp_path / "index.html"
    proc, pid = _writer_in_window(target)
    try:
        tmp = tmp_path / f"index.html.tmp-{pid}"
        atomic_write_text(target, "another writer")  # runs while the child is still inside its window
        assert tmp.read_text() == "the new report"  # the live process's file is untouched
        assert clean_stale_temps(target) == []
        assert target.read_text() == "another writer"
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert clean_stale_temps(target) == [tmp]  # once it is dead, it is stale


def test_only_this_files_temps_are_cleaned(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a pid that has exited
    for name in (f"index.html.tmp-{dead}", f"other.html.tmp-{dead}", f"index.html.tmp-{dead}x", "index.html.tmp-"):
        (tmp_path / name).write_text("x")
    atomic_write_text(tmp_path / "index.html", "ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["index.html", f"other.html.tmp-{dead}", f"index.html.tmp-{dead}x", "index.html.tmp-"])


# ----------------------------------------------------------------------------- render and the CLI
def test_render_checks_the_output_folder_before_loading_anything(tmp_path):
    """The spec's model weights are broken: if anything were loaded or computed before the output
    probe, that error would come first. The output error comes, so nothing ran before it."""
    from interpgram.backends.pipeline import render
    (tmp_path / "broken.safetensors").write_bytes(b"\0" * 10)
    spec = tmp_path / "s.yaml"
    spec.write_text("interpgram: 1\nmodel: {source: builtin:shapes-cnn, weights: broken.safetensors}\n"
                    "input: builtin:shapes/1\nelements:\n  a:\n    content: {activation: {layer: conv3, atom: spatial}}\n"
                    "    presentation: heatmap\n")
    (tmp_path / "out").write_text("a file where the report folder should go")
    with pytest.raises(OutputError, match="out is a file, not a folder"):
        render(spec, tmp_path / "out")


def test_cli_says_why_it_cannot_write_without_a_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "interpgram.backends.cli", "render", str(ROOT / "specs/shapes/demo.yaml"),
                        "-o", str(_sysfs_dir() / "interpgram-out"), "--no-cache", "-q"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert "error: cannot create /sys/kernel/interpgram-out in /sys/kernel" in r.stderr


def test_a_disk_that_fills_during_render_gives_a_clear_error_and_no_temp_file(tmpfs, tmp_path):
    """256 KiB free: the probe passes, the report (about a megabyte, Vega inlined) does not fit. The CLI
    says so without a traceback, and the folder holds no temp file afterwards."""
    small = tmpfs("small", "size=256k")
    spec = tmp_path / "s.yaml"
    spec.write_text("interpgram: 1\nmodel: builtin:shapes-cnn\ninput: builtin:shapes/1\nelements:\n  a:\n"
                    "    content: {activation: {layer: conv3, atom: spatial}}\n    presentation: heatmap\n")
    r = subprocess.run([sys.executable, "-m", "interpgram.backends.cli", "render", str(spec), "-o", str(small / "out"),
                        "--no-cache", "-q"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"cannot write {small}/out/index.html: no space left on the device" in r.stderr
    assert list((small / "out").iterdir()) == []
