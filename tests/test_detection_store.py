"""Annotations in the catalog (events, versions), the audit, drawing, task augmentation and
the command line."""

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import smartset
from smartset import detection as det
from smartset.cli import app
from detection_helpers import imported, make_shapes, normalised

runner = CliRunner()


@pytest.fixture
def shapes_ws(tmp_path):
    ws, info = imported(tmp_path, n=6, seed=7)
    yield ws
    ws.close()


def test_relabel_delete_undo_are_events(shapes_ws):
    ws = shapes_ws
    frame = det.annotations(ws)
    first, second = frame["id"].iloc[0], frame["id"].iloc[1]
    det.relabel_box(ws, first, "blob", reason="looked again", author="ana")
    det.delete_box(ws, second, reason="not an object")
    now = det.annotations(ws).set_index("id")
    assert now.loc[first, "category"] == "blob" and second not in now.index
    assert "blob" in det.categories(ws).values()
    history = det.annotation_history(ws, first)
    assert history["previous_category"].tolist()[-1] == frame["category"].iloc[0]
    assert history.iloc[-1][["author", "reason", "origin"]].tolist() == ["ana", "looked again", "api"]
    deleted_event = int(det.annotation_history(ws, second)["id"].iloc[-1])
    det.undo_annotation(ws, deleted_event)
    assert second in set(det.annotations(ws)["id"])
    with pytest.raises(smartset.ConflictError, match="not the newest"):
        det.undo_annotation(ws, deleted_event)
    with pytest.raises(smartset.LabelError, match="No annotation"):
        det.relabel_box(ws, "nope", "x")
    with sqlite3.connect(ws.catalog.path) as con:
        for sql in ("UPDATE annotation_events SET category='x'", "DELETE FROM annotation_events",
                    "DELETE FROM annotations"):
            with pytest.raises(sqlite3.IntegrityError, match="events|annotation"):
                con.execute(sql)


def test_add_box_for_review(shapes_ws):
    ws = shapes_ws
    sample = ws.samples()["id"].iloc[0]
    aid = det.add_box(ws, sample, "circle", [1, 2, 3, 4], reason="missed by the annotator")
    row = det.annotations(ws).set_index("id").loc[aid]
    assert row[["x", "y", "w", "h"]].tolist() == [1, 2, 3, 4] and row["kind"] == "box"
    with pytest.raises(smartset.LabelError, match="positive"):
        det.add_box(ws, sample, "circle", [1, 2, 0, 4])


def test_versions_pin_their_annotations(shapes_ws):
    ws = shapes_ws
    det.create_version(ws, "pinned")
    ws.create_version("plain")  # made without the wrapper: pinned by time
    before = normalised(ws, "pinned")
    aid = det.annotations(ws)["id"].iloc[0]
    det.relabel_box(ws, aid, "changed")
    det.delete_box(ws, det.annotations(ws)["id"].iloc[1])
    assert normalised(ws, "pinned") == before == normalised(ws, "plain")
    assert normalised(ws) != before
    assert ws.version("pinned")["params"]["annotation_event_id"] == det.annotation_pin(ws, "pinned")


def test_audit_finds_duplicates_border_masks_and_empty_images(tmp_path):
    info = make_shapes(tmp_path / "s", 6, seed=8, empty_fraction=0.0)
    coco = Path(info["coco"])
    data = json.loads(coco.read_text())
    first = data["annotations"][0]
    duplicate = dict(first, id=999, segmentation=[])
    duplicate["bbox"] = [first["bbox"][0] + 0.2, *first["bbox"][1:]]
    border = dict(first, id=1000, bbox=[0, 0, 10, 10], segmentation=[])
    tiny = dict(first, id=1001, bbox=[50, 50, 1, 1], segmentation=[[50, 50, 51, 50, 51, 51]])
    data["annotations"] += [duplicate, border, tiny]
    empty_image = data["images"][-1]["id"]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != empty_image]
    coco.write_text(json.dumps(data))
    ws = smartset.init(tmp_path / "ws")
    det.import_annotations(ws, info["coco"], engine="serial", show_progress=False)
    result = det.audit_annotations(ws)
    kinds = result.findings.groupby("kind").size().to_dict()
    assert kinds["duplicate_box"] == 1 and kinds["no_objects"] == 1
    assert kinds["touches_border"] >= 1 and kinds["tiny_mask"] >= 1
    summary = result.summary
    assert summary["objects"] == len(det.annotations(ws))
    assert sum(summary["sizes_total"].values()) == summary["objects"]
    assert summary["pixels"]["background_share"] > 0.5
    assert (tmp_path / "ws" / "reports" / "annotations" / "live" / "audit.json").is_file()
    stored = ws.catalog.query("SELECT kind, COUNT(*) FROM audit_findings GROUP BY kind")
    assert dict((r[0], r[1]) for r in stored) == kinds


def test_draw_targets_draws_boxes_and_masks_without_touching_the_input(shapes_ws):
    ws = shapes_ws
    frame = det.annotations(ws)
    sample = frame["sample_id"].iloc[0]
    group = frame[frame["sample_id"] == sample]
    image = np.zeros((int(group["height"].iloc[0]), int(group["width"].iloc[0]), 3), np.uint8)
    drawn = det.draw_targets(image, group)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert image.max() == 0 and drawn.max() > 0
    row = group.iloc[0]
    inside = drawn[int(row["y"] + row["h"] // 2), int(row["x"] + row["w"] // 2)]
    assert inside.any()  # the mask is filled
    grey = det.draw_targets(image[..., 0], [{"category": "x", "bbox": [1, 1, 5, 5], "score": 0.5}])
    assert grey.shape == image.shape


@pytest.mark.parametrize("policy", ["whale-scale", "knife-light"])
def test_expansion_writes_valid_annotations_with_lineage(shapes_ws, policy):
    ws = shapes_ws
    det.create_version(ws, "original")
    result = det.expand_version(ws, policy=policy, factor=2, version="original", seed=1)
    assert result["n_augmented"] == 6 and result["annotations_written"] > 0
    frame = det.annotations(ws, result["version"])
    derived = frame[frame["sample_id"].isin(set(ws.lineage()["sample_id"]))]
    assert len(derived) == result["annotations_written"]
    assert (derived["x"] >= 0).all() and (derived["x"] + derived["w"] <= derived["width"] + 1e-6).all()
    assert (derived["y"] >= 0).all() and (derived["y"] + derived["h"] <= derived["height"] + 1e-6).all()
    masks = derived[derived["kind"] == "mask"]
    for row in masks.itertuples():
        mask = det.rle.annotation_mask(row.segmentation, None, row.height, row.width)
        ys, xs = np.nonzero(mask)
        assert [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()] == \
            [row.x, row.y, row.w, row.h]
    if policy == "knife-light":  # photometric only: the boxes do not move
        originals = det.annotations(ws, "original")
        assert sorted(derived["w"]) == sorted(originals["w"])
    # the copy replays from its lineage record
    lineage = ws.lineage().iloc[0]
    assert lineage["params"]["policy"]["name"] == policy


def test_preview_targets_writes_a_png(shapes_ws, tmp_path):
    result = det.preview_targets(shapes_ws, policy="whale-scale", n=2, k=2,
                                 out=tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0 and result["rows"] == 3


def _cli(*args, code=0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result


def test_cli_end_to_end(tmp_path):
    shapes = tmp_path / "shapes"
    _cli("synth", "shapes", shapes, "--n", "4", "--size", "64", "--conditions", "--json")
    ws = tmp_path / "ws"
    _cli("init", ws)
    report = json.loads(_cli("annotations", "import", shapes / "annotations.json", "-w", ws,
                             "--engine", "serial", "--json").output)
    assert report["images"] == 16 and report["new"] > 0
    listed = json.loads(_cli("annotations", "list", "-w", ws, "--json").output)
    assert listed["count"] == report["new"]
    audit = json.loads(_cli("annotations", "audit", "-w", ws, "--json").output)
    assert audit["summary"]["objects"] == report["new"]
    _cli("detect", "baseline", "-w", ws, "--out", tmp_path / "pred.json")
    result = json.loads(_cli("detect", "evaluate", tmp_path / "pred.json", "-w", ws,
                             "--json").output)
    assert {"precision", "recall", "f1", "map", "map50"} <= set(result["metrics"])
    assert {row["condition"] for row in result["knife_table"]} >= {"high", "low", "artificial"}
    assert 0 <= result["counting"]["f1"] <= 1
    seg = json.loads(_cli("detect", "evaluate-masks", "--baseline", "-w", ws, "--json").output)
    assert 0 < seg["mean_iou"] <= 1
    _cli("annotations", "export", tmp_path / "yolo", "--format", "yolo", "-w", ws)
    assert (tmp_path / "yolo" / "data.yaml").is_file()
    aid = listed["annotations"][0]["id"]
    _cli("annotations", "relabel", aid, "--category", "blade", "-w", ws)
    event = json.loads(_cli("annotations", "delete", aid, "-w", ws, "--json").output)["events"][0]
    _cli("annotations", "undo", event, "-w", ws)
    history = json.loads(_cli("annotations", "history", "--annotation", aid, "-w", ws,
                              "--json").output)
    assert [h["origin"] for h in history] == ["import", "cli", "cli", "undo"]
    error = _cli("annotations", "import", tmp_path / "nothing", "-w", ws, "--json", code=1)
    assert json.loads(error.output)["error"]["type"] == "SourceError"
    _cli("annotations", "augment", "--policy", "knife-light", "--factor", "2", "-w", ws)
    _cli("annotations", "preview", "--policy", "whale-scale", "--n", "2", "--k", "1", "-w", ws)
