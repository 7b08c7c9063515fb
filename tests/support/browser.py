"""Browser pages for the tests: a context that may load only the URLs a test allows."""
from __future__ import annotations


def guarded_page(browser, allowed: tuple[str, ...], viewport: dict | None = None):
    """(context, page) in a browser context of its own that may load URLs starting with ``allowed``
    (and data: / blob:) only: every other request is aborted and recorded in ``page.blocked``;
    console errors (and uncaught exceptions) go to ``page.errors``, console warnings to
    ``page.warnings``."""
    ctx = browser.new_context(viewport=viewport or {"width": 1400, "height": 900})
    blocked: list[str] = []

    def route(r):
        if r.request.url.startswith(tuple(allowed) + ("data:", "blob:")):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    ctx.route("**/*", route)
    page = ctx.new_page()
    page.errors = []
    page.warnings = []
    page.blocked = blocked

    def console(m):
        if m.type == "error":
            page.errors.append(m.text)
        elif m.type == "warning":
            page.warnings.append(m.text)

    page.on("console", console)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    return ctx, page
