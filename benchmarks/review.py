"""Review app: time to first paint of a 200-thumbnail grid, and per-keystroke latency, on a
10,000-image MNIST workspace (2,000 with ``--quick``), in Debian's Chromium (Playwright,
``/usr/bin/chromium``; no browser is ever downloaded).

The workspace is built once from ``mnist10k.npz`` and cached under ``benchmarks/.cache/``
with every thumbnail generated (the app's thumbnails are cached by content hash). Each run
works on a copy of its catalog (images and thumbnails shared by symlink), so the cache
stays as built.

1. First paint: a fresh browser context (empty HTTP cache) opens the app on the
   "not yet reviewed" queue (all images); time from navigation start until the first 200
   thumbnails have loaded (the app's own ``performance.now()`` mark), median of
   ``--repeat`` loads. The API calls it makes (``/api/session``, ``/api/queue``) are also
   timed alone, from Python.
2. Keystrokes: a class key pressed on successive images (each press a relabel: the key
   event, the POST with its version check, the catalog transaction, the DOM update), and
   ``j`` (move on: DOM only). Latency is measured in the page from the key event to the
   updated DOM; also from Playwright's side (press until the page says it is done).
3. Suspicious labels by keyboard (not with ``--quick``): for the MNIST workspace and the
   741 guns-smartphones photos, audit (cached), out-of-fold predictions (logistic
   regression on the audit's embeddings, 5 folds; a stand-in until the learning stage
   writes them), ``smartset.clean.make_plan`` (the suspicious-labels queue), then 20 items
   reviewed by keyboard: the suggested class's key when there is one, else ``a``.

There is no peer to compare with. The last line of stdout is JSON with ``first_paint_ms``
and ``keystroke_ms`` (medians).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import DEFAULT_DATA, locate  # noqa: E402

import smartset  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache"
CHROMIUM = Path(os.environ.get("SMARTSET_CHROMIUM", "/usr/bin/chromium"))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"folder holding guns-smartphones/ and mnist10k.npz "
                             f"(default {DEFAULT_DATA})")
    parser.add_argument("--quick", action="store_true",
                        help="2,000 images, 3 loads, 30 keystrokes, no suspicious-label section")
    parser.add_argument("--images", type=int, default=None, help="workspace size (default 10,000)")
    parser.add_argument("--repeat", type=int, default=None, help="page loads (default 5; 3 quick)")
    parser.add_argument("--keys", type=int, default=None, help="keystrokes (default 100; 30 quick)")
    args = parser.parse_args(argv)
    args.images = args.images or (2_000 if args.quick else 10_000)
    args.repeat = args.repeat or (3 if args.quick else 5)
    args.keys = args.keys or (30 if args.quick else 100)
    return args


# -- the workspaces, built once ------------------------------------------------------------

def thumbnails(ws) -> tuple[int, float]:
    """Make every thumbnail the grid shows (cached by content hash): (made, seconds)."""
    from smartset.review.app import THUMB_SIZE
    from smartset.thumbs import thumbnail_jpeg

    started = time.perf_counter()
    made = 0
    for row in ws.samples(include_excluded=True).itertuples():
        target = ws.cache_dir / "thumbs" / str(THUMB_SIZE) / row.sha256[:2] / f"{row.sha256}.jpg"
        if not target.exists():
            thumbnail_jpeg(ws.cache_dir, row.path, row.sha256, size=THUMB_SIZE)
            made += 1
    return made, time.perf_counter() - started


def mnist_workspace(npz: Path, n: int) -> Path:
    import numpy as np

    folder = CACHE / f"review-mnist-{n}"
    path = folder / "ws"
    if (folder / "done").exists():
        return path
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    with np.load(npz) as archive:
        images, labels = archive["images"][:n], archive["labels"][:n]
    np.savez(folder / f"mnist{n}.npz", images=images, labels=labels)
    started = time.perf_counter()
    with smartset.init(path) as ws:
        ws.ingest(folder / f"mnist{n}.npz", show_progress=False)
        made, seconds = thumbnails(ws)
    print(f"built the {n:,}-image MNIST workspace in {time.perf_counter() - started:.1f} s "
          f"({made:,} thumbnails in {seconds:.1f} s), cached in {folder}")
    (folder / "done").touch()
    return path


def photos_workspace(photos: Path) -> Path:
    folder = CACHE / "review-photos"
    path = folder / "ws"
    if (folder / "done").exists():
        return path
    shutil.rmtree(folder, ignore_errors=True)
    with smartset.init(path) as ws:
        ws.ingest(photos, show_progress=False)
        thumbnails(ws)
    (folder / "done").touch()
    return path


def working_copy(base: Path, scratch: Path) -> Path:
    """A workspace sharing ``base``'s images and thumbnails, with its own catalog."""
    ws = Path(tempfile.mkdtemp(dir=scratch)) / "ws"
    ws.mkdir()
    with smartset.open(base) as source:  # a consistent copy, WAL included
        import sqlite3

        target = sqlite3.connect(ws / "catalog.sqlite")
        with source.catalog.read() as con:
            con.backup(target)
        target.close()
    for name in ("data", "cache"):
        (ws / name).symlink_to(base / name)
    shutil.copytree(base / "reports", ws / "reports")  # cleaning plans; small
    return ws


# -- the browser ---------------------------------------------------------------------------

def wait_js(page, expression: str, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {expression}")
        time.sleep(0.005)


def api_time(server, path: str, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        request = urllib.request.Request(server.base + path,
                                         headers={"X-Smartset-Token": server.token})
        started = time.perf_counter()
        with urllib.request.urlopen(request) as response:
            response.read()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def first_paint(browser, server, repeat: int) -> dict:
    paints, pages, marks = [], [], []
    for _ in range(repeat):
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.goto(server.url + "&queue=unreviewed")
        paint = wait_js(page, "window.smartsetReview && window.smartsetReview.metrics.firstPaintMs")
        loaded = page.evaluate("document.querySelectorAll('#grid .card img').length")
        paints.append(paint)
        pages.append(loaded)
        marks.append(page.evaluate("window.smartsetReview.metrics.marks"))
        context.close()
    phases = {name: statistics.median(m[name] for m in marks)
              for name in ("start", "session", "queue", "cards")}
    return {"ms": paints, "thumbnails": pages, "phases": phases}


def keystrokes(browser, server, n: int, key: str) -> dict:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(server.url + "&queue=unreviewed")
    wait_js(page, "window.smartsetReview && window.smartsetReview.ready")
    wait_js(page, "window.smartsetReview.metrics.firstPaintMs")
    outside = []
    for i in range(n):
        started = time.perf_counter()
        page.keyboard.press(key)
        wait_js(page, f"window.smartsetReview.metrics.decisions.length >= {i + 1} && "
                      f"window.smartsetReview.metrics.pending === 0")
        outside.append((time.perf_counter() - started) * 1000)
    inside = page.evaluate("window.smartsetReview.metrics.decisions")
    for _ in range(n):
        before = page.evaluate("window.smartsetReview.metrics.navigations.length")
        page.keyboard.press("j")
        wait_js(page, f"window.smartsetReview.metrics.navigations.length > {before}")
    nav = page.evaluate("window.smartsetReview.metrics.navigations")
    context.close()
    return {"decision_ms": inside, "decision_wall_ms": outside, "move_ms": nav[-n:]}


def stats(values) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    return f"{statistics.median(values):8.1f} {p95:8.1f} {values[-1]:8.1f}"


# -- suspicious labels, end to end -----------------------------------------------------------

def prepare_suspicious(base: Path) -> int:
    """Audit, out-of-fold predictions and a cleaning plan in the cached workspace (once)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from smartset.audit import audit, embeddings
    from smartset.clean import make_plan
    from smartset.predictions import write_predictions

    with smartset.open(base) as ws:
        if ws.catalog.query("SELECT COUNT(*) FROM label_issues")[0][0]:
            return ws.catalog.query("SELECT COUNT(DISTINCT sample_id) FROM label_issues")[0][0]
        if not ws.catalog.query("SELECT 1 FROM runs WHERE command='audit' AND status='done'"):
            audit(ws, show_progress=False, report=False)
        samples = ws.samples()
        ids, vectors = embeddings(ws, samples["id"])
        labels = samples.set_index("id").loc[list(ids), "label"].to_numpy()
        classes = sorted(set(labels))
        y = np.array([classes.index(label) for label in labels])
        probs = np.zeros((len(y), len(classes)), dtype=np.float32)
        folds = np.zeros(len(y), dtype=np.int64)
        for fold, (train, test) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0)
                                             .split(vectors, y)):
            model = LogisticRegression(max_iter=300).fit(vectors[train], y[train])
            probs[test] = model.predict_proba(vectors[test])
            folds[test] = fold
        run = ws.catalog.start_run("predict", {"classes": classes, "model": "logreg on audit "
                                               "embeddings (benchmark stand-in)", "oof": True})
        write_predictions(ws.catalog, run, list(ids), kind="oof", classes=classes, probs=probs,
                          labels=list(labels), folds=folds)
        ws.catalog.finish_run(run, {"accuracy": float((probs.argmax(1) == y).mean())})
        make_plan(ws)
        return ws.catalog.query("SELECT COUNT(DISTINCT sample_id) FROM label_issues")[0][0]


def review_suspicious(browser, server, n: int) -> dict:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(server.url + "&queue=suspicious")
    wait_js(page, "window.smartsetReview && window.smartsetReview.ready")
    assert page.evaluate("window.smartsetReview.state.queue.id") == "suspicious"
    total = page.evaluate("window.smartsetReview.state.entries.length")
    relabeled = accepted = 0
    for i in range(min(n, total)):
        entry = page.evaluate("(s => s.entries[s.cursor])(window.smartsetReview.state)")
        keys = {c["name"]: c["key"] for c in page.evaluate("window.smartsetReview.state.classes")}
        key = keys.get(entry.get("suggested") or "")
        page.keyboard.press(key or "a")
        relabeled += bool(key)
        accepted += not key
        wait_js(page, f"window.smartsetReview.metrics.decisions.length >= {i + 1} && "
                      f"window.smartsetReview.metrics.pending === 0")
    progress = page.locator("#progress").inner_text()
    decisions = page.evaluate("window.smartsetReview.metrics.decisions")
    context.close()
    return {"queue": total, "relabeled": relabeled, "accepted": accepted, "progress": progress,
            "decision_ms": decisions}


def main(argv=None) -> None:
    args = parse_args(argv)
    if not CHROMIUM.exists():
        sys.exit(f"review benchmark: no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from smartset.review import running_server

    photos, npz = locate(args.data, "review.py")
    print(f"smartset {smartset.__version__} review benchmark: {os.cpu_count()} cores, "
          f"{args.images:,} MNIST images, Chromium {CHROMIUM}")
    base = mnist_workspace(npz, args.images)
    scratch = Path(tempfile.mkdtemp(prefix="review-bench-"))
    result: dict = {"images": args.images, "quick": args.quick, "cores": os.cpu_count()}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True,
                args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
            ws = working_copy(base, scratch)
            with running_server(ws, author="bench") as server:
                session_ms = api_time(server, "/api/session")
                queue_ms = api_time(server, "/api/queue?name=unreviewed&limit=200")
                paint = first_paint(browser, server, args.repeat)
                keys = keystrokes(browser, server, args.keys, "1")
            print()
            print(f"{'measure (ms)':48} {'median':>8} {'p95':>8} {'max':>8}")
            print(f"{'first paint: 200 thumbnails loaded':48} {stats(paint['ms'])}")
            ph = paint["phases"]
            print(f"{'  app script running (after page load)':48} {ph['start']:8.1f}")
            print(f"{'  /api/session answered':48} {ph['session']:8.1f}")
            print(f"{'  /api/queue answered':48} {ph['queue']:8.1f}")
            print(f"{'  200 cards in the DOM':48} {ph['cards']:8.1f}")
            print(f"{'  GET /api/session (Python client)':48} {session_ms:8.1f}")
            print(f"{'  GET /api/queue unreviewed, 200 items':48} {queue_ms:8.1f}")
            print(f"{'keystroke: relabel, key to DOM updated':48} {stats(keys['decision_ms'])}")
            print(f"{'keystroke: relabel, Playwright press to done':48} "
                  f"{stats(keys['decision_wall_ms'])}")
            print(f"{'keystroke: j (move), key to DOM updated':48} {stats(keys['move_ms'])}")
            print(f"({args.repeat} page loads showing {paint['thumbnails'][0]} thumbnails; "
                  f"{args.keys} relabels; {args.keys} moves)")
            result.update(first_paint_ms=round(statistics.median(paint["ms"]), 1),
                          keystroke_ms=round(statistics.median(keys["decision_ms"]), 1),
                          keystroke_p95_ms=round(sorted(keys["decision_ms"])[
                              int(round(0.95 * (len(keys["decision_ms"]) - 1)))], 1),
                          move_ms=round(statistics.median(keys["move_ms"]), 2),
                          api_session_ms=round(session_ms, 1), api_queue_ms=round(queue_ms, 1))
            if not args.quick:
                print("\nSuspicious labels, reviewed by keyboard (20 each):")
                for name, path in (("mnist", base), ("photos", photos_workspace(photos))):
                    started = time.perf_counter()
                    flagged = prepare_suspicious(path)
                    prep = time.perf_counter() - started
                    copy = working_copy(path, scratch)
                    with running_server(copy, author="bench") as server:
                        done = review_suspicious(browser, server, 20)
                    print(f"  {name:7} {flagged:5} flagged (prepared in {prep:5.1f} s); "
                          f"{done['relabeled']} relabeled to the suggestion, {done['accepted']} "
                          f"accepted; {done['progress']}; keystroke median "
                          f"{statistics.median(done['decision_ms']):.1f} ms")
                    result[f"suspicious_{name}"] = {
                        "flagged": flagged, "reviewed": done["relabeled"] + done["accepted"],
                        "keystroke_ms": round(statistics.median(done["decision_ms"]), 1)}
            browser.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
