"""One progress bar per job, with its phase (issue #20): ``predict --oof`` says up front what
it will train and shows the folds as a field of one bar with one overall time remaining;
the audit names every phase after measuring. Checked through a recording sink, so no
terminal is needed and nothing depends on its width."""

import numpy as np
import pytest

import smartset
from smartset._progress import (RecordingSink, next_phase, phase, progress_bar, progress_job,
                                step)


def _completed(sink):
    return [e[1] for e in sink.events if e[0] == "update"]


def test_bars_inside_a_job_draw_nothing_of_their_own_and_fill_its_phases():
    sink = RecordingSink()
    with progress_job("job", 2, enabled=sink) as job:
        job.note("what will be done")
        with job.phase("decoding"):  # no units: counts shown, the bar does not move
            with progress_bar(3, "decoding images", enabled=True) as advance:
                for _ in range(3):
                    advance(1)
        for k in (1, 2):
            next_phase(f"fold {k}/2", 1.0)
            with progress_bar(4, "training", enabled=True) as advance:
                for i in range(4):
                    advance(1, f"epoch {i // 2 + 1}/2")
            with progress_job("inner job", 5) as inner:  # a job inside a job: a phase
                inner.advance(5)
            step("predicting")
    assert sink.bars == 1 and sink.notes == ["what will be done"]
    assert "job · decoding · decoding images 2/3" in sink.descriptions
    assert "job · fold 2/2 · epoch 1/2" in sink.descriptions
    assert "job · fold 1/2 · predicting" in sink.descriptions
    done = _completed(sink)
    assert done == sorted(done) and done[-1] == 2.0
    assert 0.5 in done and 1.5 in done  # each fold's training fills its share in proportion


def test_without_a_job_a_bar_is_its_own_and_false_or_no_terminal_draws_nothing(monkeypatch):
    sink = RecordingSink()
    with progress_bar(2, "measuring", enabled=sink) as advance:
        advance(2)
    assert sink.events == [("start", "measuring", 2), ("update", 2, "measuring"), ("stop",)]
    with progress_job("quiet", 3, enabled=False) as job:
        assert not job.enabled
        with phase("x", 1), progress_bar(1, "y", enabled=True) as advance:
            advance(1)  # routed to the silent job: nothing drawn
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    with progress_job("piped", 1) as job:
        assert not job.enabled


@pytest.fixture(scope="module")
def digits_ws(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    with np.load(shared_data / "mnist10k.npz") as data:
        rows = np.random.default_rng(0).permutation(len(data["labels"]))[:90]
        keep = np.isin(data["labels"][rows], [0, 1, 7])
        np.savez(root / "d.npz", images=data["images"][rows][keep],
                 labels=data["labels"][rows][keep])
    ws = smartset.init(root / "ws")
    ws.ingest(root / "d.npz", show_progress=False)
    yield ws
    ws.close()


def test_predict_oof_says_what_it_trains_then_shows_one_bar_with_the_fold(digits_ws):
    from smartset.learn import predict_oof

    sink = RecordingSink()
    result = predict_oof(digits_ws, folds=3, epochs=1, batch_size=16, seed=0, progress=sink)
    assert sink.bars == 1  # not one per fold
    assert sink.events[0] == ("start", "predict --oof small_cnn", 3.0)
    plan = sink.notes[0]
    assert sink.events[1] == ("note", plan)  # before any work
    for said in ("3 folds", "small_cnn trained from scratch", "no pretrained backbone",
                 "1 epoch at", "the images' own size", "why: small gray images"):
        assert said in plan, plan
    shown = sink.descriptions
    assert any(d.startswith("predict --oof small_cnn · fold 2/3 · small_cnn epoch 1/1 loss")
               for d in shown), shown[:20]
    assert not any("fold 4/3" in d for d in shown)
    done = _completed(sink)
    assert done == sorted(done) and done[-1] == 3.0  # one overall bar, to its end
    assert result["oof"]["n"] == len(digits_ws.samples())


def test_the_audit_shows_every_phase_after_measuring_in_its_one_bar(digits_ws):
    from smartset.audit import audit

    sink = RecordingSink()
    audit(digits_ws, show_progress=sink, report=True, features="pixels")
    assert sink.bars == 1
    phases = [d.split(" · ")[1] for d in sink.descriptions if " · " in d]
    order = ["measuring images", "checks and bias probes", "neighbours", "report"]
    assert [p for p in dict.fromkeys(phases) if p in order] == order
    assert any(d.startswith("audit · measuring images · measured ") for d in sink.descriptions)
    assert "audit · neighbours · near copies" in sink.descriptions
    assert "audit · neighbours · outliers" in sink.descriptions
    done = _completed(sink)
    assert done == sorted(done)
    total = [e[1] for e in sink.events if e[0] == "total"][-1]
    assert done[-1] == pytest.approx(total)


def test_predict_oof_on_photos_says_it_uses_the_frozen_backbone_and_why(shared_data, tmp_path):
    import shutil

    from smartset.backbones import DEFAULT_BACKBONE, backbone_spec
    from smartset.learn import predict_oof

    spec = backbone_spec(DEFAULT_BACKBONE)
    if not spec.installed():
        pytest.skip(f"{spec.name} is not installed")
    for cls in ("pistol", "smartphone"):
        (tmp_path / "src" / cls).mkdir(parents=True)
        for path in sorted((shared_data / "guns-smartphones" / "train" / cls).iterdir())[:4]:
            shutil.copy(path, tmp_path / "src" / cls / path.name)
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(tmp_path / "src", show_progress=False)
    sink = RecordingSink()
    predict_oof(ws, folds=2, progress=sink)  # no flags: no size, no model
    ws.close()
    assert sink.bars == 1
    plan = sink.notes[0]
    assert f"a frozen pretrained {spec.name} backbone" in plan and "2 folds" in plan
    assert f"{spec.size}x{spec.size} px" in plan and "why: photos (colour images" in plan
    assert any(d.startswith(f"predict --oof {spec.name} + linear head · embedding")
               for d in sink.descriptions)
    done = _completed(sink)
    assert done == sorted(done) and done[-1] == 2.0


def test_a_drawn_job_bar_starts_no_thread_so_the_local_engine_can_still_fork():
    import threading

    before = threading.active_count()
    with progress_job("drawn", 2, enabled=True) as job:  # a Rich bar on stderr
        job.next_phase("fold 1/2", 1)
        with progress_bar(3, "training") as advance:
            advance(3, "epoch 1/1")
        assert threading.active_count() == before
