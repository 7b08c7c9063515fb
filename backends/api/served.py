"""``Interface.serve()``: the dashboard of ``interpgram serve`` for an interface built in Python.

The server's :class:`~interpgram.backends.serve.Session` prepares through the interface, so the model
stays the one in memory; a spec file is still watched and reloaded on edit. In a notebook the
server runs on a thread of its own (its own Tornado loop) and :meth:`Served.stop` ends it.
"""
from __future__ import annotations

import sys
import threading
from typing import Optional

from interpgram.backends.serve import Session, make_server, url_of

START_TIMEOUT_S = 60.0  # the server binds its port well within this, even on a loaded machine


class Served:
    """A running dashboard: ``url``, ``loaded`` (set after each load of the spec), ``stop()``."""

    def __init__(self, engine: Session, host: str):
        self.engine = engine
        self.host = host
        self.url = ""
        self.server = None
        self.loaded = threading.Event()
        self._ready = threading.Event()
        self._loop = None
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    @classmethod
    def start(cls, iface, *, host: str, port: int, block: bool, show: bool) -> "Served":
        src = iface.source

        def prepare(_path, *, allow_code: bool, icon_steps):
            iface.reload()  # the spec file as it is now (the engine calls this again when it changes)
            return iface.prepared()

        served: Served

        def on_load(engine: Session) -> None:
            _, _, error = engine.snapshot()
            if error:
                print(f"interpgram serve: the spec has errors (shown in the page):\n{error}", file=sys.stderr)
            served.loaded.set()

        label = src.path if src.path is not None else f"<{src.kind}>"
        engine = Session(label, allow_code=iface.allow_code, cache_dir=iface.cache, icon_steps=iface.icon_steps,
                        on_load=on_load, prepare=prepare)
        served = cls(engine, host)
        if block:
            served._serve(port, show, block=True)
            return served
        served._thread = threading.Thread(target=served._serve, args=(port, show), name="interpgram-api-serve",
                                          daemon=True)
        served._thread.start()
        if not served._ready.wait(START_TIMEOUT_S):
            raise RuntimeError(f"the dashboard did not start within {START_TIMEOUT_S:.0f} s")
        if served._error is not None:
            raise served._error
        print(f"interpgram serve: {served.url}", file=sys.stderr)
        return served

    def _serve(self, port: int, show: bool, block: bool = False) -> None:
        import asyncio

        from tornado.ioloop import IOLoop

        try:
            if not block:
                asyncio.set_event_loop(asyncio.new_event_loop())
            self._loop = IOLoop.current()
            self.server = make_server(self.engine, host=self.host, port=port, show=show, loop=self._loop)
            self.url = url_of(self.server, self.host)
            self.engine.start_watching()
            self.server.start()
        except OSError as e:  # the port is taken: say so in the caller's thread
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop.start()
        finally:
            self.engine.stop()

    def stop(self) -> None:
        """Stop the server and its spec watcher (idempotent)."""
        loop, server = self._loop, self.server
        if loop is None or server is None:
            return

        def halt():
            server.stop()
            loop.stop()

        loop.add_callback(halt)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._loop = None

    def __repr__(self) -> str:
        return f"<interpgram dashboard at {self.url}>"
