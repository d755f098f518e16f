"""The review app in a real browser: Debian's Chromium driven by Playwright (never a
downloaded browser). Relabel three images by keyboard, undo one, mark a duplicate, merge
two classes, reload, and the catalog holds exactly those events; markup in class and file
names shows as text. Screenshots of the grid and the focus view go to tests/artifacts/review/.
"""

import os
import shutil
import time
from pathlib import Path

import pytest
from review_helpers import TOKEN, make_workspace

import smartset
from smartset.review import running_server

CHROMIUM = Path(os.environ.get("SMARTSET_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).parent / "artifacts" / "review"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"no Chromium at {CHROMIUM}: install Debian's package (apt-get install chromium; "
           f".ci/run does) or set SMARTSET_CHROMIUM")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        yield browser
        browser.close()


def open_app(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    problems = []
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"),
                                      dialog.dismiss()))
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}")
            if msg.type == "error" else None)
    page.goto(url)
    wait_ready(page)
    return page, problems


def wait_js(page, expression, timeout=60.0):
    """Poll ``expression`` until true. (Playwright's wait_for_function evaluates strings
    in the page, which the app's Content-Security-Policy forbids; evaluate() does not.)
    The timeout only catches a page that never gets there: it is generous so that a loaded
    machine (a first focus request took ~9 s at load 18) cannot fail the test."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.02)


def wait_ready(page):
    wait_js(page, "Boolean(window.smartsetReview && window.smartsetReview.ready)")
    wait_js(page, "window.smartsetReview.metrics.firstPaintMs !== null")


def settle(page):
    wait_js(page, "window.smartsetReview.metrics.pending === 0")


def card_label(page, index):
    return page.locator(f'#grid .card[data-index="{index}"] .label').inner_text()


def test_keyboard_review_end_to_end(browser, tmp_path):
    ws = make_workspace(tmp_path / "ws", {"bird": 3, "cat": 4, "dog": 3})
    ids = dict(zip(ws.samples()["relpath"].str.split("/").str[-1].str[:-4], ws.samples()["id"]))
    ingest_events = len(ws.history())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with running_server(ws.path, token=TOKEN, author="tester") as server:
        page, problems = open_app(browser, server.url)
        assert "token" not in page.url  # the token left the address bar
        # no audit and no cleaning yet: the app opens on "not yet reviewed", in file order
        assert page.locator("#queue-title").inner_text() == "Not yet reviewed"
        assert page.locator("#progress").inner_text() == "0 of 10 reviewed"
        assert page.locator("#grid .card").count() == 10
        keys = {c["name"]: c["key"] for c in page.evaluate("window.smartsetReview.state.classes")}
        assert keys == {"bird": "1", "cat": "2", "dog": "3"}
        page.screenshot(path=str(ARTIFACTS / "grid.png"))

        # relabel three images by keyboard (each decision moves on to the next image)
        page.keyboard.press(keys["dog"])   # bird_00 -> dog
        page.keyboard.press(keys["cat"])   # bird_01 -> cat
        page.keyboard.press(keys["dog"])   # bird_02 -> dog
        settle(page)
        assert [card_label(page, i) for i in range(3)] == ["dog", "cat", "dog"]
        assert page.locator("#progress").inner_text() == "3 of 10 reviewed"
        page.keyboard.press("u")           # undo the last one
        settle(page)
        assert card_label(page, 2) == "bird"
        assert page.locator("#progress").inner_text() == "2 of 10 reviewed"

        # mark a duplicate: select cat_00 as the original, then d on cat_01
        page.keyboard.press("j")           # the cursor is on cat_00 (index 3)
        page.keyboard.press("k")
        assert page.evaluate("window.smartsetReview.state.cursor") == 3
        page.keyboard.press("s")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("d")
        settle(page)
        assert "dup of" in page.locator('#grid .card[data-index="4"] .badges').inner_text()

        # the focus view of cat_01: large image, neighbours' hint, history
        page.keyboard.press("k")
        page.keyboard.press("Enter")
        wait_js(page, "document.querySelector('#focus-info section') !== null")
        assert page.locator("#focus-img").evaluate("img => img.complete && img.naturalWidth > 0")
        info = page.locator("#focus-info").inner_text()
        assert "smartset audit" in info and "Label history" in info
        page.screenshot(path=str(ARTIFACTS / "focus.png"))
        page.keyboard.press("Escape")

        # the keys help
        page.keyboard.press("?")
        assert "accept the current label" in page.locator("#help").inner_text()
        page.keyboard.press("Escape")

        # merge two classes (by mouse): bird and dog into animal
        page.click("#btn-merge")
        page.check('#merge-sources input[value="bird"]')
        page.check('#merge-sources input[value="dog"]')
        page.fill("#merge-into", "animal")
        page.click("#merge-go")
        settle(page)
        wait_js(page, "window.smartsetReview.state.classes.some(c => c.name === 'animal')")
        names = [c["name"] for c in page.evaluate("window.smartsetReview.state.classes")]
        assert names == ["animal", "cat"]

        page.reload()
        wait_ready(page)
        assert page.locator("#progress").inner_text() == "3 of 10 reviewed"
        # what was reviewed has left "not yet reviewed"; the rest shows the merged labels
        shown = page.evaluate("[...document.querySelectorAll('#grid .card')].map("
                              "c => [c.dataset.sample, c.querySelector('.label').textContent])")
        assert shown == [[ids["bird_02"], "animal"], [ids["cat_00"], "cat"], [ids["cat_02"], "cat"],
                         [ids["cat_03"], "cat"], [ids["dog_00"], "animal"],
                         [ids["dog_01"], "animal"], [ids["dog_02"], "animal"]]
        page.click('#queue-list button[data-queue="class:cat"]')
        wait_js(page, "window.smartsetReview.state.queue.id === 'class:cat'")
        assert page.locator("#progress").inner_text() == "2 of 5 reviewed"
        badges = page.locator(f'#grid .card[data-sample="{ids["cat_01"]}"] .badges').inner_text()
        assert "dup of cat/cat_00.png" in badges  # the original by its file, not its id
        assert problems == []
        page.close()

    # the catalog holds exactly those events
    with smartset.open(ws.path) as check:
        events = check.history().iloc[ingest_events:]
        got = [(r.sample_id, r.label, r.origin, r.author, r.reason) for r in events.itertuples()]
        undone = int(events.iloc[2]["id"])
        q = "queue=unreviewed"
        merged = ("merge classes 'bird', 'dog' into 'animal'")
        assert got[:4] == [
            (ids["bird_00"], "dog", "review", "tester", f"{q}: 'bird' -> 'dog'"),
            (ids["bird_01"], "cat", "review", "tester", f"{q}: 'bird' -> 'cat'"),
            (ids["bird_02"], "dog", "review", "tester", f"{q}: 'bird' -> 'dog'"),
            (ids["bird_02"], "bird", "undo", "tester", f"{q}: undo event {undone}")]
        assert int(events.iloc[3]["reverts"]) == undone
        assert sorted(got[4:]) == sorted(
            (ids[n], "animal", "review-class", "tester", f"{q}: {merged}")
            for n in ("bird_00", "bird_02", "dog_00", "dog_01", "dog_02"))
        marks = check.mark_history()
        assert [(r.sample_id, r.kind, r.value, r.origin, r.reason) for r in marks.itertuples()] == [
            (ids["cat_01"], "duplicate_of", ids["cat_00"], "review",
             f"{q}: duplicate of {ids['cat_00']}")]
    print(f"\nscreenshots: {ARTIFACTS / 'grid.png'}, {ARTIFACTS / 'focus.png'}")


def test_markup_in_names_renders_as_text(browser, tmp_path):
    evil_class = "<script>alert(1)</script>"
    evil_file = "<img src=x onerror=alert(2)>"
    ws = make_workspace(tmp_path / "ws", {"cat": 2, "dog": 1})
    source = tmp_path / "ws-src"
    shutil.copy(source / "dog" / "dog_00.png", source / "dog" / f"{evil_file}.png")
    ws.ingest(source, engine="serial", show_progress=False)
    ws.rename_label("cat", evil_class)
    with running_server(ws.path, token=TOKEN) as server:
        page, problems = open_app(browser, server.url)
        assert evil_class in page.locator("#class-list").inner_text()
        page.click(f'#queue-list button[data-queue="class:{evil_class}"]')
        wait_js(page, "window.smartsetReview.state.queue.id.startsWith('class:<')")
        assert page.locator("#queue-title").inner_text() == f"Class {evil_class}"
        assert page.locator("#grid .card .label").first.inner_text() == evil_class
        page.click('#queue-list button[data-queue="class:dog"]')
        wait_js(page, "window.smartsetReview.state.queue.id === 'class:dog'")
        page.keyboard.press("Enter")
        wait_js(page, "document.querySelector('#focus-caption').textContent.includes('onerror')")
        assert evil_file in page.locator("#focus-caption").inner_text()
        assert page.locator("script").count() == 1  # only the app's own
        assert page.locator("#main img[src='x']").count() == 0
        assert problems == [] and page.evaluate("typeof window.alertCalled") == "undefined"
        page.close()


# -- layout: what a person reads (measured, at the two common screen sizes) -------------------
SIZES = [(1280, 800), (1920, 1080)]
LONG_REASON = ("labeled 'cat' but the model gives 'smartphone_with_case' 97% (and 'cat' 3%), 98% "
               "of its neighbours' vote says 'smartphone_with_case'; flagged by 4 detector(s): "
               "consensus, confident_learning, enn, knn_posterior")


def _add_issue_and_finding(ws, sample_id):
    clean_run = ws.catalog.start_run("clean", {})
    with ws.catalog.write() as con:
        con.execute(
            "INSERT INTO label_issues(run_id, sample_id, kind, score, label, suggested, detectors,"
            " reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (clean_run, sample_id, "wrong_label", 0.97, "cat", "smartphone_with_case", "[]",
             LONG_REASON))
    ws.catalog.finish_run(clean_run, {})
    audit_run = ws.catalog.start_run("audit", {})
    with ws.catalog.write() as con:
        con.execute(
            "INSERT INTO audit_findings(run_id, kind, sample_id, score, threshold, reason, grp)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (audit_run, "class_outlier", sample_id, 0.609, 0.56, "far from its class 'cat': "
             "similarity to the class centre 0.39, below 0.56", None))
    ws.catalog.finish_run(audit_run, {})


def _fits(locator) -> bool:
    """Nothing of the element's text is cut off (no ellipsis, no hidden overflow)."""
    return locator.evaluate("e => e.scrollWidth <= e.clientWidth && e.scrollHeight <= e.clientHeight")


def test_cards_focus_tables_and_toasts_read_well(browser, tmp_path):
    ws = make_workspace(tmp_path / "ws", {"cat": 3, "smartphone_with_case": 2})
    cat = ws.samples().set_index("relpath").loc["cat/cat_00.png", "id"]
    _add_issue_and_finding(ws, cat)
    with running_server(ws.path, token=TOKEN, author="tester") as server:
        for width, height in SIZES:
            page, problems = open_app(browser, server.url + "&queue=suspicious")
            page.set_viewport_size({"width": width, "height": height})
            wait_js(page, "window.smartsetReview.state.queue.id === 'suspicious'")
            card = page.locator('#grid .card[data-index="0"]')
            # the grid card says which class is suggested, whole, however long the reason
            suggest = card.locator(".suggest")
            assert suggest.inner_text().replace("\n", " ") == "→ smartphone_with_case"
            assert _fits(suggest) and _fits(suggest.locator(".name"))
            # the focus view's tables: short facts on one line, the reason at full width
            page.keyboard.press("Enter")
            wait_js(page, "document.querySelector('#focus-info table.findings') !== null")
            for title in ("Label issues", "Audit findings"):
                section = page.locator("#focus-info section", has=page.locator(
                    "h3", has_text=title))
                kind = section.locator(".facts .kind")
                assert kind.evaluate("e => e.getClientRects().length") == 1  # one line
                box = kind.bounding_box()
                assert box["height"] < 20 and box["width"] > 6 * len(kind.inner_text())
                why = section.locator(".why td").bounding_box()
                assert why["width"] > 200, (width, title, why)  # > ~35 characters a line
            facts = page.locator("#focus-info .facts").first.inner_text()
            assert facts == "wrong_label · 0.97 · suggested smartphone_with_case"
            page.screenshot(path=str(ARTIFACTS / f"focus-{width}x{height}.png"))
            page.keyboard.press("Escape")
            assert problems == []
            page.close()
        # a decision's toast names the file, not the sample id
        page, problems = open_app(browser, server.url + "&queue=suspicious")
        page.keyboard.press("a")
        settle(page)
        toast = page.locator("#toast").inner_text()
        assert toast.startswith("cat/cat_00.png: ") and cat not in toast, toast
        assert problems == []
        page.close()


def test_detection_cards_show_their_boxes(browser, tmp_path):
    from review_helpers import write_images
    from smartset import detection as det

    write_images(tmp_path / "src" / "images", {"x": 3}, size=48)
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(tmp_path / "src" / "images" / "x", layout="unlabeled", engine="serial",
              show_progress=False)
    first, second, third = ws.samples().sort_values("relpath")["id"]
    det.add_box(ws, first, "knife", [2, 2, 10, 10])
    det.add_box(ws, first, "phone", [20, 20, 8, 8])
    det.add_box(ws, first, "knife", [30, 4, 6, 6])
    det.add_box(ws, second, "phone", [5, 5, 20, 20])
    with running_server(ws.path, token=TOKEN) as server:
        page, problems = open_app(browser, server.url)
        page.set_viewport_size({"width": 1280, "height": 800})
        labels = page.evaluate("[...document.querySelectorAll('#grid .card')].map(c => ["
                               "c.dataset.sample, c.querySelector('.label').textContent,"
                               "(c.querySelector('.boxes-line') || {}).textContent || ''])")
        assert sorted(labels) == sorted([[first, "3 boxes", "knife 2, phone"],
                                         [second, "1 box", "phone"], [third, "no boxes", ""]])
        assert all(_fits(page.locator(f'#grid .card[data-sample="{s}"] .boxes-line'))
                   for s in (first, second))
        page.click(f'#grid .card[data-sample="{first}"]')
        page.keyboard.press("Enter")
        wait_js(page, "document.querySelector('#focus-caption').textContent.includes('box')")
        caption = page.locator("#focus-caption").inner_text()
        assert caption.startswith("3 boxes: knife 2, phone · ") and "(unlabeled)" not in caption
        assert problems == []
        page.close()
