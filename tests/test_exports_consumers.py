"""Exports read by the libraries that consume them (``datasets``, ``pycocotools``), not
only by our own importer; every name ingest accepts survives every export; a detection
format refuses a classification version instead of dropping its labels.

``datasets`` and ``pycocotools`` are optional: their tests skip without them (they are in
the ``dev`` extra). Nothing here downloads: ``datasets`` runs offline on local folders.
"""

import json
import os
from pathlib import Path

import pytest
from PIL import Image
from review_helpers import make_workspace, write_images

import smartset
from smartset import detection as det
from smartset.detection.formats_out import MAX_NAME_BYTES
from detection_helpers import imported

# a newline in a file name, and a name of 250 bytes (ingest takes up to 255)
NEWLINE_NAME = "two\nlines.png"
LONG_NAME = "é" * 60 + "x" * 126 + ".png"  # 120 + 126 + 4 = 250 bytes
assert len(LONG_NAME.encode()) == 250


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / "smartset-hf-home"))


@pytest.fixture
def classified(tmp_path):
    ws = make_workspace(tmp_path / "ws", {"cat": 3, "dog": 2})
    yield ws
    ws.close()


@pytest.fixture
def shapes(tmp_path):
    ws, info = imported(tmp_path, "shapes", n=6, seed=4)
    yield ws, info
    ws.close()


def _names_workspace(tmp_path):
    """A labeled workspace whose files include a newline and a 250-byte name."""
    src = tmp_path / "names-src"
    write_images(src, {"cat": 2, "dog": 2}, seed=9)
    os.replace(src / "cat" / "cat_00.png", src / "cat" / NEWLINE_NAME)
    os.replace(src / "dog" / "dog_00.png", src / "dog" / LONG_NAME)
    ws = smartset.init(tmp_path / "names")
    ws.ingest(src, engine="serial", show_progress=False)
    names = {Path(r).name for r in ws.samples()["relpath"]}
    assert {NEWLINE_NAME, LONG_NAME} <= names  # ingest accepted both
    return ws


def _boxes_with_odd_names(tmp_path):
    """A detection workspace (images ingested, boxes added) with such names. (The COCO
    importer does not find an image named with a newline: the images come in by ingest.)"""
    src = tmp_path / "odd"
    src.mkdir()
    for i, name in enumerate((NEWLINE_NAME, LONG_NAME, "plain.png")):
        Image.new("RGB", (40, 30), (60 * i, 100, 0)).save(src / name)
    ws = smartset.init(tmp_path / "odd-ws")
    ws.ingest(src, layout="unlabeled", engine="serial", show_progress=False)
    for i, sid in enumerate(ws.samples()["id"]):
        det.add_box(ws, sid, "knife" if i % 2 else "phone", [2 + i, 3, 10, 12])
        det.add_box(ws, sid, "phone", [20, 5, 8, 8])
    return ws


# -- a detection format of a classification version ---------------------------------------
@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc", "masks", "pairs"])
def test_detection_format_of_a_classification_version_refuses_naming_the_right_ones(
        tmp_path, classified, fmt):
    with pytest.raises(smartset.SourceError) as error:
        det.export(classified, None, tmp_path / "out", format=fmt)
    message = str(error.value)
    assert "5 labeled image(s)" in message and "labels would be lost" in message
    assert all(f"--format {name}" in message or name in message
               for name in ("imagefolder", "csv", "hf"))
    assert not (tmp_path / "out" / "annotations.json").exists()


def test_unlabeled_images_without_boxes_still_export_as_coco(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(2):
        Image.new("RGB", (20, 10), (i * 90, 0, 0)).save(folder / f"{i}.png")
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(folder, layout="unlabeled", engine="serial", show_progress=False)
    summary = det.export(ws, None, tmp_path / "coco", format="coco")
    data = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    assert summary["images"] == len(data["images"]) == 2 and data["annotations"] == []


# -- pycocotools ------------------------------------------------------------------------------
# pycocotools' own C extension warns under NumPy 2 (its __array__ lacks ``copy``): not ours
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_coco_export_loads_in_pycocotools(tmp_path, shapes):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    ws, _ = shapes
    det.export(ws, None, tmp_path / "coco", format="coco")
    coco = COCO(str(tmp_path / "coco" / "annotations.json"))
    ours = det.annotations(ws)
    assert len(coco.getAnnIds()) == len(ours) > 0
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == sorted(set(ours.category))
    assert len(coco.getImgIds()) == len(ws.samples())
    for image in coco.loadImgs(coco.getImgIds()):
        assert (tmp_path / "coco" / "images" / image["file_name"]).is_file()
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        for ann in anns:
            mask = coco.annToMask(ann)  # polygons and RLEs decode in pycocotools
            assert mask.shape == (image["height"], image["width"])
            if ann["segmentation"]:
                assert mask.sum() > 0
    by_category = {c["name"]: len(coco.getAnnIds(catIds=[c["id"]]))
                   for c in coco.loadCats(coco.getCatIds())}
    assert by_category == ours.category.value_counts().to_dict()


# -- datasets ---------------------------------------------------------------------------------
def test_hf_classification_export_has_a_classlabel_and_no_empty_objects(tmp_path, classified):
    import csv

    datasets = pytest.importorskip("datasets")
    summary = det.export(classified, None, tmp_path / "hf", format="hf")
    samples = classified.samples().set_index("id")
    with open(tmp_path / "hf" / "samples.csv", newline="") as handle:
        rows = {(r["split"], r["file_name"]): r for r in csv.DictReader(handle)}
    assert len(rows) == 5 and {r["sample_id"] for r in rows.values()} == set(samples.index)
    cache = str(tmp_path / "cache")
    # the card's features, the saved DatasetDict and the plain image-folder builder (what a
    # user types first) all give label as a ClassLabel: SPLIT/CLASS/IMAGE, no metadata file
    for loaded in (datasets.load_dataset(str(tmp_path / "hf"), cache_dir=cache),
                   datasets.load_from_disk(summary["datasets"]),
                   datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "hf"),
                                         cache_dir=cache)):
        train = loaded["train"]
        label = train.features["label"]
        assert isinstance(label, datasets.ClassLabel) and label.names == ["cat", "dog"]
        assert "objects" not in train.features  # no typed-null column on a classification set
        assert train.num_rows == 5
        for row in train:
            assert row["image"].size == (32, 32)
    for (split, name), row in rows.items():  # every file sits under its sample's class
        assert name.split("/")[0] == samples.loc[row["sample_id"], "label"] == row["label"]
        assert (tmp_path / "hf" / split / name).is_file()


def test_hf_detection_export_has_typed_objects(tmp_path, shapes):
    datasets = pytest.importorskip("datasets")
    ws, _ = shapes
    det.export(ws, None, tmp_path / "hf", format="hf")
    train = datasets.load_dataset(str(tmp_path / "hf"), cache_dir=str(tmp_path / "cache"))["train"]
    objects = train.features["objects"]
    category = objects["category"].feature
    assert isinstance(category, datasets.ClassLabel)
    assert category.names == [name for _, name in sorted(det.categories(ws).items())]
    assert "label" not in train.features  # the shapes carry no image labels
    ours = det.annotations(ws)
    assert sum(len(r["objects"]["bbox"]) for r in train) == len(ours)
    for row in train:
        boxes = row["objects"]["bbox"]
        assert all(len(b) == 4 and isinstance(b[0], float) for b in boxes)
        want = sorted(ours[ours.sample_id == row["sample_id"]].category)
        assert sorted(category.int2str(c) for c in row["objects"]["category"]) == want


# -- every name ingest accepts ------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["imagefolder", "csv", "hf"])
def test_classification_exports_keep_every_file_ingest_accepted(tmp_path, fmt):
    ws = _names_workspace(tmp_path)
    summary = det.export(ws, None, tmp_path / fmt, format=fmt)
    assert summary["images"] == 4
    written = [p for p in (tmp_path / fmt).rglob("*.png") if "hf_dataset" not in p.parts]
    assert len(written) == 4
    assert all("\n" not in p.name and len(os.fsencode(p.name)) <= MAX_NAME_BYTES
               for p in written)
    # ingest takes the export back: the same pictures with the same labels
    again = smartset.init(tmp_path / f"again-{fmt}")
    source = {"csv": tmp_path / fmt / "labels.csv", "hf": None, "imagefolder": tmp_path / fmt}[fmt]
    if source is not None:
        again.ingest(source, engine="serial", show_progress=False)
        before = sorted(zip(ws.samples()["sha256"], ws.samples()["label"]))
        after = sorted(zip(again.samples()["sha256"], again.samples()["label"]))
        assert after == before
    again.close()
    ws.close()


@pytest.mark.parametrize("fmt", ["coco", "yolo", "voc", "masks", "pairs"])
def test_detection_exports_keep_every_file_ingest_accepted(tmp_path, fmt):
    ws = _boxes_with_odd_names(tmp_path)
    det.export(ws, None, tmp_path / fmt, format=fmt)
    again = smartset.init(tmp_path / f"again-{fmt}")
    report = det.import_annotations(again, tmp_path / fmt, engine="serial", show_progress=False)
    assert not report.issues, report.issues
    assert len(again.samples()) == len(ws.samples()) == 3
    assert sorted(again.samples()["sha256"]) == sorted(ws.samples()["sha256"])
    if fmt not in ("masks", "pairs"):  # masks hold no boxes of their own: counted by pixels
        assert len(det.annotations(again)) == len(det.annotations(ws))
    again.close()
    ws.close()


def test_safe_names_are_short_unique_and_keep_the_extension():
    from smartset.detection.formats_out import _safe_part

    a, b = _safe_part("é" * 200 + "a.jpeg"), _safe_part("é" * 200 + "b.jpeg")
    assert a != b and a.endswith(".jpeg") and b.endswith(".jpeg")
    assert len(os.fsencode(a)) <= MAX_NAME_BYTES
    a.encode("utf-8")  # no character cut in half
    assert _safe_part("x\ny\tz.png") == "x_y_z.png"
    assert _safe_part("..") == "_.." and _safe_part("plain.png") == "plain.png"
