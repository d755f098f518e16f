"""Property-based fuzz tests (hypothesis) of every parser that reads user files or request
bodies: the CSV table, COCO, YOLO, VOC and mask class-map readers, the cleaning plan and
augmentation policy files, and the review API's JSON bodies. Any input gives a result or the
typed error (a :class:`~smartset.errors.SmartsetError`; an error envelope of 4xx from the
API), never another exception or a 500.

Examples are bounded (``max_examples``, no deadline, no shrinking) so the whole file runs
in under 30 seconds; ``derandomize`` keeps CI runs repeatable.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from smartset.errors import SmartsetError

# No shrinking: a failure reports the example as found, within the time budget.
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])

# -- strategies ---------------------------------------------------------------------------
_weird_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=30) | st.sampled_from(
    ["", " ", "\x00", "a\nb", "../x", "/etc/passwd", "x" * 300, "1e400", "NaN", "inf", "-0"])
_numbers = (st.integers(min_value=-(1 << 70), max_value=1 << 70) | st.floats(allow_nan=True)
            | st.sampled_from([0, 1, -1, 2 ** 63, 2 ** 64, 10 ** 30]))
_scalars = st.none() | st.booleans() | _numbers | _weird_text
_json_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(_weird_text, inner, max_size=4), max_leaves=20)


def _coco_like():
    """Documents shaped like COCO files, with every field possibly wrong."""
    ident = st.one_of(st.integers(min_value=-3, max_value=5),
                      st.sampled_from([2 ** 63, 2 ** 64 + 1, -(2 ** 63) - 1, True, 1.5]),
                      _weird_text, st.lists(st.integers(), max_size=2), st.none())
    category = st.fixed_dictionaries({}, optional={"id": ident, "name": _scalars,
                                                   "supercategory": _scalars}) | _json_values
    image = st.fixed_dictionaries({}, optional={
        "id": ident,
        "file_name": st.sampled_from(["a.png", "../a.png", "", "a\x00.png"]) | _scalars,
        "width": _numbers | _scalars, "height": _numbers | _scalars}) | _json_values
    box = st.lists(_numbers | _scalars, max_size=5) | _scalars
    annotation = st.fixed_dictionaries({}, optional={
        "id": ident, "image_id": ident, "category_id": ident, "bbox": box,
        "segmentation": _json_values, "area": _scalars, "iscrowd": _scalars}) | _json_values
    return st.fixed_dictionaries({}, optional={
        "images": st.lists(image, max_size=4) | _scalars,
        "categories": st.lists(category, max_size=4) | _scalars,
        "annotations": st.lists(annotation, max_size=5) | _scalars}) | _json_values


def _dump(value) -> str:
    return json.dumps(value, allow_nan=True)


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture(scope="module")
def scratch():
    folder = Path(tempfile.mkdtemp(prefix="smartset-fuzz-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _fresh(scratch: Path, name: str) -> Path:
    folder = scratch / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _png(path: Path, size=(8, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((size[1], size[0]), np.uint8)).save(path)


# -- CSV ----------------------------------------------------------------------------------
_csv_cells = st.sampled_from(["a.png", "b.png", "missing.png", "../x.png", "", " ", "cat",
                              "dog", "NaN", "inf", "-inf", "1.5", "train", "test", "bogus",
                              "\x00", '"', "x" * 300, ",", ";", "\t"]) | _weird_text


@FUZZ
@example(header=["path", "target"], rows=[["a.png", "NaN"], ["b.png", "inf"]], delimiter=",",
         targets=True)
@example(header=["path", "label"], rows=[["a.png", "\x00"], ["b.png", " "]], delimiter=",",
         targets=False)
@given(header=st.lists(st.sampled_from(["path", "label", "split", "target", "t2", "file",
                                        "x", ""]), min_size=0, max_size=4),
       rows=st.lists(st.lists(_csv_cells, max_size=6), max_size=6),
       delimiter=st.sampled_from([",", ";", "\t"]), targets=st.booleans())
def test_csv_tables(scratch, header, rows, delimiter, targets):
    from smartset.ingest._sources import plan_csv

    folder = _fresh(scratch, "csv")
    _png(folder / "a.png")
    _png(folder / "b.png")
    text = "\n".join(delimiter.join(line) for line in [header, *rows])
    table = folder / "labels.csv"
    table.write_text(text, encoding="utf-8")
    try:
        plan = plan_csv(table, target_columns=["target"] if targets else None)
    except SmartsetError:
        return
    for entry in plan.entries:
        assert entry.targets is None or all(np.isfinite(entry.targets))
        assert entry.label is None or (entry.label.strip() and "\x00" not in entry.label
                                       and len(entry.label) <= 200)


# -- COCO ---------------------------------------------------------------------------------
@FUZZ
@given(document=_coco_like(), deep=st.sampled_from([0, 0, 0, 5000]))
def test_coco_files(scratch, document, deep):
    from smartset.detection.formats_in import read_coco

    folder = _fresh(scratch, "coco")
    _png(folder / "a.png")
    path = folder / "instances.json"
    path.write_text(_deep(deep) if deep else _dump(document), encoding="utf-8")
    try:
        result = read_coco(path)
    except SmartsetError:
        return
    for number, name in result.categories.items():
        assert -(2 ** 63) <= number < 2 ** 63 if isinstance(number, int) else True
        assert name.strip()


# -- YOLO ---------------------------------------------------------------------------------
_yolo_lines = st.lists(st.lists(st.sampled_from(["0", "1", "7", "-1", "0.5", "0.2", "nan",
                                                 "inf", "1e999", "x", "99999999999999999999"]),
                                max_size=8).map(" ".join), max_size=4).map("\n".join)


@FUZZ
@given(spec=st.fixed_dictionaries({}, optional={
    "names": _json_values | st.lists(_weird_text, max_size=3),
    "train": _scalars | st.just("images/train"), "val": _scalars, "path": _scalars})
    | _json_values, labels=_yolo_lines, raw=st.booleans())
def test_yolo_folders(scratch, spec, labels, raw):
    import yaml

    from smartset.detection.formats_in import read_yolo

    folder = _fresh(scratch, "yolo")
    _png(folder / "images" / "train" / "a.png")
    (folder / "labels" / "train").mkdir(parents=True)
    (folder / "labels" / "train" / "a.txt").write_text(labels, encoding="utf-8")
    text = labels if raw else yaml.safe_dump(spec, allow_unicode=True)
    (folder / "data.yaml").write_text(text, encoding="utf-8")
    try:
        result = read_yolo(folder)
    except SmartsetError:
        return
    for annotation in result.annotations:
        assert all(np.isfinite(annotation.bbox)), annotation


# -- VOC ----------------------------------------------------------------------------------
_xml_text = st.sampled_from(["", " ", "a.png", "cat", "\x01", "1", "0", "-5", "nan", "inf",
                             "1e999", "99999999999999999999999", "../../etc/passwd"])


@FUZZ
@example(filename="a.png", width="1e999", objects=[("cat", "1", "1", "nan", "3")], garbage="")
@given(filename=_xml_text, width=_xml_text, objects=st.lists(st.tuples(
    _xml_text, _xml_text, _xml_text, _xml_text, _xml_text), max_size=3),
    garbage=st.sampled_from(["", "<", "<annotation>", "&bogus;", "\xff"]))
def test_voc_files(scratch, filename, width, objects, garbage):
    from xml.sax.saxutils import escape

    from smartset.detection.formats_in import read_voc

    folder = _fresh(scratch, "voc")
    _png(folder / "JPEGImages" / "a.png")
    (folder / "Annotations").mkdir()
    body = "".join(
        f"<object><name>{escape(n)}</name><bndbox><xmin>{escape(a)}</xmin><ymin>{escape(b)}"
        f"</ymin><xmax>{escape(c)}</xmax><ymax>{escape(d)}</ymax></bndbox></object>"
        for n, a, b, c, d in objects)
    clean = lambda text: "".join(ch for ch in text if ch >= " ")  # noqa: E731 (XML 1.0 chars)
    xml = (f"<annotation><filename>{escape(clean(filename))}</filename><size><width>"
           f"{escape(clean(width))}</width><height>4</height></size>{clean(body)}</annotation>"
           f"{garbage}")
    (folder / "Annotations" / "a.xml").write_text(xml, encoding="utf-8")
    try:
        result = read_voc(folder)
    except SmartsetError:
        return
    for annotation in result.annotations:  # NaN or infinite boxes are refused, not kept
        assert all(np.isfinite(annotation.bbox)), annotation


# -- mask class maps ----------------------------------------------------------------------
@FUZZ
@given(document=_json_values, kind=st.sampled_from(["classes.json", "labelmap.txt",
                                                    "classes.txt", "deep"]),
       lines=st.lists(_weird_text, max_size=5))
def test_mask_class_maps(scratch, document, kind, lines):
    from smartset.detection.formats_in import CLASS_MAP_FILES, read_class_map, read_masks

    folder = _fresh(scratch, "masks")
    _png(folder / "images" / "a.png")
    _png(folder / "masks" / "a.png")
    if kind == "deep":
        (folder / "classes.json").write_text(_deep(5000), encoding="utf-8")
    elif kind == "classes.json":
        (folder / kind).write_text(_dump(document), encoding="utf-8")
    elif kind in CLASS_MAP_FILES:
        (folder / kind).write_text("\n".join(lines), encoding="utf-8")
    try:
        mapping, _ = read_class_map(folder)
        assert all(isinstance(k, int) and isinstance(v, str) for k, v in mapping.items())
        read_masks(folder)
    except SmartsetError:
        return


# -- cleaning plans and augmentation policies ---------------------------------------------
@FUZZ
@given(document=st.fixed_dictionaries({"format": st.just("smartset.clean-plan/1") | _scalars},
                                      optional={"actions": st.lists(_json_values, max_size=4)
                                                | _scalars, "run_id": _scalars})
       | _json_values, deep=st.sampled_from([0, 0, 0, 5000]))
def test_plan_files(scratch, document, deep):
    from smartset.clean.plan import load_plan

    folder = _fresh(scratch, "plan")
    path = folder / "plan.json"
    path.write_text(_deep(deep) if deep else _dump(document), encoding="utf-8")
    try:
        load_plan(path)
    except SmartsetError:
        return


_steps = st.sampled_from(["rotation", "translation", "elastic", "flip", "brightness", "bogus",
                          "one_of", "compose", "named"])
_policy_like = st.fixed_dictionaries({}, optional={
    "name": _scalars, "constraints": _scalars | st.just("digits"),
    "fill": _scalars | st.sampled_from(["constant", "reflect"]),
    "transforms": st.lists(st.dictionaries(_steps, _json_values, max_size=2) | _json_values,
                           max_size=3) | _scalars,
    "named": _scalars | st.just("rotation-elastic")}) | _json_values


@FUZZ
@given(document=_policy_like, suffix=st.sampled_from([".json", ".yaml"]))
def test_policy_files(scratch, document, suffix):
    deep = 0
    import yaml

    from smartset.augment.policy import load_policy

    folder = _fresh(scratch, "policy")
    path = folder / f"policy{suffix}"
    if deep:
        text = _deep(deep)
    elif suffix == ".json":
        text = _dump(document)
    else:
        text = yaml.safe_dump(document, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    try:
        load_policy(path)
    except SmartsetError:
        return


# -- the review API's JSON bodies ---------------------------------------------------------
@pytest.fixture(scope="module")
def review_client(tmp_path_factory):
    from review_helpers import TOKEN, Client, make_workspace

    from smartset.review.app import create_app

    ws = make_workspace(tmp_path_factory.mktemp("fuzz-review") / "ws", {"cat": 2, "dog": 2})
    ids = ws.samples()["id"].tolist()
    client = Client(create_app(ws.path, token=TOKEN, author="fuzz"))
    yield client, ids
    client.close()
    ws.close()


_ENDPOINTS = ["/api/decisions", "/api/decisions", "/api/boxes", "/api/undo", "/api/undo",
              "/api/undo", "/api/classes/merge", "/api/classes/rename", "/api/plans/decide",
              "/api/items"]
_big = st.sampled_from([2 ** 63, 2 ** 64, 10 ** 40, -(2 ** 63) - 1, 0, -1, 1, 1.5, True])
_fields = {
    "action": st.sampled_from(["label", "accept", "exclude", "include", "multi_label",
                               "duplicate_of", "unmark", "relabel", "delete", "bogus"]),
    "sample_id": st.sampled_from(["S0", "nope", "", "../x"]), "queue": _weird_text,
    "label": _weird_text, "classes": st.lists(_weird_text, max_size=3),
    "expected_event": _big | st.none(), "expected_mark": _big | st.none(),
    "label_events": st.lists(_big, max_size=3), "mark_events": st.lists(_big, max_size=3),
    "annotation_events": st.lists(_big, max_size=3),
    "sources": st.lists(_weird_text | st.sampled_from(["cat", "dog"]), max_size=3),
    "into": _weird_text, "old": _weird_text | st.just("cat"), "new": _weird_text,
    "annotation_id": _weird_text, "category": _weird_text, "ids": st.lists(_weird_text, max_size=3),
    "plan": _json_values, "item": _weird_text, "decision": st.sampled_from(["accept", "x"]),
    "author": _weird_text, "kind": _weird_text, "of": _weird_text, "note": _weird_text,
}


@FUZZ
@example(endpoint="/api/undo", body={"queue": "all", "label_events": [2 ** 63]}, raw=None)
@example(endpoint="/api/decisions", body={"queue": "all", "sample_id": "S0", "action": "label",
                                          "label": "dog", "expected_event": 2 ** 64}, raw=None)
@given(endpoint=st.sampled_from(_ENDPOINTS),
       body=st.fixed_dictionaries({}, optional=_fields) | st.fixed_dictionaries(
           {"queue": st.just("all")}, optional={k: v for k, v in _fields.items()
                                                 if k != "queue"}) | _json_values,
       raw=st.sampled_from([None, None, None, "deep", "{", "\xff", "1e999999"]))
def test_review_json_bodies(review_client, endpoint, body, raw):
    client, ids = review_client
    if isinstance(body, dict) and body.get("sample_id") == "S0":
        body["sample_id"] = ids[0]
    if raw == "deep":
        content = _deep(20000).encode()
    elif raw is not None:
        content = raw.encode("utf-8", "surrogatepass")
    else:
        content = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
    response = client.post(endpoint, content=content,
                           headers={"content-type": "application/json"})
    assert response.status_code != 500, (endpoint, body, response.text)
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["status"] == response.status_code and error["message"]


def test_deeply_nested_files_are_typed_errors(tmp_path):
    """JSON or YAML nested past Python's recursion limit: the typed error, every parser."""
    from smartset.augment.policy import load_policy
    from smartset.clean.plan import load_plan
    from smartset.detection.formats_in import read_class_map, read_coco, read_yolo

    deep = _deep(3000)
    cases = {"plan.json": load_plan, "policy.json": load_policy, "policy.yaml": load_policy,
             "instances.json": read_coco}
    for name, reader in cases.items():
        # YAML's composer recurses several frames per level: 700 levels are past the limit
        (tmp_path / name).write_text(_deep(700) if name.endswith(".yaml") else deep,
                                     encoding="utf-8")
        with pytest.raises(SmartsetError):
            reader(tmp_path / name)
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "classes.json").write_text(deep, encoding="utf-8")
    with pytest.raises(SmartsetError):
        read_class_map(tmp_path / "maps")
    (tmp_path / "yolo").mkdir()
    (tmp_path / "yolo" / "data.yaml").write_text(_deep(700), encoding="utf-8")
    with pytest.raises(SmartsetError):
        read_yolo(tmp_path / "yolo")
