"""Screenshots of the review app on the 741 photos and on simulated shapes, at 1280x800 and
1920x1080, in Debian's Chromium (never a downloaded browser).

    python docs/screenshots/review/shoot.py build WORKDIR     # workspaces: ingest, audit,
                                                              # out-of-fold, plan; shapes
    python docs/screenshots/review/shoot.py shoot WORKDIR OUT PREFIX

Run it with PYTHONPATH pointing at the smartset to show (a `git worktree` of an older
commit for "before"). Written by hand: a one-off tool for the README's screenshots, not a
test (tests/test_review_browser.py asserts what the screenshots show).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

SHARED = Path(os.environ.get("SMARTSET_SHARED_DATA",
                            Path(__file__).resolve().parents[4] / "shared" / "data"))
PHOTOS = SHARED / "guns-smartphones" / "train"
SIZES = [(1280, 800), (1920, 1080)]
TOKEN = "screenshot-token-0123456789abcdef"


def build(work: Path) -> None:
    import smartset
    from smartset import clean, detection as det
    from smartset.audit import audit
    from smartset.learn import predict_oof

    ws = smartset.init(work / "photos")
    ws.ingest(PHOTOS, show_progress=False)
    audit(ws, show_progress=False)
    predict_oof(ws, progress=False, seed=0)
    clean.make_plan(ws)
    ws.close()
    info = det.synth_shapes(work / "shapes-src", 24, seed=0, size=(160, 160))
    shapes = smartset.init(work / "shapes")
    det.import_annotations(shapes, info["coco"], show_progress=False)
    shapes.close()


def _wait(page, expression, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.05)


def _ready(page):
    _wait(page, "Boolean(window.smartsetReview && window.smartsetReview.ready)")
    time.sleep(0.8)  # thumbnails


def shoot(work: Path, out: Path, prefix: str) -> None:
    from playwright.sync_api import sync_playwright

    from smartset.review import running_server

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        with running_server(work / "photos", token=TOKEN, author="reviewer") as server:
            for width, height in SIZES:
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto(server.url)
                _ready(page)
                page.screenshot(path=str(out / f"{prefix}-grid-{width}.png"))
                queues = page.evaluate("[...document.querySelectorAll('#queue-list button')]"
                                       ".map(b => b.dataset.queue)")
                print(prefix, width, "queues:", queues)
                for queue in ("duplicates", "atypical", "audit:class_outlier"):
                    if queue in queues:
                        page.click(f'#queue-list button[data-queue="{queue}"]')
                        _wait(page, f"window.smartsetReview.state.queue.id === {queue!r}")
                        _ready(page)
                        page.screenshot(path=str(out / f"{prefix}-queue-{queue}-{width}.png"))
                plan = next((q for q in queues if q.startswith("plan:")), "suspicious")
                page.click(f'#queue-list button[data-queue="{plan}"]')
                _ready(page)
                page.keyboard.press("Enter")
                for _ in range(30):  # the first item with both tables (a label issue and
                    _wait(page, "document.querySelectorAll('#focus-info h3').length > 2")
                    titles = page.evaluate("[...document.querySelectorAll('#focus-info h3')]"
                                           ".map(h => h.textContent)")
                    if any("Label issues" in t for t in titles) and any(
                            "Audit findings" in t for t in titles):
                        break
                    page.keyboard.press("j")
                    time.sleep(0.3)
                time.sleep(0.8)
                page.screenshot(path=str(out / f"{prefix}-focus-{width}.png"))
                tables = page.locator("#focus-info section", has=page.locator(
                    "h3", has_text="Audit findings"))
                if tables.count():
                    tables.first.scroll_into_view_if_needed()
                    time.sleep(0.3)
                    page.screenshot(path=str(out / f"{prefix}-focus-tables-{width}.png"))
                page.keyboard.press("Escape")
                if width == SIZES[-1][0]:  # last: a decision changes what the next shows
                    page.keyboard.press("a")  # a decision: its toast
                    time.sleep(0.6)
                    page.screenshot(path=str(out / f"{prefix}-toast-{width}.png"))
                page.close()
        with running_server(work / "shapes", token=TOKEN, author="reviewer") as server:
            for width, height in SIZES:
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto(server.url)
                _ready(page)
                page.screenshot(path=str(out / f"{prefix}-detection-{width}.png"))
                page.keyboard.press("Enter")
                time.sleep(1.5)
                page.screenshot(path=str(out / f"{prefix}-detection-focus-{width}.png"))
                page.close()
        browser.close()


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(Path(sys.argv[2]))
    else:
        shoot(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])
