"""Policies: named study combinations, OneOf/SomeOf, policy files, domain constraints,
parameter checks, seeding and replay from records."""

import json

import numpy as np
import pytest
import torch

import smartset.augment as aug
from smartset.augment.errors import (AugmentParameterError, ConstraintError,
                                     UnknownNameError)
from smartset.errors import SmartsetError

STUDY = ["original", "centering", "elastic", "translation", "rotation", "elastic-centering",
         "rotation-centering", "translation-elastic", "translation-rotation",
         "rotation-elastic", "rotation-elastic-centering", "elastic-elastic"]


@pytest.fixture(scope="module")
def digits(shared_data):
    with np.load(shared_data / "mnist10k.npz") as archive:
        return torch.from_numpy(archive["images"][:48, None].copy())


def _blobs(n=6, size=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros((n, 1, size, size))
    for i in range(n):
        r, c = torch.randint(6, size - 12, (2,), generator=g).tolist()
        x[i, 0, r:r + 8, c:c + 5] = 1.0
    return (x * 255).to(torch.uint8)


def test_the_twelve_named_combinations():
    assert list(aug.NAMED_POLICIES) == STUDY
    info = aug.available_policies()
    assert info["rotation-elastic-centering"]["steps"] == ["rotation", "elastic", "centering"]
    assert info["elastic-elastic"]["steps"] == ["elastic", "elastic"]
    assert info["rotation"]["factors"] == [1, 5, 25] and info["original"]["factors"] == [1]
    assert aug.STUDY_FACTORS == (1, 5, 25)
    for name in STUDY:
        policy = aug.named_policy(name)
        assert [leaf.name for leaf in policy.leaves()] == info[name]["steps"]
        assert policy.spec() == {"named": name}
    with pytest.raises(UnknownNameError, match="rotation-elastic-centering"):
        aug.named_policy("rotation-zoom")


@pytest.mark.parametrize("name", STUDY)
def test_named_policies_seeded_and_replayable(name, digits):
    policy = aug.named_policy(name)
    first = aug.augment(digits, policy, seed=42)
    second = aug.augment(digits, policy, seed=42)
    assert torch.equal(first.output, second.output)
    if name != "original":
        assert not torch.equal(first.output, aug.augment(digits, policy, seed=43).output) \
            or name == "centering"
    records = json.loads(json.dumps(list(first.records)))  # plain JSON all the way
    for i in (0, 17, 47):
        assert torch.equal(aug.replay(digits[i], records[i]), first.output[i])
    # and the whole batch replays at once from its records
    params = policy.params_from_records(records)
    assert torch.equal(policy.apply(digits, params), first.output)


def test_one_of_and_some_of_choose_per_sample():
    x = _blobs(200)
    one = aug.OneOf([aug.Rotation(10), aug.Translation(0.1), aug.Elastic()])
    params = one.make_params(x.shape, 0)
    applied = np.stack([p.applied for p in params.params], 1)
    assert (applied.sum(1) == 1).all()
    assert set(applied.argmax(1)) == {0, 1, 2}
    some = aug.SomeOf([aug.Rotation(10), aug.Translation(0.1), aug.Elastic(), aug.Centering()],
                      n=(1, 2))
    applied = np.stack([p.applied for p in some.make_params(x.shape, 0).params], 1)
    assert set(applied.sum(1)) == {1, 2}
    gated = aug.Compose([aug.Rotation(10), aug.Elastic()], p=0.3)
    applied = np.stack([p.applied for p in gated.make_params(x.shape, 0).params], 1)
    assert (applied[:, 0] == applied[:, 1]).all() and 0.15 < applied[:, 0].mean() < 0.45
    # not-applied samples come out unchanged, and all of it replays
    nested = aug.Compose([aug.OneOf([aug.HorizontalFlip(p=1), aug.Brightness(0.3)]),
                          aug.SomeOf([aug.Rotation(20), aug.Elastic(), aug.Translation()], n=2),
                          aug.GaussianNoise(0.05, p=0.5)])
    result = aug.augment(x[:10], nested, seed=9)
    for i in range(10):
        assert torch.equal(aug.replay(x[i], result.records[i]), result.output[i])


def test_policy_files_yaml_and_json(tmp_path):
    pytest.importorskip("yaml")
    text = """
name: digits-light
constraints: digits
fill: reflect
transforms:
  - rotation: {degrees: 10, p: 0.8}
  - one_of:
      - elastic: {alpha: 30, sigma: 4}
      - translation: {fraction: 0.05}
  - op: some_of
    n: [0, 1]
    transforms: [brightness, {gaussian_noise: {std: 0.02}}]
"""
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    policy = aug.load_policy(path)
    assert policy.label == "digits-light"
    assert [leaf.name for leaf in policy.leaves()] == [
        "rotation", "elastic", "translation", "brightness", "gaussian_noise"]
    assert policy.leaves()[0].fill == "reflect" and policy.leaves()[0].p == 0.8
    x = _blobs(4)
    saved = aug.save_policy(policy, tmp_path / "again.json")
    again = aug.load_policy(saved)
    assert torch.equal(again(x, seed=1), policy(x, seed=1))
    result = aug.augment(x, str(path), seed=2)
    assert torch.equal(aug.replay(x[1], result.records[1]), result.output[1])
    (tmp_path / "named.json").write_text(json.dumps({"named": "rotation-elastic", "fill": "wrap"}))
    named = aug.load_policy(tmp_path / "named.json")
    assert named.leaves()[1].fill == "wrap" and named.spec()["named"] == "rotation-elastic"


@pytest.mark.parametrize("content, message", [
    ("transforms: [{rotashun: {}}]", "Transforms: .*rotation"),
    ("transforms: [{rotation: {degree: 4}}]", "its options: degrees"),
    ("transforms: [{rotation: {degrees: 270}}]", r"\[-180, 180\]"),
    ("transforms: [hflip]\nconstraints: digits", "forbid"),
    ("just a string", "expected a mapping"),
    ("transforms: [rotation\n", "not valid YAML"),
])
def test_bad_policy_files_say_what_is_wrong(tmp_path, content, message):
    pytest.importorskip("yaml")
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(SmartsetError, match=message) as info:
        aug.load_policy(path)
    assert isinstance(info.value, ValueError)


def test_domain_constraints():
    flips = aug.Compose([aug.Rotation(10), aug.HorizontalFlip()], name="flippy")
    with pytest.raises(ConstraintError, match="'hflip'.*'digits'.*Remove it") as info:
        aug.validate_policy(flips, "digits")
    assert isinstance(info.value, ValueError)
    aug.validate_policy(flips, "physical-units")  # flips are fine there
    with pytest.raises(ConstraintError, match="brightness.*physical-units"):
        aug.validate_policy(aug.Compose([aug.Brightness()]), "physical-units")
    with pytest.raises(ConstraintError, match="up to 90 degrees"):
        aug.validate_policy(aug.Rotation(90), ["digits"])
    for name in STUDY:
        aug.validate_policy(name, "digits")
    with pytest.raises(UnknownNameError, match="digits, text, ct"):
        aug.validate_policy("rotation", "letters")


@pytest.mark.parametrize("build, message", [
    (lambda: aug.Rotation(200), "degrees"),
    (lambda: aug.Rotation((-20, -30)), "low <= high"),
    (lambda: aug.Elastic(sigma=-1), "sigma"),
    (lambda: aug.Elastic(alpha=-3), "alpha"),
    (lambda: aug.Translation(1.5), "fraction"),
    (lambda: aug.Scale(1.2), "zoom range"),
    (lambda: aug.Rotation(10, fill="mirror"), "fill"),
    (lambda: aug.Rotation(p=2), "p"),
    (lambda: aug.GaussianBlur(sigma="wide"), "sigma"),
])
def test_out_of_range_parameters(build, message):
    with pytest.raises(AugmentParameterError, match=message) as info:
        build()
    assert isinstance(info.value, ValueError) and isinstance(info.value, SmartsetError)


def test_unknown_policy_name_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="Named policies: original, centering"):
        aug.augment(_blobs(2), "rotatoin", seed=0)


def test_records_are_compact_and_self_describing():
    result = aug.augment(_blobs(3), "rotation-elastic", seed=0)
    record = result.records[2]
    assert record["policy"] == {"named": "rotation-elastic"}
    assert [s["op"] for s in record["steps"]] == ["rotation", "elastic"]
    assert set(record["steps"][1]) == {"op", "alpha", "stream", "index"}
    assert len(json.dumps(record)) < 250
    gated = aug.augment(_blobs(50), aug.Rotation(10, p=0.5), seed=0)
    skipped = [r for r in gated.records if r["steps"][0] == {"op": "rotation", "applied": False}]
    assert 10 < len(skipped) < 40
