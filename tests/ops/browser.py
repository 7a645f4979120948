"""Headless Chromium (Debian's package, unpacked by .ci/services; the shared test services'
``Chromium``) for the status page tests: the DOM after load, screenshots, and a parser of the
page. No script runs on the page; the browser parses and lays it out as a reader's would.
``FLAGS`` are for the benchmark, which drives Chromium over the DevTools protocol."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from tests.ops.tools import require_tool
from tests.services.tools import Chromium

FLAGS = (
    "--headless=new",
    "--no-sandbox",  # we run as root in CI; the page has no script and comes from loopback
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--hide-scrollbars",
)


def chromium() -> Chromium:
    """The shared test services' headless Chromium (tests/services/tools.py)."""
    return Chromium(Path(require_tool("chromium").path), timeout=180.0)


def dump_dom(url: str) -> str:
    return chromium().dump_dom(url, virtual_time_budget_ms=2000)


def screenshot(url: str, path: Path, width: int = 1400, height: int = 1000) -> None:
    chromium().screenshot(url, path, width=width, height=height, virtual_time_budget_ms=2000)


class Page(HTMLParser):
    """Texts by element id, and the rows of tables by table id."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.by_id: dict[str, str] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self.row_ids: dict[str, list[str]] = {}
        self.scripts = 0
        self._open: list[tuple[str, str | None]] = []
        self._texts: dict[str, list[str]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        ident = dict(attrs).get("id")
        if tag == "script":
            self.scripts += 1
        if tag in ("br", "meta", "link", "img", "input", "rect", "line", "circle", "polyline"):
            return
        self._open.append((tag, ident))
        if ident:
            self._texts[ident] = []
        if tag == "table" and ident:
            self._table = ident
            self.tables[ident] = []
            self.row_ids[ident] = []
        elif tag == "tr" and self._table:
            self._row = []
            self.row_ids[self._table].append(ident or "")
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            open_tag, ident = self._open.pop()
            if ident:
                self.by_id[ident] = " ".join("".join(self._texts.pop(ident, [])).split())
            if open_tag == tag:
                break
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        for ident in self._texts:
            self._texts[ident].append(data)
        if self._cell is not None:
            self._cell.append(data)
