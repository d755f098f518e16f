"""Policies: transforms composed with probabilities, ``OneOf``/``SomeOf``, named study
combinations, policy files, domain constraints, and the recorded parameters that replay.

A policy is a tree (:class:`Compose`, :class:`OneOf`, :class:`SomeOf` over transforms).
Whatever its shape, it runs as the fixed list of its leaf transforms, each with a
per-sample ``applied`` flag set by the tree (a ``OneOf`` applies exactly one of its leaves
per sample); so every sample runs through the same steps, consecutive geometric leaves fuse
into one resampling, and a sample's record replays it bit for bit.

A sample's record (:meth:`PolicyParams.record`) is a plain JSON dict::

    {"policy": {"named": "rotation-elastic"},
     "steps": [{"op": "rotation", "angle": 7.3},
               {"op": "elastic", "alpha": 34.0, "stream": 8813..., "index": 17}]}

and :func:`replay` rebuilds the augmented image from the origin image and that record.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from smartset.augment._params import Params
from smartset.augment._validation import Bound, as_range, check_params, numbers_of
from smartset.augment.errors import (BatchShapeError, ConstraintError, PolicyFileError,
                                     UnknownNameError)
from smartset.augment.transforms import Transform, get_transform, resolve_seed

__all__ = [
    "Policy", "Compose", "OneOf", "SomeOf", "PolicyParams", "AugmentResult",
    "augment", "replay", "named_policy", "available_policies", "NAMED_POLICIES", "TASK_POLICIES",
    "STUDY_FACTORS", "policy_from_spec", "load_policy", "save_policy", "resolve_policy",
    "Constraints", "DOMAIN_CONSTRAINTS", "validate_policy", "get_constraints",
    "register_policy", "photo_policies",
]


class Policy:
    """A node of a policy tree over transforms. ``p`` gates the whole node per sample."""

    node = ""

    def __init__(self, transforms: Sequence[Transform | Policy], *, p: float = 1.0,
                 name: str | None = None):
        self.transforms = list(transforms)
        self.p = p
        self.name = name
        self._named: dict | None = None  # set by named_policy(): a compact spec
        for t in self.transforms:
            if not isinstance(t, (Transform, Policy)):
                raise TypeError(f"{type(self).__name__} takes transforms and policies, got "
                                f"{type(t).__name__}")
        check_params(self.node, {"p": p}, {"p": Bound(0, 1)})

    def leaves(self) -> list[Transform]:
        return [leaf for t in self.transforms for leaf in t.leaves()]

    def spec(self) -> dict:
        if self._named is not None:
            return dict(self._named)
        out = {"op": self.node, "transforms": [t.spec() for t in self.transforms]}
        if self.p != 1:
            out["p"] = self.p
        if self.name:
            out["name"] = self.name
        return out

    @property
    def label(self) -> str:
        return self.name or (self._named or {}).get("named") or self.node

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"{type(self).__name__}([{inner}]{'' if self.p == 1 else f', p={self.p}'})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.spec() == other.spec()

    __hash__ = None  # mutable

    # -- the per-sample "applied" masks of the leaves
    def _gates(self, n: int, rng: np.random.Generator, parent: np.ndarray) -> list[np.ndarray]:
        mask = parent & (rng.random(n) < self.p) if self.p < 1 else parent
        return [g for t in self.transforms for g in _gates_of(t, n, rng, mask)]

    def make_params(self, batch_shape, rng=None) -> PolicyParams:
        """Per-sample parameters of every leaf for a batch of ``batch_shape``."""
        rng = resolve_seed(rng)
        shape = tuple(int(s) for s in batch_shape)
        if len(shape) != 4:
            raise BatchShapeError(f"batch_shape must be N x C x H x W, got {shape}")
        n = shape[0]
        gates = self._gates(n, rng, np.ones(n, dtype=bool))
        params = []
        for leaf, gate in zip(self.leaves(), gates):
            p = leaf.make_params(shape, rng)
            p.columns["applied"] = p.applied & gate
            params.append(p)
            shape = leaf.output_shape(shape)
        return PolicyParams(self, params, n)

    def output_shape(self, shape):
        for leaf in self.leaves():
            shape = leaf.output_shape(shape)
        return shape

    def apply(self, batch, params: PolicyParams):
        """Apply recorded parameters (deterministic)."""
        return self._run(batch, params)[0]

    def _run(self, batch, params: PolicyParams):
        from smartset.augment._plan import run_steps

        leaves = self.leaves()
        if len(params.params) != len(leaves):
            raise ValueError(f"parameters for {len(params.params)} steps, policy has "
                             f"{len(leaves)}")
        out, resolved = run_steps(list(zip(leaves, params.params)), batch)
        return out, PolicyParams(self, resolved, params.n)

    def __call__(self, batch, *, seed=None):
        return self.transform(batch, seed=seed)

    def transform(self, batch, *, seed=None):
        from smartset.augment._plan import batch_shape_of

        return self.apply(batch, self.make_params(batch_shape_of(batch), seed))

    def params_from_records(self, records: Sequence[dict]) -> PolicyParams:
        """Rebuild parameters from per-sample records (their ``steps``)."""
        leaves = self.leaves()
        steps = [r["steps"] if "steps" in r else r for r in records]
        for r in steps:
            if len(r) != len(leaves):
                raise ValueError(f"a record has {len(r)} steps, the policy {len(leaves)}")
            for leaf, step in zip(leaves, r):
                if step.get("op", leaf.name) != leaf.name:
                    raise ValueError(f"record step {step.get('op')!r} does not match the "
                                     f"policy's {leaf.name!r}")
        return PolicyParams(self, [leaf.params_from_records([r[j] for r in steps])
                                   for j, leaf in enumerate(leaves)], len(steps))


def _gates_of(t, n, rng, parent) -> list[np.ndarray]:
    if isinstance(t, Policy):
        return t._gates(n, rng, parent)
    return [parent]


class Compose(Policy):
    """Apply every transform in order (each with its own ``p``); ``p`` gates them all."""

    node = "compose"


class OneOf(Policy):
    """Apply exactly one of the transforms per sample, chosen with ``weights``
    (default equal)."""

    node = "one_of"

    def __init__(self, transforms, *, weights: Sequence[float] | None = None, p: float = 1.0,
                 name: str | None = None):
        super().__init__(transforms, p=p, name=name)
        if not self.transforms:
            raise ValueError("OneOf needs at least one transform")
        self.weights = list(weights) if weights is not None else None
        if self.weights is not None and (len(self.weights) != len(self.transforms)
                                         or min(self.weights) < 0 or sum(self.weights) <= 0):
            raise ValueError(f"OneOf: weights must be one non-negative number per transform, "
                             f"got {weights!r}")

    def spec(self) -> dict:
        out = super().spec()
        if self.weights is not None and self._named is None:
            out["weights"] = self.weights
        return out

    def _gates(self, n, rng, parent):
        mask = parent & (rng.random(n) < self.p) if self.p < 1 else parent
        k = len(self.transforms)
        w = None if self.weights is None else np.asarray(self.weights, float) / sum(self.weights)
        choice = rng.choice(k, size=n, p=w)
        return [g for j, t in enumerate(self.transforms)
                for g in _gates_of(t, n, rng, mask & (choice == j))]


class SomeOf(Policy):
    """Apply ``n`` of the transforms per sample (a number, or a ``(low, high)`` range drawn
    per sample), chosen at random without repetition, in the listed order."""

    node = "some_of"

    def __init__(self, transforms, *, n=1, p: float = 1.0, name: str | None = None):
        super().__init__(transforms, p=p, name=name)
        self.n = n
        found = numbers_of(n)
        if (found is None or len(found) not in (1, 2) or any(v != int(v) for v in found)
                or min(found) < 0 or max(found) > len(self.transforms)):
            raise ValueError(f"SomeOf: n must be a whole number or (low, high) in "
                             f"[0, {len(self.transforms)}], got {n!r}")

    def spec(self) -> dict:
        out = super().spec()
        if self._named is None:
            out["n"] = list(self.n) if isinstance(self.n, tuple) else self.n
        return out

    def _gates(self, n, rng, parent):
        mask = parent & (rng.random(n) < self.p) if self.p < 1 else parent
        found = [int(v) for v in numbers_of(self.n)]
        low, high = found[0], found[-1]
        counts = rng.integers(low, high + 1, n)
        ranks = np.argsort(np.argsort(rng.random((n, len(self.transforms))), axis=1), axis=1)
        chosen = ranks < counts[:, None]
        return [g for j, t in enumerate(self.transforms)
                for g in _gates_of(t, n, rng, mask & chosen[:, j])]


@dataclass
class PolicyParams:
    """The parameters of every leaf of ``policy`` for a batch (one :class:`Params` each)."""

    policy: Policy
    params: list[Params]
    n: int = -1  # samples; taken from the params unless the policy has no steps

    def __post_init__(self):
        if self.n < 0:
            self.n = self.params[0].n if self.params else 0

    def __len__(self) -> int:
        return self.n

    def record(self, index: int) -> dict:
        """Sample ``index`` as a plain JSON dict: the policy spec and each step's params.
        (The spec is one dict shared by the records of a batch: read it, do not change it.)"""
        if not hasattr(self, "_spec"):
            self._spec = self.policy.spec()
            self._names = [leaf.name for leaf in self.policy.leaves()]
        return {"policy": self._spec,
                "steps": [{"op": name, **p.record(index)}
                          for name, p in zip(self._names, self.params)]}

    def records(self) -> list[dict]:
        return [self.record(i) for i in range(len(self))]

    def subset(self, rows) -> PolicyParams:
        return PolicyParams(self.policy, [p.subset(rows) for p in self.params], len(rows))


class _Records(Sequence):
    """Per-sample records, built on access (a batch of 10,000 costs nothing until read)."""

    def __init__(self, params: PolicyParams):
        self._params = params

    def __len__(self) -> int:
        return len(self._params)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._params.record(i) for i in range(len(self))[index]]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._params.record(index)


@dataclass
class AugmentResult:
    """What :func:`augment` returns: the augmented batch (same structure as the input), the
    parameters as applied, and ``records``: one JSON-ready dict per sample."""

    output: object
    params: PolicyParams
    records: Sequence[dict] = field(repr=False, default=())


def augment(batch, policy, *, seed=None) -> AugmentResult:
    """Augment ``batch`` (an image tensor ``N x C x H x W``, typed targets, or a tuple/dict
    of them) with ``policy`` (a :class:`Policy`, a transform, a named policy, or a policy
    file), parameters drawn with ``seed`` (int, ``numpy.random.Generator``,
    ``torch.Generator`` or None). Every parameter is recorded; :func:`replay` rebuilds any
    sample from its origin image and record."""
    from smartset.augment._plan import batch_shape_of

    policy = resolve_policy(policy)
    params = policy.make_params(batch_shape_of(batch), seed)
    output, applied = policy._run(batch, params)
    return AugmentResult(output, applied, _Records(applied))


def replay(image, params: dict, *, policy=None):
    """Rebuild one augmented sample from its origin ``image`` (``C x H x W`` tensor, or a
    batch-shaped structure of one sample: ``1 x C x H x W``, targets) and its record
    ``params`` (from :func:`augment` or the catalog's lineage). ``policy`` overrides the
    record's policy spec (needed for policies holding fitted state)."""
    policy = resolve_policy(policy if policy is not None else params["policy"])
    single = isinstance(image, torch.Tensor) and image.ndim == 3
    batch = image[None] if single else image
    out = policy.apply(batch, policy.params_from_records([params]))
    return out[0] if single else out


def _as_policy(t) -> Policy:
    return t if isinstance(t, Policy) else Compose([t])


# -- named combinations of the MNIST study -----------------------------------------------
#: the study's expansion factors: 60k originals -> 300k -> 1.5M images
STUDY_FACTORS = (1, 5, 25)

_STUDY_STEPS = {
    "original": [],
    "centering": ["centering"],
    "elastic": ["elastic"],
    "translation": ["translation"],
    "rotation": ["rotation"],
    "elastic-centering": ["elastic", "centering"],
    "rotation-centering": ["rotation", "centering"],
    "translation-elastic": ["translation", "elastic"],
    "translation-rotation": ["translation", "rotation"],
    "rotation-elastic": ["rotation", "elastic"],
    "rotation-elastic-centering": ["rotation", "elastic", "centering"],
    "elastic-elastic": ["elastic", "elastic"],
}
#: the study's settings of each step: rotation +-15 degrees, translation +-10 %, elastic
#: alpha 34 / sigma 4 (Simard et al. 2003 on MNIST), centering of the centre of mass
STUDY_SETTINGS = {"rotation": {"degrees": 15.0}, "translation": {"fraction": 0.1},
                  "elastic": {"alpha": 34.0, "sigma": 4.0}, "centering": {}}
NAMED_POLICIES = tuple(_STUDY_STEPS)

#: policies per task of the source material's case studies, by name wherever a policy is
#: taken (``smartset augment run --policy knife-light``, detection expansion, training)
TASK_POLICIES = {
    # the whale study: scaling down and up is "the key for generalizing from higher to
    # lower resolution"
    "whale-scale": {"op": "compose", "name": "whale-scale", "transforms": [
        {"op": "scale", "factor": [0.5, 2.0]},
        {"op": "hflip", "p": 0.5}, {"op": "vflip", "p": 0.5}]},
    # the knife study under strong light: darkening, the uneven light of a lamp (glare,
    # a warm cast, dim corners) and contrast (CLAHE) at learning time. A darkened camera
    # frame is also noisy (read and shot noise stay while the signal falls): sensor noise
    # of 0-8 grey levels per sample, chosen from that physics (a few grey levels, as an
    # 8-bit sensor shows at night), not from any test result
    "knife-light": {"op": "compose", "name": "knife-light", "transforms": [
        {"op": "gamma", "gamma": [1.2, 3.0], "p": 0.5},
        {"op": "gaussian_noise", "std": [0.0, 8 / 255], "p": 0.5},
        {"op": "lamp", "p": 0.5},
        {"op": "clahe", "clip_limit": 3.0, "tile_grid": [2, 2], "p": 0.5},
        {"op": "hflip", "p": 0.5}]},
    "detection-basic": {"op": "compose", "name": "detection-basic", "transforms": [
        {"op": "rotation", "degrees": 10},
        {"op": "translation", "fraction": 0.1},
        {"op": "hflip", "p": 0.5},
        {"op": "brightness", "factor": 0.2}]},
}


#: named policies built by a function (photo policies: RandAugment, TrivialAugment, ...):
#: name -> (builder taking the settings, one-line summary)
_BUILDERS: dict[str, tuple] = {}


def register_policy(name: str, builder, summary: str = "") -> None:
    """Make ``builder(**settings)`` (returning a :class:`Policy` whose records name it) a
    named policy, taken wherever a policy name is (``--policy NAME``, ``{"named": NAME}``)."""
    _BUILDERS[name] = (builder, summary)


def photo_policies() -> dict[str, str]:
    """The named policies for photos and what each does."""
    return {name: summary for name, (_, summary) in _BUILDERS.items()}


def available_policies() -> dict[str, dict]:
    """The named combinations: their steps, settings and the study's expansion factors."""
    return {name: {"steps": steps, "settings": {s: STUDY_SETTINGS[s] for s in steps},
                   "factors": [1] if name == "original" else list(STUDY_FACTORS)}
            for name, steps in _STUDY_STEPS.items()}


def named_policy(name: str, *, fill: str = "constant", fill_value: float = 0.0,
                 interpolation: str = "bilinear", **settings) -> Compose:
    """A named combination of the MNIST study (``original``, ``rotation-elastic``, ...).

    ``settings`` override a step's options by step name, e.g.
    ``named_policy("rotation", rotation={"degrees": 10})``. Photo policies
    (:func:`photo_policies`: ``photo-light``, ``randaugment``, ...) take their own
    settings (``named_policy("randaugment", n=3, magnitude=12)``)."""
    if name in _BUILDERS:
        if fill != "constant" or fill_value != 0 or interpolation != "bilinear":
            raise UnknownNameError(f"Policy {name!r} sets its own fill and interpolation; "
                                   f"write a policy file to change them.")
        return _BUILDERS[name][0](**settings)
    if name not in _STUDY_STEPS:
        raise UnknownNameError(f"Unknown policy {name!r}. Named policies: "
                               f"{', '.join(NAMED_POLICIES)}; photo policies: "
                               f"{', '.join(_BUILDERS)}; or give a policy file "
                               f"(.yaml/.json).")
    unknown = sorted(set(settings) - set(STUDY_SETTINGS))
    if unknown:
        raise UnknownNameError(f"named_policy: no step {', '.join(unknown)}; steps: "
                               f"{', '.join(STUDY_SETTINGS)}.")
    steps = [get_transform(step, fill=fill, fill_value=fill_value, interpolation=interpolation,
                           **{**STUDY_SETTINGS[step], **settings.get(step, {})})
             for step in _STUDY_STEPS[name]]
    policy = Compose(steps, name=name)
    named = {"named": name}
    if fill != "constant" or fill_value != 0 or interpolation != "bilinear":
        named.update(fill=fill, fill_value=fill_value, interpolation=interpolation)
    named.update({k: v for k, v in settings.items() if v})
    policy._named = named
    return policy


# -- specs and files ---------------------------------------------------------------------
_NODES = {"compose": Compose, "one_of": OneOf, "some_of": SomeOf}


def policy_from_spec(spec, *, defaults: dict | None = None) -> Policy:
    """Build a policy from its spec: ``{"named": ...}``, ``{"op": "compose", "transforms":
    [...]}``, ``{"op": "rotation", "degrees": 10}``, the short form ``{"rotation":
    {"degrees": 10}}``, or a list (a compose). ``defaults`` (e.g. ``fill``) apply to every
    geometric transform that does not set them."""
    return _as_policy(_node(spec, defaults or {}))


def _node(spec, defaults: dict):
    if isinstance(spec, str):
        spec = {spec: {}}
    if isinstance(spec, list):
        return Compose([_node(s, defaults) for s in spec])
    if not isinstance(spec, dict):
        raise PolicyFileError(f"A policy step must be a mapping or a list, got {spec!r}.")
    spec = dict(spec)
    if "named" in spec:
        name = spec.pop("named")
        return named_policy(name, **{**_geometric_defaults(defaults), **spec})
    if "op" not in spec:
        if len(spec) != 1:
            raise PolicyFileError(f"A policy step needs an 'op' (or one key naming it), got "
                                  f"keys {sorted(spec)}.")
        (op, options), = spec.items()
        if isinstance(options, list):
            options = {"transforms": options}
        if options is not None and not isinstance(options, dict):
            raise PolicyFileError(f"The options of step {str(op)[:40]!r} must be a mapping "
                                  f"(e.g. {{degrees: 10}}), got {str(options)[:40]!r}.")
        spec = {"op": op, **(options or {})}
    op = spec.pop("op")
    if op in _NODES:
        steps = spec.pop("transforms", [])
        if not isinstance(steps, list):
            raise PolicyFileError(f"'{op}': 'transforms' must be a list of steps, got "
                                  f"{str(steps)[:40]!r}.")
        children = [_node(s, defaults) for s in steps]
        try:
            return _NODES[op](children, **spec)
        except TypeError as error:
            raise PolicyFileError(f"'{op}': {error}") from None
    from smartset.augment.transforms import transform_class

    cls = transform_class(op)
    if cls.kind == "geometric":
        spec = {**_geometric_defaults(defaults), **spec}
    return get_transform(op, **spec)


def _geometric_defaults(defaults: dict) -> dict:
    return {k: defaults[k] for k in ("fill", "fill_value", "interpolation") if k in defaults}


def load_policy(path: str | Path) -> Policy:
    """Read a policy file (``.yaml``/``.yml`` needs PyYAML, or ``.json``)::

        name: digits-light
        constraints: digits          # optional: validated on load
        fill: constant               # defaults for every geometric transform
        transforms:
          - rotation: {degrees: 10, p: 0.8}
          - one_of:
              - elastic: {alpha: 34, sigma: 4}
              - translation: {fraction: 0.1}
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyFileError(f"Cannot read policy file '{path}': {error.strerror}.") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise PolicyFileError("YAML policy files need PyYAML (pip install pyyaml); or "
                                  "write the policy as .json.") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise PolicyFileError(f"'{path}' is not valid YAML: {error}") from None
        except (RecursionError, ValueError) as error:
            raise PolicyFileError(f"'{path}' cannot be read as a policy ({type(error).__name__}: "
                                  f"nested too deeply or a value too large).") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise PolicyFileError(f"'{path}' is not valid JSON: {error}") from None
        except (RecursionError, ValueError) as error:
            raise PolicyFileError(f"'{path}' cannot be read as a policy ({type(error).__name__}: "
                                  f"nested too deeply or a value too large).") from None
    try:
        return _from_document(data)
    except PolicyFileError as error:
        raise PolicyFileError(f"Policy file '{path}': {error}") from None
    except RecursionError:
        raise PolicyFileError(f"Policy file '{path}': steps nest too deeply.") from None


def _from_document(data) -> Policy:
    if isinstance(data, list):
        return policy_from_spec(data)
    if not isinstance(data, dict):
        raise PolicyFileError(f"expected a mapping with 'transforms', got {type(data).__name__}.")
    data = dict(data)
    constraints = data.pop("constraints", None)
    defaults = {k: data.pop(k) for k in ("fill", "fill_value", "interpolation") if k in data}
    name = data.pop("name", None)
    if "transforms" in data or "op" in data or "named" in data:
        spec = data if "op" in data or "named" in data else {"op": "compose", **data}
        policy = policy_from_spec(spec, defaults=defaults)
    else:
        raise PolicyFileError("expected 'transforms' (a list of steps) or 'named'.")
    if name and policy._named is None:
        policy.name = name
    if constraints:
        validate_policy(policy, constraints)
    return policy


def save_policy(policy: Policy, path: str | Path) -> Path:
    """Write ``policy``'s spec as JSON (or YAML for ``.yaml``), atomically."""
    from smartset._atomic import write_text

    policy = resolve_policy(policy)
    path = Path(path)
    spec = policy.spec()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        write_text(path, yaml.safe_dump(spec, sort_keys=False))
    else:
        write_text(path, json.dumps(spec, indent=2) + "\n")
    return path


def resolve_policy(policy) -> Policy:
    """A :class:`Policy` from a policy, a transform, a spec dict, a named policy, a
    registered transform name or a policy file path."""
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, Transform):
        return Compose([policy], name=policy.name)
    if isinstance(policy, (dict, list)):
        return policy_from_spec(policy)
    if isinstance(policy, Path) or (isinstance(policy, str) and policy.lower().endswith(
            (".yaml", ".yml", ".json"))):
        return load_policy(policy)
    if isinstance(policy, str):
        if policy in _STUDY_STEPS or policy in _BUILDERS:
            return named_policy(policy)
        if policy in TASK_POLICIES:
            return policy_from_spec(TASK_POLICIES[policy])
        from smartset.augment.transforms import _ALIASES, _REGISTRY

        if policy in _REGISTRY or policy in _ALIASES:
            return Compose([get_transform(policy)], name=policy)
        raise UnknownNameError(f"Unknown policy {policy!r}. Named policies: "
                               f"{', '.join(NAMED_POLICIES)}; photo policies: "
                               f"{', '.join(_BUILDERS)}; task policies: "
                               f"{', '.join(TASK_POLICIES)}; transforms: "
                               f"{', '.join(sorted(_REGISTRY))}; or a .yaml/.json file.")
    raise TypeError(f"policy must be a Policy, a transform, a name or a file path, got "
                    f"{type(policy).__name__}")


# -- domain constraints ------------------------------------------------------------------
@dataclass(frozen=True)
class Constraints:
    """What a data set's meaning forbids: transform ``tags`` (``flip``, ``intensity``,
    ``color``, ``noise``, ...) and a largest rotation in degrees."""

    name: str
    forbid: frozenset[str] = frozenset()
    max_rotation: float | None = None
    why: str = ""


DOMAIN_CONSTRAINTS = {
    "digits": Constraints("digits", frozenset({"flip"}), 45.0,
                          "a mirrored or upturned digit is another digit or none (2, 5, 6, 9)"),
    "text": Constraints("text", frozenset({"flip"}), 30.0, "mirrored text is not text"),
    "ct": Constraints("ct", frozenset({"flip", "intensity", "color"}), None,
                      "CT values are Hounsfield units and the body has a left and a right"),
    "physical-units": Constraints("physical-units", frozenset({"intensity", "color"}), None,
                                  "pixel values are measurements, not brightness"),
    "none": Constraints("none"),
}


def get_constraints(constraints) -> list[Constraints]:
    if constraints is None:
        return []
    if isinstance(constraints, Constraints):
        return [constraints]
    if isinstance(constraints, str):
        constraints = [c.strip() for c in constraints.split(",") if c.strip()]
    if not isinstance(constraints, (list, tuple)):
        raise PolicyFileError(f"constraints must be a name (e.g. 'digits') or a list of names, "
                              f"got {str(constraints)[:40]!r}.")
    out = []
    for c in constraints:
        if isinstance(c, Constraints):
            out.append(c)
        elif c in DOMAIN_CONSTRAINTS:
            out.append(DOMAIN_CONSTRAINTS[c])
        else:
            raise UnknownNameError(f"Unknown domain constraint {c!r}. Constraints: "
                                   f"{', '.join(DOMAIN_CONSTRAINTS)}.")
    return out


def validate_policy(policy, constraints) -> None:
    """Raise :class:`~smartset.augment.ConstraintError` if ``policy`` uses a transform the
    ``constraints`` (names such as ``digits``, ``ct``, ``physical-units``, or
    :class:`Constraints`) forbid, naming the transform, the rule and the fix."""
    policy = resolve_policy(policy)
    for rule in get_constraints(constraints):
        for leaf in policy.leaves():
            banned = sorted(leaf.tags & rule.forbid)
            if banned:
                raise ConstraintError(
                    f"Policy '{policy.label}' uses '{leaf.name}' ({', '.join(banned)}), which "
                    f"the '{rule.name}' constraints forbid: {rule.why}. Remove it from the "
                    f"policy, or drop the constraint if it is safe for this data.")
            if rule.max_rotation is not None and leaf.name == "rotation":
                largest = max(abs(v) for v in as_range(leaf.degrees, symmetric=True))
                if largest > rule.max_rotation:
                    raise ConstraintError(
                        f"Policy '{policy.label}' rotates by up to {largest:g} degrees; the "
                        f"'{rule.name}' constraints allow {rule.max_rotation:g} ({rule.why}). "
                        f"Lower 'degrees'.")


# the photo policies register the same way a plugin would
from smartset.augment import _auto  # noqa: E402,F401
