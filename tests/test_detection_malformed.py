"""The malformed-annotation corpus: every broken record gives a named issue naming the file
and the annotation, nothing valid is lost, and paths leaving the data root are refused."""

import json

import numpy as np
import pytest
from PIL import Image

import smartset
from smartset import detection as det


def _image(path, size=(64, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (40, 40, 40)).save(path)


def _import(tmp_path, source, **options):
    ws = smartset.init(tmp_path / "ws")
    report = det.import_annotations(ws, source, engine="serial", show_progress=False, **options)
    return ws, report


def _reasons(report) -> dict:
    return report.issues


@pytest.fixture
def coco_corpus(tmp_path):
    root = tmp_path / "coco"
    _image(root / "good.png")
    _image(root / "other.png")
    _image(root / "sized.png")
    (tmp_path / "outside.png").write_bytes((root / "good.png").read_bytes())
    (root / "truncated.png").write_bytes((root / "good.png").read_bytes()[:60])
    rle_wrong = det.rle.encode(np.ones((10, 10), np.uint8))
    data = {
        "images": [
            {"id": 1, "file_name": "good.png", "width": 64, "height": 48},
            {"id": 2, "file_name": "other.png", "width": 64, "height": 48},
            {"id": 2, "file_name": "good.png", "width": 64, "height": 48},
            {"id": 3, "file_name": "../outside.png", "width": 64, "height": 48},
            {"id": 4, "file_name": str(tmp_path / "outside.png"), "width": 64, "height": 48},
            {"id": 5, "file_name": "missing.png", "width": 64, "height": 48},
            {"id": 6, "file_name": "sized.png", "width": 100, "height": 100},
            {"id": 7, "file_name": "truncated.png", "width": 64, "height": 48},
        ],
        "categories": [{"id": 1, "name": "knife"}, {"id": 2, "name": "whale"},
                       {"id": 2, "name": "again"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 10]},   # valid
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [5, 5, 5, 5]},       # valid
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},       # dup id
            {"id": 3, "image_id": 999, "category_id": 1, "bbox": [1, 1, 5, 5]},     # orphan
            {"id": 4, "image_id": 1, "category_id": 42, "bbox": [1, 1, 5, 5]},      # category
            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [3, 3, 0, 5]},       # zero w
            {"id": 6, "image_id": 1, "category_id": 1, "bbox": [3, 3, 5, -2]},      # neg h
            {"id": 7, "image_id": 1, "category_id": 1, "bbox": [100, 100, 5, 5]},   # outside
            {"id": 8, "image_id": 1, "category_id": 2, "bbox": [50, 40, 30, 30]},   # clipped
            {"id": 9, "image_id": 2, "category_id": 1, "bbox": [2, 2, 8, 8],
             "segmentation": [[1, 2, 3, 4]]},                                       # polygon
            {"id": 10, "image_id": 2, "category_id": 1, "bbox": [2, 2, 8, 8],
             "segmentation": rle_wrong},                                            # rle size
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": "abc"},             # bad bbox
            {"id": 12, "image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5]},      # escaped
            {"id": 13, "image_id": 5, "category_id": 1, "bbox": [1, 1, 5, 5]},      # missing
            {"id": 14, "image_id": 6, "category_id": 1, "bbox": [1, 1, 90, 90]},    # real size
            {"id": 15, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5]},      # corrupt
        ],
    }
    (root / "instances.json").write_text(json.dumps(data))
    return root / "instances.json"


def test_coco_corpus_gives_named_issues_and_keeps_the_rest(tmp_path, coco_corpus):
    ws, report = _import(tmp_path, coco_corpus)
    assert _reasons(report) == {
        "duplicate_id": 3, "path_escape": 2, "image_missing": 2, "orphan_annotation": 1,
        "unknown_category": 1, "box_degenerate": 2, "box_outside_image": 1, "box_clipped": 2,
        "polygon_degenerate": 1, "rle_invalid": 1, "bad_annotation": 1,
        "image_size_mismatch": 1}
    frame = det.annotations(ws)
    by_key = frame.set_index("source_key")
    assert sorted(by_key.index) == ["1", "10", "14", "2", "8", "9"]
    assert by_key.loc["8", ["x", "y", "w", "h"]].tolist() == [50, 40, 14, 8]       # clipped
    assert by_key.loc["14", ["w", "h"]].tolist() == [63, 47]  # to the file's 64x48, not 100x100
    assert by_key.loc["9", "kind"] == by_key.loc["10", "kind"] == "box"           # kept as boxes
    assert set(ws.samples()["relpath"]) == {"good.png", "other.png", "sized.png"}
    issues = ws.issues(source=report.source)
    assert set(issues["reason"]) == set(report.issues)
    detail = issues.set_index("relpath")
    assert "category_id 42" in detail.loc["instances.json: annotation 4", "detail"]
    assert "Add the category" in detail.loc["instances.json: annotation 4", "detail"]
    escaped = issues[issues["reason"] == "path_escape"]
    assert escaped["relpath"].str.contains("outside.png").all()
    assert escaped["detail"].str.contains("refused").all()
    # the corrupt image is an ingest issue of its own
    assert set(ws.issues()["reason"]) & {"truncated", "corrupt"}


def test_reimport_replaces_the_issues_of_its_source(tmp_path, coco_corpus):
    ws, first = _import(tmp_path, coco_corpus)
    again = det.import_annotations(ws, coco_corpus, engine="serial", show_progress=False)
    assert again.issues == first.issues
    assert len(ws.issues(source=first.source)) == len(ws.issues(source=again.source))


def test_invalid_json_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [\n  {"id": 1,}\n]}')
    ws = smartset.init(tmp_path / "ws")
    with pytest.raises(smartset.SourceError, match=r"bad.json.*line 2"):
        det.import_annotations(ws, bad, format="coco", show_progress=False)


def test_yolo_corpus(tmp_path):
    root = tmp_path / "yolo"
    for name in ("a", "b"):
        _image(root / "images" / "train" / f"{name}.png", (100, 50))
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text(
        "0 0.5 0.5 0.2 0.2\n"          # valid
        "7 0.5 0.5 0.2 0.2\n"          # unknown class
        "0 0.5 zero 0.2 0.2\n"         # not numbers
        "0 0.5 0.5\n"                  # wrong field count
        "1 0.1 0.1 0.3 0.1 0.2 0.4\n"  # a triangle polygon: valid
        "1 0.95 0.5 0.2 0.2\n")        # reaches outside: clipped
    (root / "labels" / "train" / "b.txt").write_text("0 0.5 0.5 0 0.1\n")  # no area
    (root / "labels" / "train" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: ../elsewhere\n"
                                    "names: [knife, whale]\n")
    ws, report = _import(tmp_path, root)
    assert report.format == "yolo"
    assert report.issues == {"unknown_category": 1, "bad_annotation": 2, "box_clipped": 1,
                             "box_degenerate": 1, "orphan_annotation": 1, "path_escape": 1}
    frame = det.annotations(ws)
    assert sorted(frame["kind"]) == ["box", "box", "polygon"]
    where = ws.issues(source=report.source).set_index("reason")["relpath"]
    assert where["bad_annotation"].iloc[0].startswith("labels/train/a.txt:")
    assert "ghost.txt" in where["orphan_annotation"]


def test_voc_corpus(tmp_path):
    root = tmp_path / "voc"
    _image(root / "JPEGImages" / "a.jpg")
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><object><name>knife</name><bndbox><xmin>5"
        "</xmin><ymin>5</ymin><xmax>20</xmax><ymax>20</ymax></bndbox></object><object>"
        "<name>knife</name></object></annotation>")
    (root / "Annotations" / "broken.xml").write_text("<annotation><filename>")
    (root / "Annotations" / "escape.xml").write_text(
        "<annotation><filename>../../etc/x.jpg</filename><object><name>knife</name><bndbox>"
        "<xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object>"
        "</annotation>")
    ws, report = _import(tmp_path, root)
    assert report.issues == {"bad_annotation": 1, "bad_file": 1, "path_escape": 1}
    assert len(det.annotations(ws)) == 1


def test_mask_corpus(tmp_path):
    root = tmp_path / "seg"
    for name in ("a", "b"):
        _image(root / "images" / f"{name}.png", (32, 24))
    (root / "masks").mkdir()
    mask = np.zeros((24, 32), np.uint8)
    mask[2:10, 2:10] = 1
    mask[12:20, 12:30] = 9       # not in the class map
    mask[0, :] = 255             # VOC's void border: neither a class nor an issue
    Image.fromarray(mask).save(root / "masks" / "a.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "masks" / "b.png")  # wrong size
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(root / "masks" / "c.png")  # no image
    (root / "classes.json").write_text(json.dumps({"0": "background", "1": "whale"}))
    ws, report = _import(tmp_path, root)
    assert report.format == "masks"
    assert report.issues == {"mask_value_unknown": 1, "mask_size_mismatch": 1,
                             "mask_without_image": 1}
    frame = det.annotations(ws)
    assert frame["category"].tolist() == ["whale"] and frame["area"].tolist() == [64.0]
    detail = ws.issues(source=report.source).set_index("reason")["detail"]
    assert "[9]" in detail["mask_value_unknown"] and "32x24" in detail["mask_size_mismatch"]


def test_safe_relpath_refuses_escapes():
    assert det.safe_relpath("/data", "a/b.jpg") == "a/b.jpg"
    assert det.safe_relpath("/data", "a/../b.jpg") == "b.jpg"
    for bad in ("../x.jpg", "a/../../x.jpg", "/etc/passwd", "C:\\x.jpg", "~/x.jpg", ""):
        assert det.safe_relpath("/data", bad) is None, bad
