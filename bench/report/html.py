"""A self-contained HTML report (`reports/index.html`) and a check of it in headless Chromium.

The page needs nothing outside itself: figures are embedded as base64 data URIs, the CSS is
inline, there is no script, and a Content-Security-Policy forbids every other load, so the file
can be mailed, archived or opened offline and shows the same thing.
"""

from __future__ import annotations

import base64
import html
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd

from bench.report.fit import fit_columns
from bench.report.formats import to_html
from bench.report.names import slug, unique

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "headless_shell")
BROWSER_TIMEOUT_S = 60
# Images only from data: URIs, styles only inline, nothing else at all (no script, font, fetch).
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1360px; padding: 1rem 1.5rem 3rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .4rem; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 .3rem; }
.notice { background: #fff3cd; border: 2px solid #d39e00; border-radius: 6px; padding: .8rem 1rem;
          font-weight: 600; margin: 1rem 0; }
nav { background: #f5f5f7; border-radius: 6px; padding: .6rem 1rem; margin: 1rem 0; }
nav ol { margin: .3rem 0; padding-left: 1.4rem; columns: 3; }
nav a, .note-ref a { color: #0b57d0; text-decoration: none; }
nav a:hover, .note-ref a:hover { text-decoration: underline; }
.table-wrap { overflow-x: auto; margin: .4rem 0 .8rem; max-width: 100%; }
table { border-collapse: collapse; font-size: .82rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d0d5; padding: .25rem .45rem; vertical-align: top; }
th { background: #eef0f4; white-space: normal; text-align: center; }
td.num { text-align: right; white-space: nowrap; }
td.label, th.label { text-align: left; white-space: normal; overflow-wrap: anywhere;
                     min-width: 6em; }
tr.group th { text-align: left; background: #e3e8f2; }
/* the label column stays in view when a table is still too wide and scrolls sideways */
tbody td:first-child, thead th:first-child { position: sticky; left: 0; background: #fff; }
thead th:first-child { background: #eef0f4; }
tbody tr:nth-child(even) td { background: #fafafc; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #444; }
figcaption .file { color: #888; font-size: .75rem; margin-left: .5rem; }
.note { font-size: .9rem; color: #333; }
.intro { font-size: .95rem; max-width: 70rem; }
.note-ref { font-size: .85rem; color: #666; }
"""

# A table of a section: (caption, frame) or (caption, frame, ranks); a figure: a path, or
# (path, caption).
TableItem = tuple[str, pd.DataFrame] | tuple[str, pd.DataFrame, pd.DataFrame | None]
FigureItem = Path | tuple[Path, str]


def _figure(item: FigureItem, caption: Callable[[Path], str] | None) -> str:
    path, text = (Path(item[0]), item[1]) if isinstance(item, tuple) else (Path(item), None)
    if text is None and caption is not None:
        text = caption(path)
    mime = _MIME.get(path.suffix.lower(), "image/png")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.name)
    label = f'{html.escape(text)}<span class="file">{name}</span>' if text else name
    return (
        f'<figure><img src="data:{mime};base64,{data}" alt="{html.escape(text or path.name)}">'
        f"<figcaption>{label}</figcaption></figure>"
    )


def _tables(items: list[TableItem]) -> list[str]:
    """Each table under its caption, split into parts that fit the page (`fit_columns`)."""
    out = []
    for item in items:
        caption, frame = item[0], item[1]
        ranks = item[2] if len(item) > 2 else None
        parts = fit_columns(frame, ranks)
        for k, (part, marks) in enumerate(parts):
            title = caption
            if len(parts) > 1:  # too wide for the page: its columns in parts
                title = (
                    f"{caption}: " if caption else ""
                ) + f"columns, part {k + 1} of {len(parts)}"
            if title:
                out.append(f'<h3 class="caption">{html.escape(title)}</h3>')
            out.append(f'<div class="table-wrap">{to_html(part, marks)}</div>')
    return out


def _excerpt(note: str, words: int = 8) -> str:
    cut = note.split()
    return " ".join(cut[:words]) + (" …" if len(cut) > words else "")


def render_html(
    title: str,
    sections: list[dict[str, Any]],
    *,
    notice: str | None = None,
    caption: Callable[[Path], str] | None = None,
) -> str:
    """The page: title, optional notice on top, a nav of the sections, then each section.

    A section is a dict: "heading"; "intro", a paragraph read before the rest; "tables", a list of (caption, frame[, ranks]) drawn with
    `formats.to_html` (best bold, second underlined) and split to fit the page; "html", table
    HTML inserted as given; "figures", paths or (path, caption), embedded (`caption(path)`
    captions a bare path, else its file name); "notes", text. A note already shown higher on
    the page is not repeated: a link to the section that shows it stands in its place.

    A missing figure file raises FileNotFoundError: a report quietly short of a figure is worse
    than none.
    """
    taken: set[str] = set()
    # An id per heading: its slug, made unique in the page.
    ids = [unique(slug(str(s.get("heading", ""))), taken) for s in sections]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if notice:
        parts.append(f'<div class="notice" role="alert">{html.escape(notice)}</div>')
    if sections:
        links = "".join(
            f'<li><a href="#{i}">{html.escape(str(s.get("heading", "")))}</a></li>'
            for i, s in zip(ids, sections, strict=True)
        )
        parts.append(f"<nav><strong>Contents</strong><ol>{links}</ol></nav>")
    shown: dict[str, tuple[str, str]] = {}  # note -> (section id, heading) where it is
    for sid, sec in zip(ids, sections, strict=True):
        heading = html.escape(str(sec.get("heading", "")))
        parts.append(f'<section id="{sid}"><h2>{heading}</h2>')
        if sec.get("intro"):
            parts.append(f'<p class="intro">{html.escape(str(sec["intro"]))}</p>')
        parts += _tables(sec.get("tables") or [])
        if sec.get("html"):
            parts.append(f'<div class="table-wrap">{sec["html"]}</div>')
        parts.extend(_figure(p, caption) for p in sec.get("figures") or [])
        for note in map(str, sec.get("notes") or []):
            if note in shown:
                at, where = shown[note]
                if at != sid:
                    parts.append(
                        f'<p class="note-ref">As noted under <a href="#{at}">{where}</a>: '
                        f"“{html.escape(_excerpt(note))}”</p>"
                    )
                continue
            shown[note] = (sid, heading)
            parts.append(f'<p class="note">{html.escape(note)}</p>')
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def find_browser() -> str | None:
    """The first Chromium-family binary on PATH, or None."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


class _DomStats(HTMLParser):
    """Counts tables and images in a dumped DOM, collects every src/href, and reads what the
    load probe wrote: each table's width and its container's, and the page's size."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict[str, str | None]] = []
        self.images: list[dict[str, str | None]] = []
        self.refs: list[str] = []
        self.page: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.tables.append(a)
        elif tag == "img":
            self.images.append(a)
        elif tag == "body" and a.get("data-probe") == "done":
            self.page = a
        if tag == "script" and a.get("id") == _PROBE_ID:
            return
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


_PROBE_ID = "medpeft-load-probe"
# Runs on the load event (after every image has loaded or failed) and leaves the result in the
# DOM that --dump-dom prints: the page itself has no script, so only the probe copy gets this.
# A table overflows when it is wider than the box it sits in (its scrolling wrapper).
_PROBE = (
    f'<script id="{_PROBE_ID}">window.addEventListener("load", () => {{'
    'for (const i of document.images) i.setAttribute("data-loaded", '
    "String(i.complete && i.naturalWidth > 0));"
    'for (const t of document.querySelectorAll("table")) {'
    'const s = t.closest("section");'
    't.setAttribute("data-width", t.scrollWidth);'
    't.setAttribute("data-room", t.parentElement.clientWidth);'
    't.setAttribute("data-section", s ? s.id : ""); }'
    "const d = document.documentElement, b = document.body;"
    'b.setAttribute("data-doc-width", d.scrollWidth);'
    'b.setAttribute("data-doc-height", d.scrollHeight);'
    'b.setAttribute("data-win-width", window.innerWidth);'
    'b.setAttribute("data-probe", "done"); });</script>'
)
WINDOW_WIDTH = 1400  # a laptop's browser window: every table must fit it
_MAX_SHOT_HEIGHT = 30_000  # px; a page taller than this is cut in the screenshot


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        raise RuntimeError(f"browser timed out after {BROWSER_TIMEOUT_S} s: {err or ''}") from e
    if proc.returncode != 0:
        raise RuntimeError(f"browser exited {proc.returncode}: {proc.stderr[-4000:]}")
    return proc


def _int(value: str | None) -> int:
    return int(float(value)) if value else 0


def check_in_browser(path: Path, *, screenshot_to: Path | None = None) -> dict[str, Any] | None:
    """Open the page in headless Chromium in a WINDOW_WIDTH px wide window; None when no
    browser is installed.

    Returns the counts of <table> and <img> in the rendered DOM, whether every image is a data:
    URI and actually decoded (checked on a copy with a load-event probe; the page's CSP still
    blocks any other load), every src/href that points outside the page, whether each table
    fits the box it sits in (`tables_fit`: section, width and room in px, `overflowing`: those
    that do not), the document's width against the window's (`page_overflows`), and the size of
    a screenshot of the whole page's height (`screenshot_to` keeps it). Any browser failure
    raises RuntimeError with its stderr.
    """
    browser = find_browser()
    if browser is None:
        return None
    path = Path(path).resolve()
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="medpeft-browser-") as tmp:
        tmpdir = Path(tmp)
        base = [
            browser,
            "--headless=new",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={tmpdir / 'profile'}",
        ]
        page = path.read_text(encoding="utf-8")
        # The probe needs inline script; a first script-src directive overrides default-src.
        page = page.replace(CSP, f"script-src 'unsafe-inline'; {CSP}", 1)
        page = (
            page.replace("</body>", _PROBE + "</body>", 1) if "</body>" in page else page + _PROBE
        )
        probe = tmpdir / "probe.html"
        probe.write_text(page, encoding="utf-8")
        size = f"--window-size={WINDOW_WIDTH},1000"
        dom = _run([*base, size, "--dump-dom", probe.as_uri()])
        stats = _DomStats()
        stats.feed(dom.stdout)
        if not stats.page:
            raise RuntimeError(
                "page did not finish loading (or its CSP blocked the probe): " + dom.stderr[-4000:]
            )

        shot = Path(screenshot_to).resolve() if screenshot_to else tmpdir / "page.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        height = min(max(_int(stats.page.get("data-doc-height")), 600), _MAX_SHOT_HEIGHT)
        cmd = [*base, f"--window-size={WINDOW_WIDTH},{height}", f"--screenshot={shot}"]
        res = _run([*cmd, path.as_uri()])
        if not shot.is_file() or shot.stat().st_size == 0:
            raise RuntimeError(f"browser wrote no screenshot: {res.stderr[-4000:]}")
        shot_bytes = shot.stat().st_size

    srcs = [str(img.get("src") or "") for img in stats.images]
    fit = [
        {
            "section": t.get("data-section") or "",
            "width": _int(t.get("data-width")),
            "room": _int(t.get("data-room")),
        }
        for t in stats.tables
    ]
    doc_width = _int(stats.page.get("data-doc-width"))
    window = _int(stats.page.get("data-win-width"))
    return {
        "browser": browser,
        "tables": len(stats.tables),
        "images": len(stats.images),
        "images_data_uri": all(s.startswith("data:") for s in srcs),
        "images_loaded": all(img.get("data-loaded") == "true" for img in stats.images),
        "external_refs": [r for r in stats.refs if not r.startswith(("data:", "#"))],
        "tables_fit": fit,
        "overflowing": [t for t in fit if t["width"] > t["room"]],
        "document_width": doc_width,
        "window_width": window,
        "page_overflows": doc_width > window,
        "screenshot_bytes": shot_bytes,
        "seconds": round(time.monotonic() - start, 2),
    }
