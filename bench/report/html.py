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
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from bench.report.names import slug, unique

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "headless_shell")
BROWSER_TIMEOUT_S = 60
# Images only from data: URIs, styles only inline, nothing else at all (no script, font, fetch).
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1100px; padding: 1rem 1.5rem 3rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .4rem; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
.notice { background: #fff3cd; border: 2px solid #d39e00; border-radius: 6px; padding: .8rem 1rem;
          font-weight: 600; margin: 1rem 0; }
nav { background: #f5f5f7; border-radius: 6px; padding: .6rem 1rem; margin: 1rem 0; }
nav ol { margin: .3rem 0; padding-left: 1.4rem; columns: 2; }
nav a { color: #0b57d0; text-decoration: none; }
nav a:hover { text-decoration: underline; }
.table-wrap { overflow-x: auto; margin: .8rem 0; }
table { border-collapse: collapse; font-size: .9rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d0d5; padding: .3rem .6rem; text-align: right; white-space: nowrap; }
th { background: #eef0f4; }
td:first-child, th:first-child { text-align: left; }
tbody tr:nth-child(even) { background: #fafafc; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .8rem; color: #666; }
.note { font-size: .9rem; color: #333; }
"""


def _figure(path: Path) -> str:
    path = Path(path)
    mime = _MIME.get(path.suffix.lower(), "image/png")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    name = html.escape(path.name)
    return (
        f'<figure><img src="data:{mime};base64,{data}" alt="{name}">'
        f"<figcaption>{name}</figcaption></figure>"
    )


def render_html(title: str, sections: list[dict[str, Any]], *, notice: str | None = None) -> str:
    """The page: title, optional notice on top, a nav of the sections, then each section's
    heading, table HTML (inserted as given), figures (embedded) and notes (escaped).

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
    for sid, sec in zip(ids, sections, strict=True):
        parts.append(f'<section id="{sid}"><h2>{html.escape(str(sec.get("heading", "")))}</h2>')
        if sec.get("html"):
            parts.append(f'<div class="table-wrap">{sec["html"]}</div>')
        parts.extend(_figure(p) for p in sec.get("figures") or [])
        parts.extend(f'<p class="note">{html.escape(str(n))}</p>' for n in sec.get("notes") or [])
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
    """Counts tables and images in a dumped DOM and collects every src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.tables = 0
        self.images: list[dict[str, str | None]] = []
        self.refs: list[str] = []
        self.probed = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.tables += 1
        elif tag == "img":
            self.images.append(a)
        elif tag == "body" and a.get("data-probe") == "done":
            self.probed = True
        if tag == "script" and a.get("id") == _PROBE_ID:
            return
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


_PROBE_ID = "medpeft-load-probe"
# Runs on the load event (after every image has loaded or failed) and leaves the result in the
# DOM that --dump-dom prints: the page itself has no script, so only the probe copy gets this.
_PROBE = (
    f'<script id="{_PROBE_ID}">window.addEventListener("load", () => {{'
    'for (const i of document.images) i.setAttribute("data-loaded", '
    "String(i.complete && i.naturalWidth > 0));"
    'document.body.setAttribute("data-probe", "done"); });</script>'
)


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


def check_in_browser(path: Path, *, screenshot_to: Path | None = None) -> dict[str, Any] | None:
    """Open the page in headless Chromium; None when no browser is installed.

    Returns the counts of <table> and <img> in the rendered DOM, whether every image is a data:
    URI and actually decoded (checked on a copy with a load-event probe; the page's CSP still
    blocks any other load), every src/href that points outside the page, and the size of a
    screenshot, which shows the page rendered. Any browser failure raises RuntimeError with its
    stderr.
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
        dom = _run([*base, "--dump-dom", probe.as_uri()])
        stats = _DomStats()
        stats.feed(dom.stdout)
        if not stats.probed:
            raise RuntimeError(
                "page did not finish loading (or its CSP blocked the probe): " + dom.stderr[-4000:]
            )

        shot = Path(screenshot_to).resolve() if screenshot_to else tmpdir / "page.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        cmd = [*base, "--hide-scrollbars", "--window-size=1280,1600", f"--screenshot={shot}"]
        res = _run([*cmd, path.as_uri()])
        if not shot.is_file() or shot.stat().st_size == 0:
            raise RuntimeError(f"browser wrote no screenshot: {res.stderr[-4000:]}")
        shot_bytes = shot.stat().st_size

    srcs = [str(img.get("src") or "") for img in stats.images]
    return {
        "browser": browser,
        "tables": stats.tables,
        "images": len(stats.images),
        "images_data_uri": all(s.startswith("data:") for s in srcs),
        "images_loaded": all(img.get("data-loaded") == "true" for img in stats.images),
        "external_refs": [r for r in stats.refs if not r.startswith(("data:", "#"))],
        "screenshot_bytes": shot_bytes,
        "seconds": round(time.monotonic() - start, 2),
    }
