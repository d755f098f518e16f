"""`study augment` reports a difference with its uncertainty (#17): mean ± std over runs, a
paired comparison with `original` on the same seeds, a caution under 3 runs (never a fake
0 spread), offline expansion factors under a fixed step budget, and a bar chart whose axis
starts at 0 or says it is cut. Tiny runs on the shipped digits (small_cnn, a few steps)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")

import smartset  # noqa: E402
from smartset.cli import app  # noqa: E402
from smartset.learn.study import study_augment  # noqa: E402

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "data" / "digits.npz"
TINY = dict(model="small_cnn", batch_size=16, ensembles=(), progress=False)


@pytest.fixture(scope="module")
def digits():
    with np.load(DIGITS) as data:
        images, labels = data["images"], data["labels"]
    order = np.random.default_rng(0).permutation(len(images))
    images, labels = images[order], labels[order]
    return images[:80], labels[:80], images[800:900], labels[800:900]


def test_one_run_gives_a_caution_and_no_zero_spread(digits):
    """Before: one run showed a spread of 0.0000, as if the result were certain."""
    result = study_augment(*digits, combinations=["original", "rotation"], runs=1, epochs=1,
                           **TINY)
    table = result["table"]
    assert table["spread"].isna().all()  # unknown, not 0
    assert (table["runs"] == 1).all()
    assert set(table["caution"]) == {"spread unknown with 1 run"}
    assert "spread unknown with 1 run" in result["markdown"]
    assert "± 0.0000" not in result["markdown"] and "± nan" not in result["markdown"]
    assert any("use --runs 3" in note for note in result["cautions"])
    rotation = table.set_index("combination").loc["rotation"]
    assert rotation["paired_seeds"] == 1 and np.isnan(rotation["ci_low"])  # no interval
    three = study_augment(*digits, combinations=["original"], runs=3, steps=2, **TINY)
    assert three["cautions"] == [] and (three["table"]["caution"] == "").all()
    assert three["table"]["spread"].notna().all()


def test_paired_differences_are_taken_on_shared_seeds(digits):
    result = study_augment(*digits, combinations=["original", "rotation"], runs=3, steps=3,
                           seed=5, **TINY)
    runs = result["runs"]
    base = runs[runs["combination"] == "original"].set_index("seed")["accuracy"]
    other = runs[runs["combination"] == "rotation"].set_index("seed")["accuracy"]
    assert sorted(base.index) == sorted(other.index) == [5, 6, 7]
    diffs = [other[s] - base[s] for s in (5, 6, 7)]
    mean = sum(diffs) / 3
    std = (sum((d - mean) ** 2 for d in diffs) / 2) ** 0.5
    half = 4.302652729911275 * std / 3 ** 0.5  # Student's t, 97.5%, 2 degrees of freedom
    row = result["table"].set_index("combination").loc["rotation"]
    assert row["vs_original"] == pytest.approx(mean)
    assert row["diff_std"] == pytest.approx(std)
    assert row["ci_low"] == pytest.approx(mean - half)
    assert row["ci_high"] == pytest.approx(mean + half)
    assert (row["wins"], row["ties"], row["losses"]) == (
        sum(d > 0 for d in diffs), sum(d == 0 for d in diffs), sum(d < 0 for d in diffs))
    assert row["spread"] == pytest.approx(np.std(other.to_numpy(), ddof=1))

    from smartset.learn.study import paired_differences

    # seeds that only one side ran are left out of the pairs
    frame = pd.DataFrame({
        "combination": ["original"] * 3 + ["elastic"] * 3, "factor": [1] * 3 + [5] * 3,
        "seed": [0, 1, 2, 1, 2, 3], "accuracy": [0.90, 0.80, 0.85, 0.84, 0.83, 0.99]})
    paired = paired_differences(frame, "elastic", 5)
    assert paired["paired_seeds"] == 2
    assert paired["diffs"] == pytest.approx([0.04, -0.02])
    assert paired["diff_mean"] == pytest.approx(0.01)
    assert paired["diff_std"] == pytest.approx(np.std([0.04, -0.02], ddof=1))
    assert (paired["wins"], paired["losses"]) == (1, 1)


def test_factor_five_is_five_times_the_instances_at_the_same_steps(digits, monkeypatch):
    from smartset.learn import estimator as est

    fits = []  # (rows given to fit, optimizer steps taken)
    fit, step = est._ImageModel.fit, est._ImageModel._schedule_step

    def counting_fit(self, images, y, **kw):
        fits.append([len(images), 0])
        return fit(self, images, y, **kw)

    def counting_step(self, *args, **kw):
        fits[-1][1] += 1
        return step(self, *args, **kw)

    monkeypatch.setattr(est._ImageModel, "fit", counting_fit)
    monkeypatch.setattr(est._ImageModel, "_schedule_step", counting_step)
    train_x, train_y, test_x, test_y = digits
    result = study_augment(train_x, train_y, test_x, test_y, combinations=["original", "rotation"],
                           runs=1, factor="1,5", steps=7, **TINY)
    table = result["table"].set_index("label")
    assert list(table.index) == ["original", "rotation x1", "rotation x5"]
    assert table.loc["rotation x5", "instances"] == 5 * len(train_x) == 400
    assert table.loc["rotation x1", "instances"] == table.loc["original", "instances"] == 80
    assert (table["steps"] == 7).all()
    assert [taken for _, taken in fits] == [7, 7, 7]  # counted in the optimizer loop
    assert table.loc["rotation x5", "epochs"] == pytest.approx(7 * 16 / 400)
    assert table.loc["rotation x1", "epochs"] == pytest.approx(7 * 16 / 80)
    assert "fixed budget of 7 optimizer steps" in result["markdown"]

    # the expansion: originals first, then seeded copies (reproducible; x3 inside x5)
    from smartset.augment import named_policy
    from smartset.learn.study import _expand

    policy = named_policy("rotation")
    five, labels = _expand(train_x, train_y, policy, 5, seed=0)
    three, _ = _expand(train_x, train_y, policy, 3, seed=0)
    assert np.array_equal(five[:80], train_x) and np.array_equal(labels, np.tile(train_y, 5))
    assert np.array_equal(five[:240], three)
    assert not np.array_equal(five[80:160], train_x)
    assert np.array_equal(_expand(train_x, train_y, policy, 5, seed=0)[0], five)


def _chart(monkeypatch, table, folder):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from smartset.learn.study import plot_study

    kept = []
    monkeypatch.setattr(plt, "close", lambda fig=None: kept.append(fig))
    plot_study(table, folder / "study.png")
    fig = kept[-1] if kept and kept[-1] is not None else plt.gcf()
    return fig.axes[0]


def test_the_chart_starts_at_zero_or_says_it_is_cut(monkeypatch, tmp_path):
    high = pd.DataFrame({"label": ["original", "rotation"], "combination": ["original", "rotation"],
                         "average": [0.50, 0.53], "spread": [0.01, 0.02],
                         "worst": [0.49, 0.51], "best": [0.51, 0.55], "runs": [3, 3]})
    ax = _chart(monkeypatch, high, tmp_path)
    start = ax.get_xlim()[0]
    assert start == 0 or ("cut" in ax.get_title() and "cut" in ax.get_xlabel()
                          and f"{start:.2f}" in ax.get_title())
    # error bars are the std over runs
    from matplotlib.container import ErrorbarContainer

    [bars] = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    widths = sorted(abs(s[1][0] - s[0][0]) for s in bars.lines[2][0].get_segments())
    assert widths == pytest.approx([0.02, 0.04])
    low = high.assign(average=[0.10, 0.20], worst=[0.09, 0.18], best=[0.11, 0.22])
    ax = _chart(monkeypatch, low, tmp_path)
    assert ax.get_xlim()[0] == 0 and "cut" not in ax.get_title()


def test_cli_study_augment_factor_steps_and_files(tmp_path):
    with np.load(DIGITS) as data:
        order = np.random.default_rng(1).permutation(len(data["labels"]))[:150]
        np.savez(tmp_path / "digits.npz", images=data["images"][order],
                 labels=data["labels"][order])
    ws = smartset.init(tmp_path / "ws")
    ws.ingest(tmp_path / "digits.npz", show_progress=False)
    ws.close()
    result = CliRunner().invoke(app, [
        "study", "augment", "-w", str(tmp_path / "ws"), "--combinations", "original,elastic",
        "--runs", "1", "--factor", "1,5", "--steps", "3", "--batch-size", "16",
        "--train-size", "60", "--test-size", "30", "--model", "small_cnn", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    rows = {row["label"]: row for row in out["table"]}
    assert rows["elastic x5"]["instances"] == 5 * rows["elastic x1"]["instances"]
    assert {row["steps"] for row in rows.values()} == {3}
    assert rows["original"]["spread"] is None and out["cautions"]
    folder = Path(out["csv"]).parent
    assert {p.name for p in folder.iterdir()} >= {"study.csv", "runs.csv", "study.md",
                                                  "study.png"}
    assert "spread unknown with 1 run" in (folder / "study.md").read_text()
    assert len(pd.read_csv(folder / "runs.csv")) == 3
