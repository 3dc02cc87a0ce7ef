"""Which query of a trial is correct, known from the stimulus side (the units' exemplars), never
from the trials' stored answer key."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from stimuli.artifact import read_manifest


def image_key(url_or_path):
    """An image's identity: its content-addressed file name, without the folder or URL prefix."""
    return str(url_or_path).rsplit("/", 1)[-1]


@dataclass(frozen=True)
class OracleUnit:
    key: str  # layer:basis:index
    basis: str
    layer: str
    references_max: frozenset
    references_min: frozenset
    queries_max: frozenset
    queries_min: frozenset
    strips: tuple = ()  # the unit's ordered strips, each lowest activation first
    overlays_max: frozenset = frozenset()  # attribution overlays shown in place of references_max
    synthetic_max: frozenset = frozenset()  # feature visualizations shown in place of references_max
    # occlusion 2AFC: each occluded image -> (|change of the unit's score|, from a catch pair)
    occluded: tuple = ()

    @classmethod
    def from_lists(cls, key, basis, layer, lists):
        """From an artifact unit's lists: `strips` (or the single `strip`) and `attribution_overlays_max`
        as the manifest names them, the exemplar roles otherwise."""
        # as studyapp.artifacts.unit_strips reads them; not imported, as this module runs without Django
        strips = lists.get("strips") or ([lists["strip"]] if lists.get("strip") else [])
        occluded = tuple((image_key(pair[side]), abs(float(pair["delta_" + side])), catch)
                         for key_, catch in (("occlusion_trials", False), ("occlusion_catch_trials", True))
                         for pair in lists.get(key_, ()) for side in ("a", "b"))
        return cls(key=key, basis=basis, layer=layer, occluded=occluded,
                   strips=tuple(tuple(image_key(p) for p in strip) for strip in strips),
                   overlays_max=frozenset(image_key(p) for p in lists.get("attribution_overlays_max", ())),
                   synthetic_max=frozenset(image_key(p) for p in lists.get("synthetic_max", ())),
                   **{role: frozenset(image_key(p) for p in lists.get(role, ())) for role in
                      ("references_max", "references_min", "queries_max", "queries_min")})

    @property
    def max_images(self):
        return self.references_max | self.queries_max

    @property
    def min_images(self):
        return self.references_min | self.queries_min

    @property
    def images(self):
        return (self.max_images | self.min_images | frozenset(img for strip in self.strips for img in strip)
                | frozenset(img for img, _, _ in self.occluded))

    @property
    def occlusion_effect(self):
        """Occluded image -> (|Δ|, catch)."""
        return {img: (effect, catch) for img, effect, catch in self.occluded}


@dataclass(frozen=True)
class OracleCondition:
    name: str
    basis: str
    reference_type: str  # natural | max_only | none | overlay | synthetic
    units: frozenset  # unit keys
    paradigm: str = "reference_2afc"
    n_references: int | None = None  # references per side; None: all the unit has


@dataclass(frozen=True)
class Judgement:
    correct: str | None  # a | b, None when the oracle cannot tell
    kind: str  # practice | main | catch | unknown
    basis: str | None = None
    unit: str | None = None
    conditions: tuple = ()


def _shown_type(trial, unit):
    if trial.get("paradigm") == "ordered_strip":
        return "ordered_strip"
    shown = {image_key(p) for p in trial.get("references_max") or ()}
    if unit.overlays_max and shown and shown <= unit.overlays_max:
        return "overlay"
    if unit.synthetic_max and shown and shown <= unit.synthetic_max:
        return "synthetic"
    if trial.get("references_max") and trial.get("references_min"):
        return "natural"
    if trial.get("references_max"):
        return "max_only"
    return "none"


def _concordance(strip, rank):
    """Pairs in increasing activation order minus pairs in decreasing order, along the strip."""
    r = [rank[img] for img in strip]
    return sum((r[j] > r[i]) - (r[j] < r[i]) for i in range(len(r)) for j in range(i + 1, len(r)))


class AnswerOracle:
    """Which query of a trial payload is the maximally activating one (reference 2AFC), or which strip
    runs from low to high activation (ordered strip), from the exemplar roles of the study's units.
    The trial payload does not name its unit; the unit is the one whose maximal references are the
    ones shown (or, with no references shown, the one in whose bands the two queries fall on opposite
    sides; for strips, the one whose strip or references hold all the images shown). When units
    disagree the oracle returns no answer rather than guess."""

    def __init__(self, units, conditions=()):
        self.units = list(units)
        self.conditions = list(conditions)
        self._by_refs = defaultdict(list)
        for unit in self.units:
            self._by_refs[unit.references_max].append(unit)
            # the references a trial shows on the maximal side, whichever kind its condition shows
            for shown in (unit.overlays_max, unit.synthetic_max):
                if shown:
                    self._by_refs[shown].append(unit)
        self._by_image = defaultdict(list)
        for unit in self.units:
            for img in unit.images:
                self._by_image[img].append(unit)
        self._conditions_of = defaultdict(list)
        for cond in self.conditions:
            for key in cond.units:
                self._conditions_of[key].append(cond)

    @classmethod
    def from_manifest(cls, manifest):
        """From an artifact's manifest (a dict, or the path of `manifest.json`). Conditions are not
        known there: accuracies are then looked up by basis."""
        if not isinstance(manifest, dict):
            manifest = read_manifest(manifest)
        units = []
        for layer in manifest["layers"]:
            for u in layer["units"]:
                key = u.get("id") or f"{layer['layer']}:{layer['basis']}:{u['index']}"
                units.append(OracleUnit.from_lists(key, layer["basis"], layer["layer"], u))
        return cls(units)

    @classmethod
    def from_study(cls, study):
        """From the Exemplar rows of the study's conditions, through the ORM (the management command's
        route). Reads only what the stimulus artifact put there, not the trials' answer keys."""
        from ..models import Exemplar

        roles = {Exemplar.Role.REFERENCE_MAX: "references_max", Exemplar.Role.REFERENCE_MIN: "references_min",
                 Exemplar.Role.QUERY_MAX: "queries_max", Exemplar.Role.QUERY_MIN: "queries_min",
                 Exemplar.Role.OVERLAY_MAX: "attribution_overlays_max",
                 Exemplar.Role.SYNTHETIC_MAX: "synthetic_max"}
        units, conditions, seen = [], [], {}
        for condition in study.conditions.all():
            keys = set()
            for unit in condition.units():
                keys.add(unit.key)
                if unit.key in seen:
                    continue
                lists, strips = defaultdict(list), defaultdict(list)
                rows = Exemplar.objects.filter(unit=unit).order_by("role", "group", "position")
                for role, group, image in rows.values_list("role", "group", "image"):
                    if role == Exemplar.Role.STRIP:
                        strips[group].append(image)
                    elif role in roles:
                        lists[roles[role]].append(image)
                lists["strips"] = [strips[group] for group in sorted(strips)]
                for pair in unit.occlusion_trials or ():
                    lists["occlusion_catch_trials" if pair.get("kind") == "catch" else "occlusion_trials"].append(pair)
                seen[unit.key] = OracleUnit.from_lists(unit.key, unit.basis, unit.layer, lists)
                units.append(seen[unit.key])
            # natural references without the minimal ones look like max_only on the screen
            shown = ("max_only" if condition.reference_type == "natural" and not condition.min_references
                     else condition.reference_type)
            conditions.append(OracleCondition(condition.name, condition.basis, shown, frozenset(keys),
                                              getattr(condition, "paradigm", "reference_2afc"),
                                              condition.n_references))
        return cls(units, conditions)

    def _conditions(self, unit, trial):
        shown = _shown_type(trial, unit)
        if shown == "ordered_strip":
            return tuple(sorted(c.name for c in self._conditions_of[unit.key] if c.paradigm == "ordered_strip"))
        n_shown = len(trial.get("references_max") or ())
        paradigm = trial.get("paradigm") or "reference_2afc"
        return tuple(sorted(c.name for c in self._conditions_of[unit.key]
                            if c.reference_type == shown and c.paradigm == paradigm
                            and (c.n_references is None or not n_shown or c.n_references == n_shown)))

    def _kind(self, trial, is_catch):
        if trial.get("block") == "practice":
            return "practice"
        return "catch" if is_catch else "main"

    def judge(self, trial):
        if trial.get("paradigm") == "ordered_strip" or "strip_a" in trial:
            return self._judge_strip(trial)
        if trial.get("paradigm") == "occlusion_2afc":
            return self._judge_occlusion(trial)
        a, b = image_key(trial["query_a"]), image_key(trial["query_b"])
        refs = frozenset(image_key(p) for p in trial.get("references_max") or ())
        candidates = self._by_refs.get(refs, []) if refs else self.units
        if refs and not candidates:
            # fewer references than the unit has (a condition's n_references): the strongest ones, so the
            # shown set is a subset of the unit's
            candidates = [u for u in self.units
                          if refs <= u.references_max or refs <= u.overlays_max or refs <= u.synthetic_max]
        verdicts = {}
        for unit in candidates:
            if a in unit.max_images and b in unit.min_images:
                verdicts[unit.key] = ("a", unit, a in unit.references_max)
            elif b in unit.max_images and a in unit.min_images:
                verdicts[unit.key] = ("b", unit, b in unit.references_max)
        answers = {v[0] for v in verdicts.values()}
        if len(answers) != 1:
            return Judgement(None, "unknown")
        correct, unit, is_catch = next(iter(verdicts.values()))
        return Judgement(correct, self._kind(trial, is_catch), unit.basis, unit.key, self._conditions(unit, trial))

    def _judge_occlusion(self, trial):
        """The occlusion whose change of the unit's score is larger, as the stimulus job measured it on
        the very images shown (the artifact's deltas, not the trial's answer key)."""
        a, b = image_key(trial["query_a"]), image_key(trial["query_b"])
        verdicts = {}
        for unit in self._by_image.get(a, ()):
            effect = unit.occlusion_effect
            if a in effect and b in effect and effect[a][0] != effect[b][0]:
                verdicts[unit.key] = ("a" if effect[a][0] > effect[b][0] else "b", unit, effect[a][1])
        if len({v[0] for v in verdicts.values()}) != 1:
            return Judgement(None, "unknown")
        correct, unit, is_catch = next(iter(verdicts.values()))
        return Judgement(correct, self._kind(trial, is_catch), unit.basis, unit.key, self._conditions(unit, trial))

    def _judge_strip(self, trial):
        strip_a = [image_key(p) for p in trial["strip_a"]]
        strip_b = [image_key(p) for p in trial["strip_b"]]
        shown = set(strip_a) | set(strip_b)
        if not shown:
            return Judgement(None, "unknown")
        verdicts = {}
        for unit in self._by_image.get(next(iter(shown)), ()):
            strip = next((strip for strip in unit.strips if shown <= set(strip)), None)
            if strip is not None:
                rank, is_catch = {img: i for i, img in enumerate(strip)}, False
            elif shown <= unit.references_min | unit.references_max:
                # an easy strip of extreme references: which side each image is on is all that is known
                rank, is_catch = {**{img: 0 for img in unit.references_min},
                                  **{img: 1 for img in unit.references_max}}, True
            else:
                continue
            score_a, score_b = _concordance(strip_a, rank), _concordance(strip_b, rank)
            if score_a != score_b:
                verdicts[unit.key] = ("a" if score_a > score_b else "b", unit, is_catch)
        if len({v[0] for v in verdicts.values()}) != 1:
            return Judgement(None, "unknown")
        correct, unit, is_catch = next(iter(verdicts.values()))
        return Judgement(correct, self._kind(trial, is_catch), unit.basis, unit.key, self._conditions(unit, trial))
