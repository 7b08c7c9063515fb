"""The server: a Panel (Bokeh) server for one :class:`Session`, bound to loopback by default, with
Panel's import-by-URL route closed and a warning when bound beyond loopback."""
from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from interpgram.backends.serve.page import Dashboard
from interpgram.backends.serve.session import DEFAULT_HOST, DEFAULT_PORT, Session


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_loopback(host: str) -> bool:
    """True when ``host`` names this machine only (127.0.0.0/8, ::1, or a name resolving to those
    alone); every-interface addresses (0.0.0.0, ::, "") and anything unresolvable are not."""
    if host in ("", "0.0.0.0", "::"):
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    addrs = {info[4][0].split("%")[0] for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(a).is_loopback for a in addrs)


def exposure_warning(host: str, port: int, input_root: Path) -> Optional[str]:
    """The warning printed when the server listens beyond loopback (None on loopback)."""
    if is_loopback(host):
        return None
    where = "every network interface" if host in ("", "0.0.0.0", "::") else f"address {host}"
    return (f"interpgram serve: WARNING: listening on {host or '0.0.0.0'}:{port} ({where}): the dashboard is "
            f"reachable from the network. Anyone who can connect can open it (there is no login), run its "
            f"computations on this machine, and open image files under the input folder {input_root} "
            f"(--input-root). To keep it on this machine, use --host 127.0.0.1 (the default).")


def _closed_handler():
    from tornado.web import RequestHandler

    class ClosedRouteHandler(RequestHandler):
        """Panel's ``/components/<module>/...`` imports ``<module>`` by name (any installed one) to
        find a resource beside it; the dashboard needs none of them, so nothing is imported."""

        def prepare(self) -> None:
            self.set_status(404)
            self.finish("404: Not Found")

    return ClosedRouteHandler


def closed_routes() -> list[tuple]:
    """Tornado routes placed ahead of Panel's own (extra patterns match first): those that import
    the module named in the URL."""
    return [(r"/components/.*", _closed_handler())]


def websocket_origins(host: str, port: int) -> list[str]:
    """Where the page may be opened from: the bound host, and loopback by either name; bound to every
    interface (0.0.0.0, ::), any host name on this port (the user asked for the page to be reachable)."""
    if host in ("0.0.0.0", "::", ""):
        return [f"*:{port}"]
    out = [f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]
    return list(dict.fromkeys(out))


def _extension() -> None:
    import panel as pn

    pn.extension("vega", notifications=False)


def app_factory(engine: Session) -> Callable[[], Any]:
    """The function Panel calls once per browser session: one :class:`Dashboard` over the shared engine."""

    def app():
        import panel as pn

        _extension()
        doc = pn.state.curdoc
        dash = Dashboard(engine, doc=doc, periodic=True)
        return dash.layout

    return app


def make_server(engine: Session, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, show: bool = False,
                title: Optional[str] = None, loop=None):
    """A Panel (Bokeh) server for ``engine``, not started (``loop``: the Tornado IOLoop to run it on)."""
    import panel as pn

    _extension()
    if port == 0:
        port = free_port(host)
    return pn.serve(app_factory(engine), port=port, address=host, websocket_origin=websocket_origins(host, port),
                    show=show, start=False, title=title or f"interpgram: {engine.path.name}", verbose=False,
                    loop=loop, extra_patterns=closed_routes())


def url_of(server, host: str) -> str:
    shown = "localhost" if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{server.port}/"


def serve(spec_path: str | Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, allow_code: bool = False,
          cache_dir: Optional[str | Path] = None, icon_steps: Optional[int] = None, show: bool = False,
          out=None, input_root: Optional[str | Path] = None) -> int:
    """Start the dashboard for ``spec_path`` and serve until interrupted (blocking).

    ``input_root``: the folder the page's input box may open images from (default: the spec's folder)."""

    def report(engine: Session) -> None:
        _, good, error = engine.snapshot()
        if error:
            print(f"{engine.path}: the spec has errors (shown in the page; the server keeps running):\n{error}",
                  file=sys.stderr, flush=True)
        elif good is not None:
            print(f"{engine.path}: version {good.version} ready in {engine.last_load_s:.1f} s "
                  f"({len(good.prep.loaded.spec.elements)} elements)", file=out, flush=True)

    out = out or sys.stdout
    engine = Session(spec_path, allow_code=allow_code, cache_dir=cache_dir, icon_steps=icon_steps, on_load=report,
                    input_root=input_root)
    server = make_server(engine, host=host, port=port, show=show)
    print(f"interpgram serve: {url_of(server, host)}  (spec {spec_path}; reloads when the file changes; Ctrl-C stops)",
          file=out, flush=True)
    print(f"interpgram serve: the input box opens images under {engine.input_root} (--input-root)", file=out, flush=True)
    warning = exposure_warning(host, server.port, engine.input_root)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    engine.start_watching()
    try:
        server.start()
        server.io_loop.start()
    finally:
        engine.stop()
    return 0
