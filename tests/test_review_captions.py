"""Grid captions say why in the two lines they have (issue #20): a duplicate card's caption
does not repeat the set name its badge shows. In Debian's Chromium (never a downloaded
browser); skipped without it."""

import os
import shutil
import time
from pathlib import Path

import pytest
from review_helpers import TOKEN, make_workspace

from smartset.review import running_server

CHROMIUM = Path(os.environ.get("SMARTSET_CHROMIUM", "/usr/bin/chromium"))

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}")


def _wait(page, expression, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.05)


def test_duplicate_cards_show_the_set_in_the_badge_and_the_reason_once(tmp_path):
    from playwright.sync_api import sync_playwright

    from smartset.audit import audit

    source = tmp_path / "ws-src"
    ws = make_workspace(tmp_path / "ws", {"cat": 3, "dog": 3})
    shutil.copy(source / "cat" / "cat_00.png", source / "dog" / "copy_of_cat_00.png")
    ws.ingest(source, engine="serial", show_progress=False)
    audit(ws, features="pixels", show_progress=False, report=False)
    with sync_playwright() as playwright, running_server(ws.path, token=TOKEN) as server:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(server.url + "&queue=duplicates")
        _wait(page, "Boolean(window.smartsetReview && window.smartsetReview.ready)")
        _wait(page, "window.smartsetReview.state.queue.id === 'duplicates'")
        _wait(page, "document.querySelectorAll('#grid .card').length === 2")
        cards = page.evaluate(
            "[...document.querySelectorAll('#grid .card')].map(c => ["
            "c.querySelector('.reason').textContent, c.querySelector('.reason').title,"
            "[...c.querySelectorAll('.badge')].map(b => b.textContent)])")
        browser.close()
    ws.close()
    for caption, whole, badges in cards:
        group = next(b for b in badges if b.startswith("exact-"))
        assert whole.startswith(f"exact duplicate {group}: ")  # the full reason, in the title
        assert caption == whole[len(f"exact duplicate {group}: "):]
        assert caption.startswith("same bytes or pixels in a set of 2"), caption
