"""Detection boxes and masks in the review app: drawn over the image in the focus view, and
relabelled or deleted by a person as audited annotation events (API in process, and in a
real browser by keyboard and mouse)."""

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from detection_helpers import imported
from PIL import Image
from review_helpers import TOKEN, Client

import smartset
from smartset import detection as det
from smartset.review import running_server
from smartset.review.app import create_app

CHROMIUM = Path(os.environ.get("SMARTSET_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).parent / "artifacts" / "review"


@pytest.fixture
def dws(tmp_path):
    ws, _ = imported(tmp_path, n=6, seed=3, max_objects=3, empty_fraction=0.0)
    yield ws
    ws.close()


@pytest.fixture
def client(dws):
    c = Client(create_app(dws.path, token=TOKEN, author="ana"))
    yield c
    c.close()


def sample_with_boxes(ws, at_least=2):
    frame = det.annotations(ws)
    counts = frame.groupby("sample_id").size()
    return counts[counts >= at_least].index[0], frame


def test_focus_view_lists_boxes_polygons_and_masks(client, dws):
    frame = det.annotations(dws)
    session = client.get("/api/session").json()
    assert set(session["box_categories"]) >= set(frame["category"])
    for sample_id, own in frame.groupby("sample_id"):
        overlays = client.get(f"/api/samples/{sample_id}").json()["overlays"]
        assert {o["annotation_id"] for o in overlays} == set(own["id"])
        by_id = own.set_index("id")
        for o in overlays:
            row = by_id.loc[o["annotation_id"]]
            assert o["category"] == row["category"] and o["kind"] == row["kind"]
            assert o["bbox"] == pytest.approx([row["x"], row["y"], row["w"], row["h"]])
            assert o["colour"].startswith("#") and len(o["colour"]) == 7
            assert ("polygons" in o) == (row["kind"] == "polygon")
            assert o.get("mask", False) == (row["kind"] == "mask")
        areas = [o["bbox"][2] * o["bbox"][3] for o in overlays]
        assert areas == sorted(areas, reverse=True)  # small boxes drawn last, on top
    # an RLE mask comes back as a transparent PNG of the image's size, coloured where the
    # mask is set and clear elsewhere
    mask_row = frame[frame["kind"] == "mask"].iloc[0]
    response = client.get(f"/api/annotations/{mask_row['id']}/mask")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    rgba = np.asarray(Image.open(io.BytesIO(response.content)))
    assert rgba.shape == (mask_row["height"], mask_row["width"], 4)
    truth = det.rle.annotation_mask(mask_row["segmentation"], None, mask_row["height"],
                                    mask_row["width"]).astype(bool)
    assert np.array_equal(rgba[..., 3] > 0, truth)
    polygon_row = frame[frame["kind"] == "polygon"].iloc[0]
    assert client.get(f"/api/annotations/{polygon_row['id']}/mask").status_code == 404
    assert client.get("/api/annotations/0123/mask", token=None).status_code == 403


def test_relabel_delete_and_undo_boxes_are_audited_events(client, dws):
    sample_id, frame = sample_with_boxes(dws)
    first, second = frame[frame["sample_id"] == sample_id]["id"].iloc[:2]
    before = {o["annotation_id"]: o for o in
              client.get(f"/api/samples/{sample_id}").json()["overlays"]}
    queue = "audit:touches_border"
    relabel = client.post("/api/boxes", json={
        "action": "relabel", "annotation_id": first, "category": "blob", "queue": queue,
        "expected_event": before[first]["event_id"], "author": "bo"}).json()
    assert relabel["sample_id"] == sample_id and len(relabel["annotation_events"]) == 1
    assert {o["annotation_id"]: o["category"] for o in relabel["overlays"]}[first] == "blob"
    assert relabel["sample"]["reviewed"] is True  # a box decision reviews the image
    delete = client.post("/api/boxes", json={
        "action": "delete", "annotation_id": second, "queue": queue,
        "expected_event": before[second]["event_id"]}).json()
    assert second not in {o["annotation_id"] for o in delete["overlays"]}
    history = det.annotation_history(dws, sample_id=sample_id)
    mine = history[history["origin"] == "review"]
    assert mine["author"].tolist() == ["bo", "ana"]
    assert mine["reason"].str.startswith(f"queue={queue}: box ").all()
    assert mine["category"].tolist()[0] == "blob" and mine["deleted"].tolist() == [0, 1]
    assert "blob" in client.get("/api/session").json()["box_categories"]

    # a stale view (based on the event before the relabel) is a conflict; nothing written
    stale = client.post("/api/boxes", json={
        "action": "delete", "annotation_id": first, "queue": queue,
        "expected_event": before[first]["event_id"]})
    assert stale.status_code == 409
    detail = stale.json()["error"]["detail"]
    assert detail["current"]["category"] == "blob" and detail["current"]["author"] == "bo"
    assert len(det.annotation_history(dws, first)) == 2

    # undo both, newest first: the boxes come back as they were
    undo = client.post("/api/undo", json={
        "annotation_events": relabel["annotation_events"] + delete["annotation_events"],
        "queue": queue}).json()
    assert len(undo["annotation_events"]) == 2 and sample_id in undo["samples"]
    after = {o["annotation_id"]: o["category"] for o in
             client.get(f"/api/samples/{sample_id}").json()["overlays"]}
    assert after == {k: v["category"] for k, v in before.items()}
    assert undo["samples"][sample_id]["reviewed"] is False  # every review event was undone
    # undoing an event that is no longer the newest of its box is a conflict
    again = client.post("/api/undo", json={"annotation_events": relabel["annotation_events"],
                                           "queue": queue})
    assert again.status_code == 409


def test_bad_box_requests_get_clear_errors(client, dws):
    sample_id, frame = sample_with_boxes(dws, 1)
    aid = frame["id"].iloc[0]
    unknown = client.post("/api/boxes", json={"action": "delete", "annotation_id": "feedface",
                                              "queue": "unreviewed"})
    assert unknown.status_code == 400 and "No annotation" in unknown.json()["error"]["message"]
    for body in ({"action": "relabel", "annotation_id": aid, "queue": "q"},          # no category
                 {"action": "relabel", "annotation_id": aid, "queue": "q", "category": "  "}):
        response = client.post("/api/boxes", json=body)
        assert response.status_code == 400, response.text
    for body in ({"action": "move", "annotation_id": aid, "queue": "q"},
                 {"action": "delete", "annotation_id": "../x", "queue": "q"},
                 {"action": "delete", "annotation_id": aid, "queue": "q", "extra": 1}):
        assert client.post("/api/boxes", json=body).status_code == 422
    assert len(det.annotation_history(dws, aid)) == 1  # nothing was written


# -- in a real browser --------------------------------------------------------------------------
def _wait(page, expression, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.02)


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}: install "
                    f"Debian's package (apt-get install chromium; .ci/run does)")
def test_boxes_drawn_relabelled_and_deleted_by_keyboard(dws):
    from playwright.sync_api import sync_playwright

    sample_id, frame = sample_with_boxes(dws, 2)
    own = frame[frame["sample_id"] == sample_id]
    categories = dws.catalog.query("SELECT name FROM annotation_categories ORDER BY number")
    categories = [r[0] for r in categories]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with running_server(dws.path, token=TOKEN, author="tester") as server, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        problems = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(server.url)
        _wait(page, "Boolean(window.smartsetReview && window.smartsetReview.ready)")
        index = page.evaluate(f"window.smartsetReview.state.entries.findIndex("
                              f"e => e.sample_id === {sample_id!r})")  # on the opened queue
        assert index >= 0
        for _ in range(index):
            page.keyboard.press("j")
        page.keyboard.press("Enter")
        _wait(page, "document.querySelectorAll('#focus-overlay g.box').length > 0")
        groups = page.locator("#focus-overlay g.box")
        assert groups.count() == len(own)
        drawn = {groups.nth(i).get_attribute("data-annotation"): groups.nth(i).get_attribute(
            "data-category") for i in range(groups.count())}
        assert drawn == dict(zip(own["id"], own["category"]))
        # the boxes sit on the image: the overlay's viewBox is the image's pixel grid
        assert page.locator("#focus-overlay").get_attribute("viewBox") == \
            f"0 0 {int(own['width'].iloc[0])} {int(own['height'].iloc[0])}"
        assert page.locator("#box-panel tbody tr").count() == len(own)
        page.screenshot(path=str(ARTIFACTS / "focus-boxes.png"))

        # b selects the first (largest) box; the key of another category relabels it
        page.keyboard.press("b")
        _wait(page, "window.smartsetReview.state.box === 0")
        first = page.evaluate("window.smartsetReview.state.boxes[0]")
        target = next(c for c in categories if c != first["category"])
        page.keyboard.press(str(categories.index(target) + 1))
        _wait(page, f"window.smartsetReview.state.boxes.some(b => b.annotation_id === "
                    f"{first['annotation_id']!r} && b.category === {target!r})")
        # Shift+b wraps to the last box; Delete removes it
        page.keyboard.press("Shift+B")
        last = page.evaluate("window.smartsetReview.state.boxes[window.smartsetReview.state.box]")
        page.keyboard.press("Delete")
        _wait(page, f"!window.smartsetReview.state.boxes.some(b => b.annotation_id === "
                    f"{last['annotation_id']!r})")
        _wait(page, f"document.querySelectorAll('#focus-overlay g.box').length === {len(own) - 1}")
        _wait(page, "document.querySelector('#focus-info').innerText.includes('(deleted)')")
        # a click selects a box; / types a new category for it
        page.locator("#focus-overlay g.box rect").first.click()
        page.keyboard.press("/")
        page.keyboard.type("odd shape")
        page.keyboard.press("Enter")
        _wait(page, "window.smartsetReview.state.boxes.some(b => b.category === 'odd shape')")
        # u undoes the last decision: the typed category goes, the first relabel stays
        page.keyboard.press("Escape")
        page.keyboard.press("u")
        _wait(page, "!window.smartsetReview.state.boxes.some(b => b.category === 'odd shape')")
        page.screenshot(path=str(ARTIFACTS / "focus-boxes-edited.png"))
        browser.close()
    assert problems == []
    now = det.annotations(dws).set_index("id")
    assert now.loc[first["annotation_id"], "category"] == target
    assert last["annotation_id"] not in now.index
    history = det.annotation_history(dws, sample_id=sample_id)
    review = history[history["origin"].isin(["review", "undo"])]
    assert review["origin"].tolist() == ["review", "review", "review", "undo"]
    assert set(review["author"]) == {"tester"}
