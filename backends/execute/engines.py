"""Where atlas work runs: in this process (``local``) or as Ray tasks on a cluster (``ray``).

Collection and icon rendering call one interface::

    for result in engine.map(fn, items, shared={"model": module, ...}, gpus=1):
        write(result)            # results come in the order of ``items``, as they arrive

``fn(shared, item)`` is a module-level function. ``shared`` holds the large read-only objects every
call needs (the model on CPU, settings); the Ray engine puts it into the object store once per
``map`` (or once for several maps with ``engine.put``) and every task receives it by reference.

Ray does all the scheduling: ``num_cpus``/``num_gpus`` per task place the work on workers with
the resources, ``ray.get`` of the oldest task keeps the order, and a window of at most
``max_in_flight`` submitted tasks bounds memory. Nothing here schedules on its own.

Ray engine notes
- ``RayEngine()`` starts (or reuses) a local Ray instance; ``RayEngine("ray://head:10001")``,
  ``RayEngine("head:6379")`` or ``RayEngine("auto")`` connect to a running cluster. Ray is only
  initialised when it is not already; ``close()`` shuts down only a Ray the engine initialised.
- The workers must import ``interpgram``: here it is the same Python environment; on a remote
  cluster install interpgram (and the model's own packages) on every node, or pass
  ``runtime_env={"pip": [...]}`` / ``{"py_modules": [...]}`` to ``RayEngine``.
- Each task reserves ``cpus_per_task`` CPUs (default 1) and calls
  ``torch.set_num_threads(cpus_per_task)`` before ``fn``, so that several tasks on one node do
  not oversubscribe its cores (a worker process is reused by tasks of different sizes, so the
  thread count is set per task rather than once through ``OMP_NUM_THREADS``).
- ``gpus`` becomes the task's ``num_gpus`` when the cluster has GPUs (0 on a CPU-only cluster);
  Ray then sets ``CUDA_VISIBLE_DEVICES`` for the task, and ``fn`` picks cuda when
  ``torch.cuda.is_available()``. A task with no GPU reserved gets an empty
  ``CUDA_VISIBLE_DEVICES``, so that it cannot pick an unreserved GPU.
- Ray's own default for GPU tasks is kept: a worker process runs one GPU task and exits
  (``max_calls=1``), which returns its GPU memory. ``max_calls`` on the engine overrides that
  (``0``: reuse workers without limit) at the cost of GPU memory held by idle workers.
  ``max_calls`` can only be set where Ray wraps the function (``ray.remote``), not in
  ``.options``, so the engine keeps one remote function per ``max_calls`` value.
- Stopping early (an exception, KeyboardInterrupt, or the caller closing the iterator) cancels
  the tasks still pending with ``ray.cancel(force=True)``.
"""

from __future__ import annotations

import abc
import collections
import os
import reprlib
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

__all__ = ["Engine", "EngineError", "LocalEngine", "RayEngine", "engine_for", "ENGINES"]

ENGINES = ("local", "ray")
_INSTALL_HINT = "pip install 'interpgram[ray]'"
_RAY_CLIENT_PORT = 10001
_RAY_GCS_PORT = 6379


class EngineError(RuntimeError):
    """An engine that cannot start or run: Ray missing, a cluster that does not answer, a worker lost."""


def _item_note(fn: Callable, index: int, item: Any) -> str:
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return f"while running {name} on item {index} of the map: {reprlib.repr(item)}"


def _add_note(exc: BaseException, note: str) -> None:
    if hasattr(exc, "add_note"):  # Python >= 3.11
        exc.add_note(note)


class Engine(abc.ABC):
    """Runs ``fn(shared, item)`` for each item and yields the results in the order of the items."""

    name = "engine"

    @abc.abstractmethod
    def map(self, fn: Callable[[dict, Any], Any], items: Iterable[Any], *, shared: Any,
            gpus: float = 0, max_in_flight: int | None = None) -> Iterator[Any]:
        """Yield ``fn(shared, item)`` for each of ``items``, in their order."""

    def put(self, shared: dict) -> Any:
        """A handle to ``shared`` that several ``map`` calls can use (stored once)."""
        return shared

    def close(self) -> None:  # noqa: B027 - an optional hook: engines without workers hold nothing
        """Release what the engine holds (nothing for an engine without workers)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalEngine(Engine):
    """In this process, one item after the other (the default engine)."""

    name = "local"

    def map(self, fn, items, *, shared, gpus=0, max_in_flight=None):
        _check_limit(max_in_flight)
        return self._iterate(fn, items, shared)

    @staticmethod
    def _iterate(fn, items, shared):
        for i, item in enumerate(items):
            try:
                result = fn(shared, item)
            except Exception as e:
                _add_note(e, _item_note(fn, i, item))
                raise
            yield result

    def __repr__(self) -> str:
        return "LocalEngine()"


def _check_limit(max_in_flight: int | None) -> None:
    if max_in_flight is not None and (not isinstance(max_in_flight, int) or max_in_flight < 1):
        raise ValueError(f"max_in_flight must be a positive integer or None, not {max_in_flight!r}")


# ---------------------------------------------------------------------------------------- Ray


def keep_print() -> None:
    """Stop Ray from replacing ``builtins.print``: its driver-side progress-bar manager
    (ray.experimental.tqdm_ray, created the first time worker logs are shown or Ray shuts down)
    swaps in a Python ``safe_print`` unless ``RAY_TQDM_PATCH_PRINT`` is off, after which numba can
    no longer compile any function whose typing reaches ``print`` (every later UMAP layout in the
    process failed with "Untyped global name 'print'"). Call before ``ray.init``; a user's own
    setting of the variable wins."""
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")


def _import_ray():
    keep_print()
    try:
        import ray
    except ImportError as e:
        raise EngineError(f"execution engine 'ray' needs Ray, which is not installed ({e}); "
                          f"install it with: {_INSTALL_HINT}") from None
    return ray


def _run_task(fn, shared, item, threads: int, gpu: bool):
    """The body of every Ray task (runs on a worker). ``shared`` arrives resolved from the
    object store; the thread count is set for this task's CPUs before ``fn`` runs. A task that
    reserved no GPU sees none: recent Ray no longer empties ``CUDA_VISIBLE_DEVICES`` for such
    tasks (ray-project/ray#54868), so ``fn`` would otherwise pick an unreserved GPU (Ray does not reuse a worker between
    GPU and non-GPU tasks, so hiding them here cannot affect a GPU task)."""
    if not gpu and os.environ.get("CUDA_VISIBLE_DEVICES") != "":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return fn(shared, item)


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of an explicit address; None for addresses Ray resolves itself (auto, local)."""
    rest = address
    default = _RAY_GCS_PORT
    if rest.startswith("ray://"):
        rest, default = rest[len("ray://"):], _RAY_CLIENT_PORT
    elif "://" in rest or rest in ("auto", "local", ""):
        return None
    rest = rest.split("/", 1)[0]
    if rest.startswith("["):  # [ipv6]:port
        host, _, port = rest[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, sep, port = rest.rpartition(":")
        if not sep:
            host, port = rest, ""
    try:
        return host, int(port) if port else default
    except ValueError:
        return host, default


def _probe(address: str, timeout: float) -> None:
    """Fail fast when nothing listens at ``address``: ray.init itself waits a minute or more and
    then exits the process for an unreachable GCS, and 30 s for an unreachable Ray Client server."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        socket.create_connection(hp, timeout=timeout).close()
    except OSError as e:
        raise EngineError(f"no Ray cluster answers at {address!r} ({e or type(e).__name__}); start one "
                          "with `ray start --head` or check the address (ray://HOST:10001 for Ray "
                          "Client, HOST:6379 for the head node's GCS)") from None


class RayEngine(Engine):
    """Ray tasks on a local Ray instance (``address=None``) or on an existing cluster.

    ``num_cpus`` and ``ray_init`` (extra ``ray.init`` keywords) apply only when this engine
    starts Ray; ``runtime_env`` is the job's runtime environment (how remote workers get
    interpgram, if it is not installed there). ``cpus_per_task`` is each task's ``num_cpus`` and
    torch thread count; ``max_calls`` see the module notes; ``connect_timeout`` bounds the check
    that an explicit address answers.
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 runtime_env: dict | None = None, cpus_per_task: float = 1, max_calls: int | None = None,
                 connect_timeout: float = 10.0, ray_init: Mapping[str, Any] | None = None):
        ray = _import_ray()
        if cpus_per_task <= 0:
            raise ValueError(f"cpus_per_task must be positive, not {cpus_per_task!r}")
        self._ray = ray
        self.address = address
        self.cpus_per_task = cpus_per_task
        self.max_calls = max_calls
        self._remotes: dict[int, Any] = {}
        self._started = False
        if ray.is_initialized():
            return  # reuse the caller's Ray (local or cluster); never shut it down
        if address is not None:
            _probe(address, connect_timeout)
        kwargs = dict(ray_init or {})
        if runtime_env is not None:
            kwargs["runtime_env"] = runtime_env
        if num_cpus is not None and address is None:
            kwargs["num_cpus"] = num_cpus
        where = "a local Ray instance" if address is None else f"the Ray cluster at {address!r}"
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, TimeoutError, SystemExit) as e:
            # ray.init raises SystemExit when a GCS it was pointed at never answers
            raise EngineError(f"could not connect to {where}: {e}") from None
        except Exception as e:
            raise EngineError(f"could not start {where}: {type(e).__name__}: {e}") from e
        self._started = True

    # ------------------------------------------------------------------ lifecycle
    @property
    def started(self) -> bool:
        """Whether this engine initialised Ray (and so shuts it down on close)."""
        return self._started

    def close(self) -> None:
        if self._started:
            self._started = False
            self._remotes.clear()
            if self._ray.is_initialized():
                shutdown_ray(self._ray)

    def __repr__(self) -> str:
        return f"RayEngine(address={self.address!r})"

    # ------------------------------------------------------------------ work
    def put(self, shared: dict) -> Any:
        """Store ``shared`` in the object store once; pass the result as ``shared=`` to any
        number of ``map`` calls (it stays stored while the caller holds it)."""
        return self._ray.put(shared)

    def resources(self) -> dict[str, float]:
        """The cluster's total resources (CPU, GPU, memory, ...), as Ray reports them now."""
        return dict(self._ray.cluster_resources())

    def _remote(self, max_calls: int):
        if max_calls not in self._remotes:
            self._remotes[max_calls] = self._ray.remote(max_calls=max_calls)(_run_task)
        return self._remotes[max_calls]

    def map(self, fn, items, *, shared, gpus=0, max_in_flight=None):
        _check_limit(max_in_flight)
        if gpus < 0:
            raise ValueError(f"gpus must be >= 0, not {gpus!r}")
        if not self._ray.is_initialized():
            raise EngineError("the Ray engine is closed")
        res = self.resources()
        cluster_gpus = float(res.get("GPU", 0) or 0)
        num_gpus = min(float(gpus), cluster_gpus) if gpus and cluster_gpus > 0 else 0
        if max_in_flight is None:
            max_in_flight = max(1, int(2 * float(res.get("CPU", 1) or 1)))
        max_calls = self.max_calls if self.max_calls is not None else (1 if num_gpus > 0 else 0)
        task = self._remote(max_calls).options(
            num_cpus=self.cpus_per_task, num_gpus=num_gpus,
            name=f"interpgram:{getattr(fn, '__name__', 'task')}")
        threads = max(1, int(self.cpus_per_task))
        return self._iterate(task, fn, items, shared, max_in_flight, threads, num_gpus > 0)

    def _iterate(self, task, fn, items, shared, limit, threads, gpu):
        ray = self._ray
        ref = shared if isinstance(shared, ray.ObjectRef) else ray.put(shared)  # serialised once
        pending: collections.deque = collections.deque()  # (index, item, ObjectRef), oldest first
        source = iter(enumerate(items))
        exhausted = False
        finished = False
        try:
            while True:
                while not exhausted and len(pending) < limit:
                    nxt = next(source, None)
                    if nxt is None:
                        exhausted = True
                        break
                    i, item = nxt
                    pending.append((i, item, task.remote(fn, ref, item, threads, gpu)))
                if not pending:
                    break
                i, item, head = pending[0]
                try:
                    result = ray.get(head)
                except ray.exceptions.RayTaskError as e:
                    raise _task_error(e, fn, i, item) from None
                except ray.exceptions.RayError as e:
                    raise EngineError(f"Ray lost the task for item {i} of {getattr(fn, '__qualname__', fn)} "
                                      f"({reprlib.repr(item)}): {type(e).__name__}: {e}") from e
                pending.popleft()
                del head
                yield result
            finished = True
        finally:
            if not finished:  # an error, KeyboardInterrupt, or the caller stopped iterating
                refs = [r for _, _, r in pending]
                pending.clear()
                _cancel(ray, refs)


def _cancel(ray, refs: list, passes: int = 3, wait_s: float = 0.5) -> None:
    """Cancel tasks with ``force=True``: a running task's worker process exits instead of getting
    a KeyboardInterrupt at an arbitrary point (mid-import, mid-CUDA call) and then being reused in
    that state; queued tasks are dropped. Ray can miss a cancel that arrives while a task is
    still resolving its arguments (here: the shared object), so tasks that have not ended shortly
    after are cancelled again."""
    for _ in range(passes):
        if not refs:
            return
        for r in refs:
            try:
                ray.cancel(r, force=True)
            except Exception:  # noqa: BLE001 - best effort: a task that already ended cannot be cancelled; the wait below reports the rest
                pass
        try:
            _, refs = ray.wait(refs, num_returns=len(refs), timeout=wait_s, fetch_local=False)
        except Exception:  # noqa: BLE001 - best effort while shutting down after an interrupt
            return


def _task_error(e, fn, index: int, item: Any) -> BaseException:
    """The task's own exception (original type and message) with notes saying where it ran."""
    cause = getattr(e, "cause", None)
    if not isinstance(cause, BaseException):
        try:
            cause = e.as_instanceof_cause()
        except Exception:  # noqa: BLE001 - Ray may fail to rebuild the cause; the error then carries its text
            cause = EngineError(str(e))
    _add_note(cause, _item_note(fn, index, item) + " (a Ray task)")
    tb = getattr(e, "traceback_str", None)
    if tb:
        _add_note(cause, "remote traceback:\n" + tb.rstrip())
    if isinstance(cause, ModuleNotFoundError) and (cause.name or "").startswith("interpgram"):
        _add_note(cause, "the Ray workers cannot import interpgram: install it on every node, or pass "
                         "RayEngine(runtime_env={'pip': [...]}) / {'py_modules': [...]}")
    return cause


# ----------------------------------------------------------------------------- from a spec


def _setting(execution: Any, name: str, default=None):
    if execution is None:
        return default
    if isinstance(execution, Mapping):
        return execution.get(name, default)
    return getattr(execution, name, default)


def engine_for(execution: Any = None) -> Engine:
    """The engine a spec's ``execution`` settings ask for: ``engine`` (local | ray, default local)
    and ``address`` (ray only; none: a local Ray instance). Accepts any object with those
    attributes, or a mapping."""
    name = _setting(execution, "engine") or "local"
    name = getattr(name, "value", name)  # an Enum
    address = _setting(execution, "address")
    if name == "local":
        if address:
            raise EngineError(f"execution.address ({address!r}) needs execution.engine: ray")
        return LocalEngine()
    if name == "ray":
        return RayEngine(address)
    raise EngineError(f"unknown execution engine {name!r}: one of {', '.join(ENGINES)}")


def shutdown_ray(ray) -> None:
    """``ray.shutdown()``, keeping this process's ``print``: Ray replaces ``builtins.print`` with a
    Python ``safe_print`` when it shuts down, after which numba can no longer compile any function
    whose typing reaches ``print`` (UMAP's nearest-neighbour search failed with "Untyped global name
    'print'" in every atlas layout after a Ray run in the same process)."""
    import builtins

    kept = builtins.print
    try:
        ray.shutdown()
    finally:
        builtins.print = kept

