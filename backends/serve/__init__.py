"""``interpgram serve SPEC``: the live dashboard (Panel).

The page shows the same elements as the static report, built the same way (``pipeline.prepare`` →
``pipeline.run`` → ``pipeline.build_views`` → ``view.chart_for``), in the spec's layout, with

* an input picker (the spec's inputs, or a ``builtin:shapes/N`` or an image path typed in): the plan
  is recompiled for that input, the model is reused. A typed path opens only an image file inside
  the *input folder* (``--input-root``, default the spec's folder; relative paths start there):
  anything outside it, by ``..``, an absolute path or a symlink, gets one answer whatever is there,
  so the page cannot read or probe the server's other files;
* a class picker: every element whose attribution goes to the output layer is re-planned for the
  picked class through the compiler (``compile_variants`` with a class selection), except a
  ``compare`` of two classes, which keeps both (re-targeted, it would show the picked class minus itself);
* live links: a source element's chart carries a Vega selection parameter named ``link``; the
  session listens to it and computes the target element for that selection through the
  compiler, the fused plan and the result cache (:mod:`interpgram.backends.links`);
* reload: the spec file is polled; a change re-prepares once for the server and every open page
  redraws. A spec with errors never stops the server: its positioned messages are shown above
  the last good dashboard, and fixing the file recovers the page.

One :class:`Session` per server holds what sessions share: the prepared spec (model, plan), the
result cache and everything computed so far for it; torch work runs under one lock, in worker
threads, so one session's computation neither blocks the page of another nor races it. A
:class:`Dashboard` is one browser session's page.

Exposure: the server binds 127.0.0.1 unless told otherwise; any other address prints a warning
that the dashboard is reachable from the network (:func:`exposure_warning`). Panel's
``/components/<module>/...`` route, which imports the module named in the URL, is closed
(:func:`closed_routes`): the dashboard loads its scripts from ``/static`` only.
"""
from interpgram.backends.serve.page import Dashboard, set_chart
from interpgram.backends.serve.server import (exposure_warning, free_port, is_loopback, make_server, serve, url_of,
                                              websocket_origins)
from interpgram.backends.serve.session import DEFAULT_HOST, DEFAULT_PORT, MAX_TYPED_IMAGES, InputRefused, Session
from interpgram.grammar.link_kinds import selection_key

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "MAX_TYPED_IMAGES", "Dashboard", "InputRefused", "Session", "exposure_warning",
           "free_port", "is_loopback", "make_server", "selection_key", "serve", "set_chart", "url_of",
           "websocket_origins"]
