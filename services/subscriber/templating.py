"""Jinja2 for the pages: templates shipped as package data (services/subscriber/templates), autoescaped."""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from services.subscriber.sessions import PAGE_CSS

SCRIPT_PATH = "/settings/static/page.js"


@cache
def environment() -> Environment:
    return Environment(loader=PackageLoader("services.subscriber", "templates"),
                       autoescape=select_autoescape(["html"], default_for_string=True, default=True),
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_page(template: str, *, title: str, body: str = "", script: bool = False, **context: Any) -> str:
    """A whole page: the one inline `<style>` (allowed by its hash in the CSP); `script` adds the page's
    own script file (progressive enhancement: every form works without it)."""
    return environment().get_template(template).render(
        # The stylesheet is a constant; `body` is HTML its callers built with every value escaped.
        title=title, css=Markup(PAGE_CSS), body=Markup(body),  # noqa: S704
        script=SCRIPT_PATH if script else None, **context)


def static_text(name: str) -> str:
    from importlib import resources

    return (resources.files("services.subscriber") / "static" / name).read_text()
