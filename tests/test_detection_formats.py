"""Annotation formats in and out: detection, round trips per format (import -> export ->
import gives the same annotations), classification and Hugging Face exports."""

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import smartset
from smartset import detection as det
from detection_helpers import imported, make_shapes, normalised


@pytest.fixture
def source(tmp_path):
    ws, info = imported(tmp_path, "source", n=8, seed=3)
    yield ws, info
    ws.close()


def _reimport(tmp_path, folder, name, **options):
    ws = smartset.init(tmp_path / f"ws-{name}")
    report = det.import_annotations(ws, folder, engine="serial", show_progress=False, **options)
    return ws, report


@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc", "masks", "pairs"])
def test_round_trip_gives_the_same_annotations(tmp_path, source, fmt):
    ws, _ = source
    det.export(ws, None, tmp_path / "out1", format=fmt)
    assert det.detect_format(tmp_path / "out1") == fmt
    first, report = _reimport(tmp_path, tmp_path / "out1", "first")
    assert report.format == fmt and not report.issues, report.issues
    det.export(first, None, tmp_path / "out2", format=fmt)
    second, _ = _reimport(tmp_path, tmp_path / "out2", "second")
    assert normalised(first) == normalised(second)
    assert len(normalised(first)) > 0


def test_coco_round_trip_keeps_polygons_rles_ids_and_metadata(tmp_path, source):
    ws, info = source
    before = normalised(ws)
    det.export(ws, None, tmp_path / "coco", format="coco")
    again, _ = _reimport(tmp_path, tmp_path / "coco" / "annotations.json", "again")
    assert normalised(again) == before
    kinds = det.annotations(again)["kind"].value_counts().to_dict()
    assert kinds.get("polygon") and kinds.get("mask")
    assert det.categories(again) == det.categories(ws) == {1: "circle", 2: "square", 3: "triangle"}


def test_boxes_survive_every_box_format(tmp_path, source):
    """COCO -> YOLO / VOC: the same boxes (YOLO polygons bound their own outline)."""
    ws, _ = source
    boxes = [t[:6] for t in normalised(ws, digits=0)]
    det.export(ws, None, tmp_path / "voc", format="voc")
    voc, _ = _reimport(tmp_path, tmp_path / "voc", "voc")
    assert [t[:6] for t in normalised(voc, digits=0)] == boxes
    det.export(ws, None, tmp_path / "yolo", format="yolo")
    yolo, _ = _reimport(tmp_path, tmp_path / "yolo" / "data.yaml", "yolo")
    got = [t[:6] for t in normalised(yolo, digits=0)]
    assert len(got) == len(boxes)
    for a, b in zip(got, boxes):
        assert a[:2] == b[:2] and max(abs(u - v) for u, v in zip(a[2:], b[2:])) <= 2


def test_masks_round_trip_is_pixel_exact(tmp_path, source):
    """Semantic masks: the class-id image written, read and written again is identical."""
    ws, info = source
    det.export(ws, None, tmp_path / "m1", format="masks", palette=True)
    with Image.open(next((tmp_path / "m1" / "masks").glob("*.png"))) as image:
        assert image.mode == "P"
    first, _ = _reimport(tmp_path, tmp_path / "m1", "m1")
    det.export(first, None, tmp_path / "m2", format="masks")
    for a in sorted((tmp_path / "m1" / "masks").glob("*.png")):
        b = tmp_path / "m2" / "masks" / a.name
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    # the synthetic set's own masks folder reads as the same classes and pixels
    direct, report = _reimport(tmp_path, Path(info["folder"]), "direct", format="masks")
    assert not report.issues and set(report.categories) <= {"circle", "square", "triangle"}


def test_detect_format_names_each_layout(tmp_path, source):
    ws, info = source
    assert det.detect_format(info["coco"]) == "coco"
    for fmt in ("yolo", "voc", "pairs"):
        det.export(ws, None, tmp_path / fmt, format=fmt)
        assert det.detect_format(tmp_path / fmt) == fmt
    with pytest.raises(smartset.SourceError, match="Pass --format"):
        det.detect_format(tmp_path / "yolo" / "images" / "train")


def test_classification_exports_read_back_by_ingest(tmp_path, source):
    ws, _ = source
    samples = ws.samples()
    ws.relabel(list(samples["id"][:4]), "few")
    ws.relabel(list(samples["id"][4:]), "many")
    summary = det.export(ws, None, tmp_path / "folders", format="imagefolder")
    assert summary["classes"] == {"few": 4, "many": 4}
    back = smartset.init(tmp_path / "back")
    report = back.ingest(tmp_path / "folders", engine="serial", show_progress=False)
    assert report.classes == {"many": 4, "few": 4}
    det.export(ws, None, tmp_path / "table", format="csv")
    table = smartset.init(tmp_path / "table-ws")
    report = table.ingest(tmp_path / "table" / "labels.csv", engine="serial", show_progress=False)
    assert report.new == 8 and report.classes == {"many": 4, "few": 4}


def test_hf_export_is_an_imagefolder_layout(tmp_path, source, monkeypatch):
    ws, _ = source
    monkeypatch.setitem(sys.modules, "datasets", None)  # not installed: files only
    summary = det.export(ws, None, tmp_path / "hf", format="hf")
    assert summary["datasets"] is None
    lines = (tmp_path / "hf" / "train" / "metadata.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 8
    for record in records:
        assert (tmp_path / "hf" / "train" / record["file_name"]).is_file()
        objects = record["objects"]
        assert len(objects["bbox"]) == len(objects["category"]) == len(objects["area"])
    assert sum(len(r["objects"]["bbox"]) for r in records) == len(det.annotations(ws))


def test_hf_export_uses_datasets_when_installed(tmp_path, source, monkeypatch):
    ws, _ = source
    calls = {}

    class FakeDict:
        def save_to_disk(self, path):
            calls["saved"] = path

    def load_dataset(builder, data_dir, **options):
        calls["load"] = (builder, data_dir)
        calls["features"] = options.get("features")
        return FakeDict()

    fake = types.SimpleNamespace(  # the feature types the export declares, as plain values
        load_dataset=load_dataset, Features=dict, Image=lambda: "image", Value=lambda t: t,
        ClassLabel=lambda names: ("ClassLabel", tuple(names)), List=lambda f, length=-1: [f])
    monkeypatch.setitem(sys.modules, "datasets", fake)
    summary = det.export(ws, None, tmp_path / "hf", format="hf")
    assert calls["load"] == ("imagefolder", str(tmp_path / "hf"))
    assert calls["features"]["objects"]["category"] == [("ClassLabel", ("circle", "square",
                                                                         "triangle"))]
    assert summary["datasets"] == calls["saved"] == str(tmp_path / "hf" / "hf_dataset")


def test_unknown_export_format_lists_the_formats(tmp_path, source):
    ws, _ = source
    with pytest.raises(smartset.SourceError, match="coco, yolo, voc"):
        det.export(ws, None, tmp_path / "x", format="tfrecord")


def test_yolo_flat_folder_with_classes_txt(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    Image.new("RGB", (40, 20)).save(folder / "a.png")
    (folder / "a.txt").write_text("1 0.5 0.5 0.5 0.5\n0 0.25 0.25 0.1 0.2\n")
    (folder / "classes.txt").write_text("cat\ndog\n")
    ws = smartset.init(tmp_path / "ws")
    report = det.import_annotations(ws, folder, engine="serial", show_progress=False)
    assert report.format == "yolo" and report.new == 2
    rows = normalised(ws)
    assert rows == [("a.png", "cat", 8.0, 3.0, 4.0, 4.0, None),
                    ("a.png", "dog", 10.0, 5.0, 20.0, 10.0, None)]


def test_voc_uses_one_based_inclusive_pixels(tmp_path):
    folder = tmp_path / "voc"
    (folder / "Annotations").mkdir(parents=True)
    (folder / "JPEGImages").mkdir()
    Image.new("RGB", (50, 40)).save(folder / "JPEGImages" / "x.jpg")
    (folder / "Annotations" / "x.xml").write_text(
        "<annotation><filename>x.jpg</filename><size><width>50</width><height>40</height>"
        "</size><object><name>knife</name><difficult>1</difficult><bndbox><xmin>1</xmin>"
        "<ymin>1</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object></annotation>")
    ws = smartset.init(tmp_path / "ws")
    det.import_annotations(ws, folder, engine="serial", show_progress=False)
    frame = det.annotations(ws)
    assert frame[["x", "y", "w", "h"]].iloc[0].tolist() == [0.0, 0.0, 10.0, 20.0]
    assert frame["attributes"].iloc[0] == {"difficult": 1}


def test_reimport_is_idempotent_and_picks_up_changes(tmp_path):
    info = make_shapes(tmp_path / "s", 4, seed=5)
    ws = smartset.init(tmp_path / "ws")
    first = det.import_annotations(ws, info["coco"], engine="serial", show_progress=False)
    again = det.import_annotations(ws, info["coco"], engine="serial", show_progress=False)
    assert again.new == 0 and again.unchanged == first.new and again.ingest["files_read"] == 0
    data = json.loads(Path(info["coco"]).read_text())
    data["annotations"][0]["category_id"] = 2 if data["annotations"][0]["category_id"] != 2 else 1
    Path(info["coco"]).write_text(json.dumps(data))
    changed = det.import_annotations(ws, info["coco"], engine="serial", show_progress=False)
    assert changed.updated == 1 and changed.new == 0
