"""The review app's API, in process through an ASGI client: decisions as events, conflicts,
queues, plans, the focus view, and the security cases (token, host, origin, size, paths,
escaping, one error envelope). Plus one real-socket smoke test and a kill test."""

import http.client
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from review_helpers import TOKEN, Client, make_workspace
from typer.testing import CliRunner

import smartset
from smartset.cli import app as cli_app
from smartset.errors import ConflictError
from smartset.predictions import write_predictions
from smartset.review.app import MAX_BODY, create_app
from smartset.review.keys import RESERVED, class_keys

STATIC = Path(smartset.__file__).parent / "review" / "static"


@pytest.fixture
def rws(tmp_path):
    ws = make_workspace(tmp_path / "ws")
    yield ws
    ws.close()


@pytest.fixture
def client(rws):
    c = Client(create_app(rws.path, token=TOKEN, author="ana"))
    yield c
    c.close()


def ids_by_name(ws):
    frame = ws.samples(include_excluded=True)
    return dict(zip(frame["relpath"].str.split("/").str[-1].str[:-4], frame["id"]))


def assert_envelope(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"]
    assert sorted(body["error"]) == ["code", "detail", "message", "status"]
    assert body["error"]["status"] == status
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


# -- security -----------------------------------------------------------------------------

def test_every_api_request_needs_the_token(client, rws):
    sid = ids_by_name(rws)["cat_00"]
    reads = ["/api/session", "/api/queues", "/api/queue?name=class:cat", f"/api/samples/{sid}",
             f"/api/samples/{sid}/thumb", f"/api/samples/{sid}/image"]
    writes = {"/api/decisions": {"action": "accept", "sample_id": sid, "queue": "class:cat"},
              "/api/undo": {"label_events": [1], "queue": "q"},
              "/api/classes/merge": {"sources": ["cat"], "into": "dog", "queue": "q"},
              "/api/classes/rename": {"old": "cat", "new": "kitten", "queue": "q"},
              "/api/plans/decide": {"plan": "p", "item": "a1", "decision": "accept", "queue": "q"},
              "/api/export": {}, "/api/items": {"ids": [sid]}}
    for url in reads:
        assert_envelope(client.get(url, token=None), 403)
        assert_envelope(client.get(url, token="wrong-token-wrong-token-wrong"), 403)
    for url, body in writes.items():
        error = assert_envelope(client.post(url, json=body, token=None), 403)
        assert "token" in error["message"]
        # the query parameter is for image tags: it never authorises a change
        assert_envelope(client.post(f"{url}?token={TOKEN}", json=body, token=None), 403)
    assert client.get(f"/api/samples/{sid}/thumb?token={TOKEN}", token=None).status_code == 200
    assert len(rws.history()) == 9  # nothing was written: only the ingest events
    assert client.get("/api/session").status_code == 200
    # the page and its assets hold no data, so they need no token
    assert client.get("/", token=None).status_code == 200
    assert client.get("/static/app.js", token=None).status_code == 200


def test_foreign_host_and_origin_are_refused(client, rws):
    sid = ids_by_name(rws)["cat_00"]
    assert_envelope(client.get("/api/session", headers={"Host": "evil.example:80"}), 403)
    assert_envelope(client.get("/", headers={"Host": "evil.example"}), 403)
    assert client.get("/api/session", headers={"Host": "localhost:8123"}).status_code == 200
    body = {"action": "accept", "sample_id": sid, "queue": "class:cat"}
    assert_envelope(client.post("/api/decisions", json=body,
                                headers={"Origin": "http://evil.example"}), 403)
    ok = client.post("/api/decisions", json=body, headers={"Origin": "http://127.0.0.1"})
    assert ok.status_code == 200, ok.text


def test_error_envelope_is_one_shape(client, rws):
    sid = ids_by_name(rws)["cat_00"]
    assert assert_envelope(client.get("/api/nothing-here"), 404)["code"] == "not_found"
    assert assert_envelope(client.get("/api/samples/0000000000000000"), 404)["code"] == "not_found"
    assert assert_envelope(client.get("/api/queue?name=class:zebra"), 404)["code"] == "not_found"
    assert assert_envelope(client.request("DELETE", "/api/session"), 405)["code"] == \
        "method_not_allowed"
    invalid = assert_envelope(client.post("/api/decisions", json={"action": "burn"}), 422)
    assert invalid["code"] == "invalid_request" and isinstance(invalid["detail"], list)
    assert_envelope(client.post("/api/decisions", content=b"{not json",
                                headers={"Content-Type": "application/json"}), 422)
    bad = assert_envelope(client.post("/api/decisions", json={
        "action": "label", "sample_id": sid, "queue": "q", "label": "   "}), 400)
    assert bad["code"] == "bad_request" and "non-empty" in bad["message"]
    assert_envelope(client.post("/api/export", json={"name": "bad name!"}), 400)
    too_big = assert_envelope(client.post("/api/items", content=b"x" * (MAX_BODY + 1),
                                          headers={"Content-Type": "application/json"}), 413)
    assert too_big["code"] == "payload_too_large"


def test_request_size_is_limited_even_without_a_length(client, rws):
    async def chunks():  # streamed: no Content-Length to go by
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024

    response = client.post("/api/items", content=chunks(),
                           headers={"Content-Type": "application/json"})
    assert_envelope(response, 413)
    many = {"ids": ["a" * 16] * 1001}  # under the byte limit, over the list limit
    assert_envelope(client.post("/api/items", json=many), 422)


def test_images_are_served_by_sample_id_only(client, rws, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve me")
    sid = ids_by_name(rws)["cat_00"]
    thumb = client.get(f"/api/samples/{sid}/thumb")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:2] == b"\xff\xd8"
    image = client.get(f"/api/samples/{sid}/image")
    assert image.headers["content-type"] == "image/png" and image.content[:4] == b"\x89PNG"
    attempts = [f"/api/samples/..%2F..%2F{secret}/image", "/api/samples/../../etc/passwd",
                "/api/samples/%2e%2e%2f%2e%2e%2fetc%2fpasswd/image",
                f"/api/samples/{sid}/../../../etc/passwd", "/api/samples/..%2Fsecret.txt/thumb",
                "/static/..%2F__init__.py",
                "/static/../app.py", "/static/%2e%2e/app.py", "/static/index.html"]
    for url in attempts:
        response = client.get(url)
        assert response.status_code in (403, 404, 422), (url, response.status_code)
        assert b"do not serve me" not in response.content
        assert b"import" not in response.content
        if url.startswith("/api/"):
            assert_envelope(response, response.status_code)
    # a path parameter is ignored: the sample's own image comes back
    response = client.get(f"/api/samples/{sid}/image?path={secret}")
    assert response.status_code == 200 and response.content == image.content


def test_security_headers_and_no_inline_code(client):
    page = client.get("/", token=None)
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    api = client.get("/api/session")
    assert api.headers["content-security-policy"] == csp
    html = (STATIC / "index.html").read_text()
    assert "<script>" not in html and "<script src=\"/static/app.js\"" in html
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere
    script = (STATIC / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function"):
        assert sink not in script, f"app.js uses {sink}: text must go in with textContent"
    assert "http://" not in script and "https://" not in script
    assert "http://" not in (STATIC / "app.css").read_text()


def test_markup_in_names_comes_back_as_json_text(client, rws):
    evil = "<script>alert(1)</script>"
    rws.rename_label("bird", evil)
    session = client.get("/api/session").json()
    assert evil in [c["name"] for c in session["classes"]]
    queue = client.get("/api/queue", params={"name": f"class:{evil}"})
    assert queue.status_code == 200 and queue.headers["content-type"] == "application/json"
    assert all(e["reason"] == f"labeled {evil!r}" for e in queue.json()["entries"])


# -- decisions as events ------------------------------------------------------------------

def post_decision(client, **body):
    response = client.post("/api/decisions", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_relabel_accept_and_undo_are_events_with_who_when_why_queue(client, rws):
    ids = ids_by_name(rws)
    queue = client.get("/api/queue", params={"name": "class:cat"}).json()
    assert queue["queue"]["total"] == 4 and queue["queue"]["reviewed"] == 0
    cat0 = queue["items"][ids["cat_00"]]
    first = post_decision(client, action="label", sample_id=ids["cat_00"], queue="class:cat",
                          label="dog", expected_event=cat0["label_event_id"])
    assert first["sample"]["label"] == "dog" and first["sample"]["reviewed"]
    accepted = post_decision(client, action="accept", sample_id=ids["cat_01"], queue="class:cat",
                             author="bo")
    history = rws.history().set_index("id")
    event = history.loc[first["label_events"][0]]
    assert (event.label, event.origin, event.author) == ("dog", "review", "ana")
    assert event.reason == "queue=class:cat: 'cat' -> 'dog'" and event.time
    event = history.loc[accepted["label_events"][0]]
    assert (event.label, event.origin, event.author, event.reason) == \
        ("cat", "review", "bo", "queue=class:cat: accepted 'cat'")
    queues = {q["id"]: q for q in client.get("/api/queues").json()["queues"]}
    assert queues["class:cat"]["reviewed"] == 1 and queues["class:cat"]["total"] == 3
    assert queues["class:dog"]["reviewed"] == 1
    assert queues["unreviewed"]["reviewed"] == 2 and queues["unreviewed"]["total"] == 9

    undo = client.post("/api/undo", json={"label_events": first["label_events"],
                                          "queue": "class:cat"})
    assert undo.status_code == 200, undo.text
    state = undo.json()["samples"][ids["cat_00"]]
    assert state["label"] == "cat" and not state["reviewed"]  # the reverted review no longer counts
    last = rws.history(ids["cat_00"]).iloc[-1]
    assert (last.origin, last.reverts, last.label) == ("undo", first["label_events"][0], "cat")
    assert last.reason == f"queue=class:cat: undo event {first['label_events'][0]}"
    assert smartset.review.reviewed_ids(rws.catalog) == {ids["cat_01"]}


def test_two_tabs_editing_one_sample_lose_nothing(client, rws):
    sid = ids_by_name(rws)["dog_00"]
    tab_a = client.get("/api/queue", params={"name": "class:dog"}).json()["items"][sid]
    tab_b = dict(tab_a)
    post_decision(client, action="label", sample_id=sid, queue="class:dog", label="cat",
                  expected_event=tab_a["label_event_id"], author="ana")
    late = client.post("/api/decisions", json={
        "action": "label", "sample_id": sid, "queue": "class:dog", "label": "bird",
        "expected_event": tab_b["label_event_id"], "author": "bo"})
    error = assert_envelope(late, 409)
    assert error["code"] == "conflict" and "changed since" in error["message"]
    assert error["detail"]["current"]["label"] == "cat"
    assert error["detail"]["current"]["author"] == "ana"
    assert rws.history(sid)["label"].tolist() == ["dog", "cat"]  # bo's change was not saved
    # the marks have versions too
    mark = post_decision(client, action="exclude", sample_id=sid, queue="class:dog",
                         expected_mark=None)
    stale = client.post("/api/decisions", json={"action": "exclude", "sample_id": sid,
                                                "queue": "class:dog", "expected_mark": None})
    assert assert_envelope(stale, 409)["detail"]["current"]["mark_id"] == mark["mark_events"][0]
    # an undo of an event that is no longer the newest is a conflict, not a silent revert
    ana_event = int(rws.history(sid)["id"].iloc[1])
    post_decision(client, action="accept", sample_id=sid, queue="class:dog", author="bo")
    old_undo = client.post("/api/undo", json={"label_events": [ana_event], "queue": "class:dog"})
    assert assert_envelope(old_undo, 409)["detail"]["current"]["author"] == "bo"
    assert rws.history(sid)["origin"].tolist() == ["ingest", "review", "review"]


def test_workspace_expected_versions(rws):
    sid = ids_by_name(rws)["cat_00"]
    current = int(rws.samples().set_index("id").loc[sid, "label_event_id"])
    [event] = rws.relabel(sid, "dog", expected={sid: current})
    with pytest.raises(ConflictError, match="changed since") as caught:
        rws.relabel(sid, "bird", expected={sid: current})
    assert caught.value.current["label"] == "dog" and caught.value.current["event_id"] == event
    assert caught.value.sample_id == sid and caught.value.expected == current
    with pytest.raises(ConflictError, match="never set"):
        rws.mark(sid, "exclude", expected={sid: 5})
    [mark] = rws.mark(sid, "exclude", expected={sid: None})
    with pytest.raises(ConflictError):
        rws.unmark(sid, "exclude", expected={sid: None})
    rws.unmark(sid, "exclude", expected={sid: mark})
    assert rws.history(sid)["label"].tolist() == ["cat", "dog"]


def test_marks_multi_label_and_duplicate(client, rws):
    ids = ids_by_name(rws)
    multi = post_decision(client, action="multi_label", sample_id=ids["cat_02"], queue="unreviewed",
                          classes=["dog", "cat"], expected_mark=None)
    assert multi["sample"]["marks"]["multi_label"] == ["cat", "dog"]
    dup = post_decision(client, action="duplicate_of", sample_id=ids["cat_03"],
                        queue="duplicates", of=ids["cat_02"])
    assert dup["sample"]["marks"]["duplicate_of"] == ids["cat_02"]
    excluded = post_decision(client, action="exclude", sample_id=ids["bird_00"], queue="unreviewed")
    assert excluded["sample"]["marks"] == {"exclude": True}
    post_decision(client, action="include", sample_id=ids["bird_00"], queue="unreviewed")
    marks = rws.mark_history()
    assert marks["origin"].tolist() == ["review"] * 4
    assert marks["reason"].tolist() == ["queue=unreviewed: multi-label cat, dog",
                                        f"queue=duplicates: duplicate of {ids['cat_02']}",
                                        "queue=unreviewed: exclude",
                                        "queue=unreviewed: clear exclude"]
    bad = client.post("/api/decisions", json={"action": "duplicate_of", "sample_id": ids["cat_03"],
                                              "queue": "q", "of": ids["cat_03"]})
    assert "itself" in assert_envelope(bad, 400)["message"]
    undo = client.post("/api/undo", json={"mark_events": dup["mark_events"], "queue": "duplicates"})
    assert undo.status_code == 200 and undo.json()["samples"][ids["cat_03"]]["marks"] == {}


def test_merge_and_rename_classes_are_audited_and_undoable(client, rws):
    merged = client.post("/api/classes/merge", json={"sources": ["bird", "dog"], "into": "animal",
                                                     "queue": "class:bird"})
    assert merged.status_code == 200, merged.text
    body = merged.json()
    assert len(body["label_events"]) == 5
    assert {c["name"]: c["count"] for c in body["classes"]} == {"animal": 5, "cat": 4}
    events = rws.history().set_index("id").loc[body["label_events"]]
    assert set(events["origin"]) == {"review-class"}
    assert set(events["reason"]) == {"queue=class:bird: merge classes 'bird', 'dog' into 'animal'"}
    # a class action does not make the samples reviewed
    assert smartset.review.reviewed_ids(rws.catalog) == set()
    renamed = client.post("/api/classes/rename", json={"old": "cat", "new": "kitten",
                                                       "queue": "class:cat"}).json()
    assert "rename class 'cat' to 'kitten'" in renamed["message"]
    assert rws.classes() == ["animal", "kitten"]
    missing = client.post("/api/classes/merge", json={"sources": ["zebra"], "into": "cat",
                                                      "queue": "q"})
    assert "No sample is labeled 'zebra'" in assert_envelope(missing, 400)["message"]
    undo = client.post("/api/undo", json={"label_events": body["label_events"], "queue": "q"})
    assert undo.status_code == 200, undo.text
    assert rws.classes() == ["bird", "dog", "kitten"]


# -- queues, focus, plans, export ---------------------------------------------------------

def add_findings_and_issues(ws, ids):
    audit_run = ws.catalog.start_run("audit", {})
    with ws.catalog.write() as con:
        con.executemany(
            "INSERT INTO audit_findings(run_id, kind, sample_id, score, threshold, reason, grp)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(audit_run, "near_duplicate", ids["cat_01"], 0.99, 0.98, "near copy", "near-2"),
             (audit_run, "near_duplicate", ids["dog_01"], 0.99, 0.98, "near copy", "near-2"),
             (audit_run, "exact_duplicate", ids["cat_02"], 1.0, None, "same bytes", "exact-1"),
             (audit_run, "exact_duplicate", ids["cat_03"], 1.0, None, "same bytes", "exact-1"),
             (audit_run, "dark", ids["bird_00"], 0.10, 0.3, "too dark", None),
             (audit_run, "dark", ids["bird_01"], 0.05, 0.3, "darker", None),
             (audit_run, "imbalance", None, 2.0, None, "imbalanced", None)])
    ws.catalog.finish_run(audit_run, {})
    clean_run = ws.catalog.start_run("clean", {})
    with ws.catalog.write() as con:
        con.executemany(
            "INSERT INTO label_issues(run_id, sample_id, kind, score, label, suggested, detectors,"
            " reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(clean_run, ids["cat_00"], "wrong_label", 0.6, "cat", "dog", "[]", "low confidence"),
             (clean_run, ids["dog_02"], "wrong_label", 0.9, "dog", "cat", "[]", "neighbours say"),
             (clean_run, ids["dog_02"], "ambiguous", 0.4, "dog", None, "[]", "two classes")])
    ws.catalog.finish_run(clean_run, {})


def test_queues_rank_and_explain(client, rws):
    ids = ids_by_name(rws)
    empty = {q["id"]: q for q in client.get("/api/queues").json()["queues"]}
    assert "smartset clean" in empty["suspicious"]["hint"]
    assert "smartset audit" in empty["duplicates"]["hint"]
    add_findings_and_issues(rws, ids)
    queues = {q["id"]: q for q in client.get("/api/queues").json()["queues"]}
    assert list(queues) == ["suspicious", "duplicates", "audit:dark", "class:bird", "class:cat",
                            "class:dog", "unreviewed"]
    suspicious = client.get("/api/queue", params={"name": "suspicious"}).json()["entries"]
    assert [e["sample_id"] for e in suspicious] == [ids["dog_02"], ids["cat_00"]]
    assert "suggested cat" in suspicious[0]["reason"] and "ambiguous" in suspicious[0]["reason"]
    assert suspicious[0]["suggested"] == "cat"
    duplicates = client.get("/api/queue", params={"name": "duplicates"}).json()["entries"]
    assert [e["group"] for e in duplicates] == ["exact-1", "exact-1", "near-2", "near-2"]
    dark = client.get("/api/queue", params={"name": "audit:dark"}).json()["entries"]
    assert [e["sample_id"] for e in dark] == [ids["bird_01"], ids["bird_00"]]  # darkest first
    assert queues["suspicious"]["hint"] is None and queues["suspicious"]["total"] == 2
    # excluded samples stay in their queues, with the mark shown
    post_decision(client, action="exclude", sample_id=ids["dog_02"], queue="suspicious")
    again = client.get("/api/queue", params={"name": "suspicious"}).json()
    assert again["items"][ids["dog_02"]]["marks"] == {"exclude": True}
    assert again["queue"]["reviewed"] == 1
    unreviewed = client.get("/api/queue", params={"name": "unreviewed"}).json()
    assert ids["dog_02"] not in [e["sample_id"] for e in unreviewed["entries"]]
    assert (unreviewed["queue"]["reviewed"], unreviewed["queue"]["total"]) == (1, 9)


def test_focus_view_shows_predictions_neighbours_lineage(client, rws, tmp_path):
    from smartset.audit import audit

    ids = ids_by_name(rws)
    focus = client.get(f"/api/samples/{ids['cat_00']}").json()
    assert not focus["model"]["available"] and "predict" in focus["model"]["hint"]
    assert not focus["neighbours"]["available"] and "smartset audit" in focus["neighbours"]["hint"]
    samples = rws.samples()
    classes = ["bird", "cat", "dog"]
    probs = np.tile(np.array([[0.1, 0.2, 0.7]], dtype=np.float32), (len(samples), 1))
    run = rws.catalog.start_run("predict", {"classes": classes})
    write_predictions(rws.catalog, run, list(samples["id"]), kind="oof", classes=classes,
                      probs=probs, labels=list(samples["label"]), folds=[0] * len(samples))
    rws.catalog.finish_run(run, {})
    audit(rws, engine="serial", report=False, show_progress=False)
    derived = rws.path / "data" / "aug"
    derived.mkdir(parents=True)
    original = Path(samples.set_index("id").loc[ids["cat_00"], "path"])
    (derived / "a.png").write_bytes(original.read_bytes())
    [aug] = rws.add_derived_samples(derived, ["a.png"], origin_ids=[ids["cat_00"]],
                                    params=[{"policy": "rotation", "angle": 7.5}], stage="augment")
    focus = client.get(f"/api/samples/{ids['cat_00']}").json()
    assert focus["model"]["available"] and focus["model"]["predicted"] == "dog"
    assert [p["label"] for p in focus["model"]["top"]] == ["dog", "cat", "bird"]
    assert focus["neighbours"]["available"]
    assert all(n["label"] == "cat" for n in focus["neighbours"]["own"])
    # the other cats; the augmented copy too where the neighbours come from the backbone's
    # embeddings, cached by content (the audit embeds photos with it)
    own = {n["sample_id"] for n in focus["neighbours"]["own"]}
    other_cats = {ids[f"cat_0{i}"] for i in (1, 2, 3)}
    assert other_cats <= own <= other_cats | {aug}
    assert (aug in own) == (focus["neighbours"]["source"]["kind"] == "backbone")
    assert {n["label"] for n in focus["neighbours"]["other"]} <= {"dog", "bird"}
    assert focus["lineage"] is None and focus["overlays"] == []
    assert [h["origin"] for h in focus["history"]] == ["ingest"]
    lineage = client.get(f"/api/samples/{aug}").json()["lineage"]
    assert lineage["origin_id"] == ids["cat_00"] and lineage["params"]["angle"] == 7.5
    assert lineage["stage"] == "augment" and lineage["origin_label"] == "cat"


def write_plan(ws, ids, name="clean-1"):
    plan = {"format": "smartset.clean-plan/1", "run_id": 1, "created_at": "2024-01-01",
            "version": None, "params": {}, "actions": [
                {"id": "a0001", "action": "relabel", "sample_id": ids["cat_00"], "value": "dog",
                 "detector": "confident", "score": 0.9, "reason": "model sure",
                 "evidence": {"label": "cat"}},
                {"id": "a0002", "action": "exclude", "sample_id": ids["dog_00"], "value": None,
                 "detector": "outlier", "score": 0.7, "reason": "far", "evidence": {}},
                {"id": "a0003", "action": "merge_classes", "sample_id": None,
                 "value": {"from": "bird", "into": "dog"}, "detector": "confusion",
                 "score": 0.5, "reason": "confused", "evidence": {}}]}
    path = ws.reports_dir / "clean" / "plan.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan))
    with ws.catalog.write() as con:
        con.execute("INSERT INTO artifacts(name, path, kind, created_at) VALUES (?, ?, ?, ?)",
                    (name, str(path.relative_to(ws.path)), "clean_plan", "2024-01-01"))


def test_cleaning_plan_items_are_accepted_or_rejected_one_by_one(client, rws):
    ids = ids_by_name(rws)
    write_plan(rws, ids)
    queue = client.get("/api/queue", params={"name": "plan:clean-1"}).json()
    assert [e["item"] for e in queue["entries"]] == ["a0001", "a0002", "a0003"]
    assert queue["entries"][2].get("sample_id") is None  # absent fields are None
    assert "merge classes" in queue["entries"][2]["reason"]

    def decide(item, decision):
        response = client.post("/api/plans/decide", json={"plan": "clean-1", "item": item,
                                                          "decision": decision,
                                                          "queue": "plan:clean-1"})
        assert response.status_code == 200, response.text
        return response.json()

    accepted = decide("a0001", "accept")
    assert accepted["decision"] == "accepted"
    assert accepted["samples"][ids["cat_00"]]["label"] == "dog"
    rejected = decide("a0002", "reject")
    assert rws.marks().empty  # not excluded
    kept = rws.history().set_index("id").loc[rejected["label_events"][0]]
    assert kept.label == "dog" and kept.origin == "review" and "rejected a0002" in kept.reason
    decide("a0003", "accept")
    assert rws.classes() == ["cat", "dog"]
    again = client.post("/api/plans/decide", json={"plan": "clean-1", "item": "a0001",
                                                   "decision": "reject", "queue": "plan:clean-1"})
    assert "was accepted" in assert_envelope(again, 409)["message"]
    state = client.get("/api/queue", params={"name": "plan:clean-1"}).json()
    assert state["queue"]["reviewed"] == 3
    assert [e.get("decision") for e in state["entries"]] == ["accepted", "rejected", "accepted"]
    undo = client.post("/api/undo", json={"label_events": accepted["label_events"],
                                          "queue": "plan:clean-1",
                                          "plan": {"name": "clean-1", "item": "a0001"}})
    assert undo.status_code == 200, undo.text
    state = client.get("/api/queue", params={"name": "plan:clean-1"}).json()
    assert [e.get("decision") for e in state["entries"]] == [None, "rejected", "accepted"]
    assert rws.samples().set_index("id").loc[ids["cat_00"], "label"] == "cat"
    missing = client.post("/api/plans/decide", json={"plan": "clean-1", "item": "a9999",
                                                     "decision": "accept", "queue": "q"})
    assert "no item 'a9999'" in assert_envelope(missing, 400)["message"]
    # a plan whose file is gone shows its queue with the reason; the rest still works
    with rws.catalog.write() as con:
        con.execute("INSERT INTO artifacts(name, path, kind, created_at) VALUES "
                    "('gone', 'reports/clean/gone.json', 'clean_plan', '2024-01-02')")
    queues = {q["id"]: q for q in client.get("/api/queues").json()["queues"]}
    assert "cannot be read" in queues["plan:gone"]["hint"] and queues["plan:clean-1"]["total"] == 3
    assert "cannot be read" in assert_envelope(
        client.get("/api/queue", params={"name": "plan:gone"}), 400)["message"]


def test_export_writes_the_reviewed_version(client, rws):
    sid = ids_by_name(rws)["cat_00"]
    post_decision(client, action="exclude", sample_id=sid, queue="unreviewed")
    info = client.post("/api/export", json={"name": "reviewed-1"}).json()
    assert info["name"] == "reviewed-1" and info["n_samples"] == 8
    assert info["params"] == {"stage": "review", "reviewed": 1}
    assert_envelope(client.post("/api/export", json={"name": "reviewed-1"}), 400)
    result = CliRunner().invoke(cli_app, ["review", str(rws.path), "--export", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["name"].startswith("reviewed-")
    assert "deprecated" in result.stderr  # the old spelling works, with a note


def test_class_keys():
    assert class_keys(["cat", "dog"]) == {"cat": "1", "dog": "2"}
    digits = [str(d) for d in range(10)]
    assert class_keys(digits) == {d: d for d in digits}
    many = class_keys([f"c{i:02d}" for i in range(40)])
    assert len(many) == 24 and not set(many.values()) & RESERVED
    assert class_keys(["c", "x", "a"])["c"] == "c" and class_keys(["c", "x", "a"])["x"] == "1"


def test_cli_refuses_a_remote_host_without_the_flag(rws):
    result = CliRunner().invoke(cli_app, ["review", str(rws.path), "--host", "0.0.0.0"])
    assert result.exit_code == 2, result.output
    assert "--allow-remote" in result.output


# -- real sockets ---------------------------------------------------------------------------

def test_real_socket_smoke(rws):
    from smartset.review import running_server

    sid = ids_by_name(rws)["cat_00"]
    with running_server(rws.path, token=TOKEN) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.url.endswith(f"#token={TOKEN}")
        with urllib.request.urlopen(server.base + "/") as page:
            assert b"smartset review" in page.read()
        request = urllib.request.Request(server.base + "/api/session",
                                         headers={"X-Smartset-Token": TOKEN})
        with urllib.request.urlopen(request) as response:
            assert json.load(response)["author"]
        body = json.dumps({"action": "accept", "sample_id": sid, "queue": "class:cat"}).encode()
        request = urllib.request.Request(server.base + "/api/decisions", data=body, method="POST",
                                         headers={"X-Smartset-Token": TOKEN,
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request) as response:
            assert json.load(response)["sample"]["reviewed"]
        try:
            urllib.request.urlopen(urllib.request.Request(server.base + "/api/session"))
        except urllib.error.HTTPError as error:
            assert error.code == 403 and json.load(error)["error"]["code"] == "forbidden"
        else:
            raise AssertionError("no token, no session")
    assert rws.history(sid)["origin"].tolist() == ["ingest", "review"]


def test_sigkill_mid_merge_leaves_every_merge_whole(tmp_path):
    ws = make_workspace(tmp_path / "ws", {"left": 300, "right": 1})
    db = ws.catalog.path
    ws.close()
    process = subprocess.Popen([sys.executable, "-m", "smartset", "review", str(ws.path), "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True, text=True)
    try:
        url = json.loads(process.stdout.readline())["url"]
        base, token = url.split("/#token=")
        stop = threading.Event()
        done = []

        def hammer():
            names = ["left", "other"]
            while not stop.is_set():
                source, into = names[len(done) % 2], names[(len(done) + 1) % 2]
                body = json.dumps({"sources": [source], "into": into, "queue": "kill"}).encode()
                request = urllib.request.Request(base + "/api/classes/merge", data=body,
                                                 headers={"X-Smartset-Token": token,
                                                          "Content-Type": "application/json"})
                try:
                    urllib.request.urlopen(request, timeout=10).read()
                    done.append(into)
                except (OSError, http.client.HTTPException):  # killed mid-request or mid-reply
                    return

        thread = threading.Thread(target=hammer)
        thread.start()
        deadline = time.monotonic() + 30
        while len(done) < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.013)  # somewhere inside a later merge
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        stop.set()
        thread.join()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        process.stdout.close()
        process.stderr.close()
    assert len(done) >= 3
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        labels = dict(con.execute("SELECT label, COUNT(*) FROM current_labels GROUP BY label"))
    finally:
        con.close()
    # each merge is one transaction: the 300 moved together or not at all
    assert labels in ({"left": 300, "right": 1}, {"other": 300, "right": 1}), labels
