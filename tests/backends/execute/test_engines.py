"""The atlas execution engines: Ray tasks on a real local Ray instance give the local engine's
results, in order, lazily, with the shared objects stored once."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import ray  # a missing ray fails this module: the `test` extra installs it
import ray.cloudpickle
import torch

from support import ROOT

from interpgram.backends.execute.engines import keep_print, shutdown_ray, EngineError, LocalEngine, RayEngine, engine_for
from interpgram.backends.models import load_model

# The workers cannot import this test module (tests/ is not a package on their path): ship its
# functions and classes by value. interpgram itself is imported normally on the workers.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

REPO = str(ROOT)


@pytest.fixture(scope="module")
def ray_local():
    started = not ray.is_initialized()
    if started:
        keep_print()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        shutdown_ray(ray)


@pytest.fixture(scope="module")
def engine(ray_local):
    with RayEngine() as e:  # reuses the fixture's Ray: close() must leave it running
        yield e
    assert ray.is_initialized()


# ------------------------------------------------------------------ task functions (module level)

def forward(shared, seed):
    torch.manual_seed(seed)
    x = torch.rand(3, *shared["input_shape"])
    with torch.no_grad():
        out = shared["model"](x)
    return seed, out, torch.get_num_threads()


def sleep_then_stamp(shared, item):
    i, delay = item
    time.sleep(delay)
    return i, time.time()


def interval(shared, i):
    start = time.time()
    time.sleep(shared["sleep"])
    return i, start, time.time()


class Counted:
    """Appends one byte to a file each time it is pickled (deserialising does not count)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        with open(self.path, "ab") as f:
            f.write(b".")
        return (Counted, (self.path,))


def uses_counted(shared, i):
    return i, type(shared["counted"]).__name__, shared["counted"].path


def visible_devices(shared, i):
    return i, os.environ.get("CUDA_VISIBLE_DEVICES")


class Boom(Exception):
    pass


def fail_on_three(shared, i):
    if i == 3:
        raise Boom(f"bad item {i}")
    return i


# ------------------------------------------------------------------ tests

def test_ray_matches_local_on_a_real_model(engine):
    loaded = load_model("builtin:shapes-cnn")
    shared = {"model": loaded.module, "input_shape": (3, *loaded.preprocess.size)}
    seeds = list(range(6))
    local = list(LocalEngine().map(forward, seeds, shared=shared))
    remote = list(engine.map(forward, seeds, shared=shared, max_in_flight=3))
    assert [r[0] for r in remote] == seeds
    for (s, a, _), (t, b, threads) in zip(local, remote):
        assert s == t and a.shape == b.shape
        assert torch.equal(a, b), f"seed {s}: max |diff| {float((a - b).abs().max())}"
        assert threads == 1  # torch.set_num_threads(cpus_per_task) in the task
    # a handle put once serves several maps
    handle = engine.put(shared)
    again = list(engine.map(forward, seeds[:2], shared=handle))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(local, again))


def finish_after(shared, item):
    """Mark ``i`` done, but only after item ``after`` is marked (None: at once); the finish time."""
    i, after = item
    d = shared["dir"]
    end = time.monotonic() + 300
    while after is not None and not os.path.exists(os.path.join(d, str(after))) and time.monotonic() < end:
        time.sleep(0.01)
    t = time.time()
    open(os.path.join(d, str(i)), "w").close()
    return i, t


def test_results_in_order_when_tasks_finish_out_of_order(engine, tmp_path):
    # two tasks on the two CPUs: the first waits for the second to finish (no timing involved)
    out = list(engine.map(finish_after, [(0, 1), (1, None)], shared={"dir": str(tmp_path)}, max_in_flight=2))
    assert [i for i, _ in out] == [0, 1]
    assert out[0][1] >= out[1][1]  # they did finish out of order


def test_lazy_and_bounded(engine):
    pulled = []

    def items():
        for i in range(8):
            pulled.append(i)
            yield (i, 0.3 if i == 0 else 0.05)

    it = engine.map(sleep_then_stamp, items(), shared={}, max_in_flight=3)
    assert pulled == []  # nothing runs before the caller asks
    first = next(it)
    assert first[0] == 0
    # at most max_in_flight tasks submitted beyond what the engine has handed back (+1 for the
    # result just handed over): the item source is not drained ahead
    assert len(pulled) <= 3 + 1
    consumed = 1
    for i, _ in it:
        consumed += 1
        assert i == consumed - 1
        assert len(pulled) - consumed <= 3
    assert consumed == 8 and pulled == list(range(8))


def test_first_result_arrives_before_the_last_task_finishes(engine):
    items = [(i, 0.25 * i) for i in range(6)]
    got = []
    for i, finished in engine.map(sleep_then_stamp, items, shared={}, max_in_flight=2):
        got.append((i, time.time(), finished))
    first_seen = got[0][1]
    assert first_seen < max(f for _, _, f in got)


def test_max_in_flight_one_runs_tasks_one_at_a_time(engine):
    out = list(engine.map(interval, range(4), shared={"sleep": 0.2}, max_in_flight=1))
    assert [i for i, _, _ in out] == [0, 1, 2, 3]
    for (_, _, end), (_, start, _) in zip(out, out[1:]):
        assert start >= end  # 2 CPUs, yet never two tasks at once


INTERRUPT_SCRIPT = r"""
import json, os, signal, sys, threading, time

import ray

from interpgram.backends.execute.engines import RayEngine, keep_print, shutdown_ray

root, release = sys.argv[1], os.path.join(sys.argv[1], "release")


def mark_when_released(shared, item):
    i, free = item
    d = shared["dir"]
    open(os.path.join(d, "started", str(i)), "w").close()
    end = time.monotonic() + 300
    while not free and not os.path.exists(shared["release"]) and time.monotonic() < end:
        time.sleep(0.01)
    open(os.path.join(d, "done", str(i)), "w").close()
    return i


def phase(name):
    d = os.path.join(root, name)
    os.makedirs(os.path.join(d, "started"))
    os.makedirs(os.path.join(d, "done"))
    return d, {"dir": d, "release": release}


def wait_for(cond, what, timeout=120.0):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.01)


main = threading.main_thread().ident


def caller_waits_in_ray_get():
    f = sys._current_frames().get(main)
    while f is not None:
        if f.f_code.co_name == "get_objects":
            return True
        f = f.f_back
    return False


# Ctrl-C as a terminal delivers it: a shell's background job (no job control) starts with SIGINT ignored at
# the OS level, which this process inherits; Python then keeps the ignore, and os.kill below would do nothing
signal.signal(signal.SIGINT, signal.default_int_handler)
keep_print()
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
out = {}
try:
    with RayEngine() as engine:
        interrupted, shared = phase("interrupted")

        def ctrl_c_once_a_task_runs():
            wait_for(lambda: os.listdir(os.path.join(interrupted, "started")) and caller_waits_in_ray_get(),
                     "a task to start and the caller to wait for it in ray.get")
            os.kill(os.getpid(), signal.SIGINT)

        watcher = threading.Thread(target=ctrl_c_once_a_task_runs, daemon=True)
        watcher.start()
        try:
            for _ in engine.map(mark_when_released, [(i, False) for i in range(3)], shared=shared, max_in_flight=3):
                pass
            out["interrupt"] = "not raised"
        except KeyboardInterrupt:
            out["interrupt"] = "raised"
        watcher.join()

        stopped, shared = phase("stopped")
        it = engine.map(mark_when_released, [(0, True), (1, False), (2, False)], shared=shared, max_in_flight=3)
        out["first"] = next(it)
        it.close()

        open(release, "w").close()
        after, shared = phase("after")
        out["after"] = sorted(engine.map(mark_when_released, [(i, True) for i in range(4)], shared=shared,
                                         max_in_flight=4))
        out["interrupted_done"] = os.listdir(os.path.join(interrupted, "done"))
        out["stopped_done"] = os.listdir(os.path.join(stopped, "done"))
finally:
    shutdown_ray(ray)
print(json.dumps(out))
"""


def test_interrupt_and_early_stop_cancel_pending_tasks(tmp_path):
    """A Ctrl-C while the caller waits on running tasks, and a caller that stops iterating early, cancel
    every task still pending: none of them ever finishes, even once nothing holds them back. The
    interrupt is sent from an explicit point (a task has started, and the caller's main thread is blocked
    in ray.get: its stack reaches Ray's Worker.get_objects), never by a timer, so no load on the machine
    changes what it interrupts. It runs in a process of its own with its own Ray and Python's own Ctrl-C
    handler: a real Ctrl-C is process-wide, and a suite started as a shell's background job inherits
    SIGINT ignored (the in-process version then hung in ray.get for the tasks' 300 s bound)."""
    script = tmp_path / "interrupt.py"
    script.write_text(INTERRUPT_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "RAY_TQDM_PATCH_PRINT": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["interrupt"] == "raised"
    assert out["first"] == 0
    # tasks on every CPU, queued after the cancelled ones: once they ran, a leftover would have too
    assert out["after"] == [0, 1, 2, 3]
    assert out["interrupted_done"] == []
    assert out["stopped_done"] == ["0"]


def test_shared_is_serialised_once(engine, tmp_path):
    path = str(tmp_path / "pickles")
    shared = {"counted": Counted(path), "blob": torch.zeros(1000)}
    out = list(engine.map(uses_counted, range(8), shared=shared, max_in_flight=4))
    assert out == [(i, "Counted", path) for i in range(8)]
    with open(path, "rb") as f:
        assert f.read() == b"."  # once for ray.put, not once per task
    assert list(LocalEngine().map(uses_counted, range(2), shared=shared)) == [(0, "Counted", path), (1, "Counted", path)]
    with open(path, "rb") as f:
        assert f.read() == b"."  # the local engine does not pickle


def test_task_exception_keeps_type_and_message(engine):
    got = []
    with pytest.raises(Boom, match="bad item 3") as ei:
        for r in engine.map(fail_on_three, range(8), shared={}, max_in_flight=4):
            got.append(r)
    assert got == [0, 1, 2]  # the items before the failing one, as the local engine gives them
    notes = "\n".join(getattr(ei.value, "__notes__", []))
    assert "item 3" in notes and "fail_on_three" in notes
    with pytest.raises(Boom, match="bad item 3") as li:
        list(LocalEngine().map(fail_on_three, range(8), shared={}))
    assert "item 3" in "\n".join(getattr(li.value, "__notes__", []))
    # the engine still works after a failure
    assert list(engine.map(fail_on_three, range(3), shared={})) == [0, 1, 2]


def test_gpus_on_a_cpu_cluster_run_on_cpu(engine):
    assert engine.resources().get("GPU", 0) == 0
    out = list(engine.map(visible_devices, range(3), shared={}, gpus=1))  # num_gpus=0: schedulable
    assert out == [(0, ""), (1, ""), (2, "")]  # a task without a reserved GPU sees none


def test_engine_for():
    assert isinstance(engine_for(None), LocalEngine)
    assert isinstance(engine_for({"engine": "local"}), LocalEngine)

    class Execution:
        engine = "nope"

    with pytest.raises(EngineError, match="unknown execution engine 'nope'"):
        engine_for(Execution())
    with pytest.raises(EngineError, match="needs execution.engine: ray"):
        engine_for({"engine": "local", "address": "ray://x:10001"})
    with pytest.raises(ValueError):
        LocalEngine().map(fail_on_three, [], shared={}, max_in_flight=0)


def test_engine_for_ray_reuses_running_ray(ray_local):
    class Execution:
        engine = "ray"
        address = None

    e = engine_for(Execution())
    assert isinstance(e, RayEngine) and not e.started
    e.close()
    assert ray.is_initialized()


def test_missing_ray_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(EngineError, match=r"pip install 'interpgram\[ray\]'"):
        RayEngine()


def _python(code: str, timeout: float) -> dict:
    """Run code in a fresh interpreter (no Ray initialised there) and return its last JSON line."""
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       timeout=timeout, cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_bad_address_fails_fast_with_engine_error():
    out = _python("""
        import json, socket, time
        from interpgram.backends.execute.engines import EngineError, RayEngine
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()  # free port
        res = {}
        for addr in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
            t = time.time()
            try:
                RayEngine(addr)
                res[addr] = ["connected", time.time() - t]
            except EngineError as e:
                res[addr] = [str(e), time.time() - t]
        import ray
        res["initialized"] = ray.is_initialized()
        print(json.dumps(res))
    """, timeout=120)
    assert out.pop("initialized") is False
    for addr, (msg, seconds) in out.items():
        assert addr in msg, msg
        assert seconds < 30


def test_own_local_instance_is_shut_down_on_close():
    out = _python("""
        import json, ray
        from interpgram.backends.execute.engines import RayEngine
        with RayEngine(num_cpus=1, ray_init={"include_dashboard": False, "log_to_driver": False}) as e:
            started = e.started
            cpus = e.resources()["CPU"]
            out = list(e.map(lambda s, i: i * s["k"], range(3), shared={"k": 2}))
        print(json.dumps({"started": started, "cpus": cpus, "out": out, "after": ray.is_initialized()}))
    """, timeout=120)
    assert out == {"started": True, "cpus": 1.0, "out": [0, 2, 4], "after": False}


def test_shutting_ray_down_keeps_the_builtin_print():
    """ray.shutdown() leaves a Python safe_print in builtins, which breaks every later numba compile
    that types print (UMAP's layouts); shutdown_ray puts the built-in back."""
    code = ("import builtins, ray\nfrom interpgram.backends.execute.engines import shutdown_ray\n"
            "p = builtins.print\nray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)\n"
            "shutdown_ray(ray)\nimport sys\nsys.stdout.write(str(builtins.print is p))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.stdout.strip().endswith("True"), out.stdout + out.stderr


def test_a_running_ray_engine_keeps_the_builtin_print():
    """While Ray runs, showing worker logs creates its progress-bar manager, which also swaps print
    (the CI failure after test_ray_engine_gives_the_local_results: a UMAP layout later in the same
    process). A RayEngine turns that patch off before Ray starts; here the manager is created the way
    Ray's log printing creates it, and print must still be the built-in."""
    code = ("import builtins, sys\nfrom interpgram.backends.execute.engines import RayEngine\n"
            "p = builtins.print\neng = RayEngine(num_cpus=1)\n"
            "from ray.experimental import tqdm_ray\ntqdm_ray.instance().hide_bars()\n"
            "kept = builtins.print is p\neng.close()\nsys.stdout.write(str(kept and builtins.print is p))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.stdout.strip().endswith("True"), out.stdout + out.stderr
