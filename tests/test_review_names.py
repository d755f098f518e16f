"""Reasons name files, not sample ids (issue #20): a plan item "mark duplicate of ID" reaches
the page with the state of the sample it names, and the card and focus caption show that
sample's file. API in process; the caption in Debian's Chromium (skipped without it)."""

import json
import os
import time
from pathlib import Path

import pytest
from review_helpers import TOKEN, Client, make_workspace

from smartset.review import running_server
from smartset.review.app import create_app

CHROMIUM = Path(os.environ.get("SMARTSET_CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture
def planned(tmp_path):
    """A workspace whose plan marks cat_01 a duplicate of dog_00 (not in the plan itself)."""
    ws = make_workspace(tmp_path / "ws", {"cat": 2, "dog": 2})
    ids = dict(zip(ws.samples()["relpath"], ws.samples()["id"]))
    plan = {"format": "smartset.clean-plan/1", "run_id": 1, "created_at": "2024-01-01",
            "version": None, "params": {}, "actions": [
                {"id": "a0001", "action": "duplicate_of", "sample_id": ids["cat/cat_01.png"],
                 "value": ids["dog/dog_00.png"], "detector": "duplicates", "score": 0.99,
                 "reason": "near copy", "evidence": {}}]}
    path = ws.reports_dir / "clean" / "plan.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan))
    with ws.catalog.write() as con:
        con.execute("INSERT INTO artifacts(name, path, kind, created_at) VALUES (?, ?, ?, ?)",
                    ("clean-1", str(path.relative_to(ws.path)), "clean_plan", "2024-01-01"))
    yield ws, ids
    ws.close()


def test_the_queue_sends_the_state_of_samples_its_reasons_name(planned):
    ws, ids = planned
    client = Client(create_app(ws.path, token=TOKEN))
    try:
        queue = client.get("/api/queue", params={"name": "plan:clean-1"}).json()
    finally:
        client.close()
    assert ids["dog/dog_00.png"] in queue["entries"][0]["reason"]
    assert queue["items"][ids["dog/dog_00.png"]]["relpath"] == "dog/dog_00.png"
    assert set(queue["items"]) == {ids["cat/cat_01.png"], ids["dog/dog_00.png"]}


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}")
def test_the_card_and_the_focus_caption_show_the_file_not_the_id(planned):
    from playwright.sync_api import sync_playwright

    ws, ids = planned
    with sync_playwright() as playwright, running_server(ws.path, token=TOKEN) as server:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(server.url + "&queue=plan:clean-1")
        deadline = time.monotonic() + 30
        while not page.evaluate("Boolean(window.smartsetReview && window.smartsetReview.ready"
                                " && document.querySelector('#grid .card .reason'))"):
            assert time.monotonic() < deadline, "the plan queue did not load"
            time.sleep(0.05)
        caption = page.locator("#grid .card .reason").first.text_content()
        page.keyboard.press("Enter")
        while "dog/dog_00.png" not in (page.locator("#focus-caption").text_content() or ""):
            assert time.monotonic() < deadline + 30, page.locator("#focus-caption").text_content()
            time.sleep(0.05)
        focus = page.locator("#focus-caption").text_content()
        browser.close()
    assert caption.startswith("mark duplicate of dog_00.png"), caption  # a card: the name
    assert ids["dog/dog_00.png"] not in caption and ids["dog/dog_00.png"] not in focus
