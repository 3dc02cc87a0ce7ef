"""Go-live checks: everything that keeps a study from running, said before the first participant finds out.

`problems(study)` lists every reason at once (the researcher fixes them in one pass, not one per try);
`set_live(study)` is the one way a study goes live: the admin's action and status field, the `demo`
command and any script call it. Units are named by their key (`conv2:nmf:0`), never a database id.
"""
import re
from collections import defaultdict

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction

from . import assignment, designs
from .models import Condition, StimulusJob, Study, band_name, named_units
from .recruitment import PLATFORM_PARAMETERS
from .trials import build_trial_list, in_query_band, main_pairs_per_unit

_PLACEHOLDER = re.compile(r"\{(\w*)\}")
# What a placeholder stands for when the URL's shape is checked: a platform's own base URL for MTurk's
# turkSubmitTo (it starts the URL), a plain word for every query value.
_SAMPLE = {"turkSubmitTo": "https://www.mturk.com"}
_UNIT_IN_MESSAGE = re.compile(r"\bunit (\S+) ")


class GoLiveRefused(ValueError):
    """The study cannot run; `problems` lists every reason."""

    def __init__(self, study, problems):
        self.problems = list(problems)
        super().__init__(f"Study \"{study.slug}\" cannot go live: " + " ".join(self.problems))


def placeholders(study):
    """The placeholders a completion URL of this study may use: `{code}` and the parameters its platform's
    link brings."""
    return ["code", *PLATFORM_PARAMETERS.get(study.recruitment, ("", ()))[1]]


def completion_problems(study):
    url = (study.completion_url or "").strip()
    code = (study.completion_code or "").strip()
    platform = Study.Recruitment(study.recruitment).label
    out = []
    if study.recruitment != Study.Recruitment.LINK and not code and not url:
        out.append(f"A {platform} study needs a completion code or a completion URL: without either, {platform} "
                   f"cannot tell who finished.")
    if not url:
        return out
    used = _PLACEHOLDER.findall(url)
    known = placeholders(study)
    unknown = [name for name in dict.fromkeys(used) if name not in known]
    if unknown:
        out.append(f"The completion URL has {', '.join('{' + n + '}' for n in unknown)}, which nothing fills in; "
                   f"it may use {', '.join('{' + n + '}' for n in known)}.")
    if "code" in used and not code:
        out.append("The completion URL has {code}, but the completion code is empty: participants would be sent "
                   "on without one.")
    filled = _PLACEHOLDER.sub(lambda m: _SAMPLE.get(m.group(1), "x"), url)
    try:
        URLValidator(schemes=["http", "https"])(filled)
    except ValidationError:
        out.append(f"The completion URL {url!r} is not a web address: it must be a full URL starting with "
                   f"https://.")
    return out


def _pairs(unit, paradigm):
    if paradigm == Condition.Paradigm.ORDERED_STRIP:
        return len(unit.strips)
    if paradigm == Condition.Paradigm.OCCLUSION_2AFC:
        return len(unit.occlusion)
    return len(unit.queries_max)


#: what a main trial of each paradigm shows one of, per unit
_SHOWN = {Condition.Paradigm.ORDERED_STRIP: "ordered strips", Condition.Paradigm.OCCLUSION_2AFC: "occlusion pairs"}


def condition_problems(study, condition, conditions=None):
    """What keeps `condition` from giving a participant the study's trial plan. `conditions`: all of the
    study's (a form's, not saved yet; default: its stored ones), which a disjoint allocation splits units over."""
    name = f"Condition \"{condition.name}\""
    if condition.job_id is None:
        return [f"{name} has no stimulus job."]
    job = condition.job
    if job.status != StimulusJob.Status.SUCCEEDED:
        return [f"{name}: its stimulus job {job} has not succeeded (it is {job.get_status_display().lower()})."]
    keys = dict((u.pk, u.key) for u in condition.units())
    if not keys:
        return [f"{name}: stimulus job {job} has no units for layer {condition.layer!r} and basis "
                f"{condition.basis!r}."]
    band_error = condition.query_band_error()
    if band_error:
        return [f"{name}: {band_error}."]
    band = condition.query_band_limits()
    units = [in_query_band(u, band) for u in condition.unit_exemplars(fresh=True)]
    out = []
    # Each unit alone through the trial builder, as a participant's list would take it: every unit that
    # lacks what the paradigm or reference type shows is named, not only the first.
    lacking = defaultdict(list)
    for unit in units:
        try:
            build_trial_list([unit], n_practice=study.n_practice, n_main=max(study.n_main, 1),
                             catch_ratio=study.catch_ratio, reference_type=condition.reference_type, seed=0,
                             paradigm=condition.paradigm)
        except ValueError as exc:
            message = named_units(str(exc), keys)
            match = _UNIT_IN_MESSAGE.match(message)
            if match:
                lacking[message[match.end():]].append(match.group(1))
            else:
                lacking[message].append(None)
    for reason, named in lacking.items():
        named = [k for k in named if k]
        if not named:
            out.append(f"{name}: {reason}.")
        elif len(named) == 1:
            out.append(f"{name}: unit {named[0]} {reason}.")
        else:
            out.append(f"{name}: units {', '.join(named)} each {reason}.")
    if out:
        return out
    # A main trial shows one of the unit's query pairs (strips); a plan with more per unit than the
    # artifact holds shows participants the same pair again, and their answers stop being independent.
    n_main, shown, plan = _main_plan(study, condition, len(units), conditions)
    per_unit = main_pairs_per_unit(n_main, study.catch_ratio, shown)
    short = [keys[u.unit_id] for u in units if _pairs(u, condition.paradigm) < per_unit]
    if short:
        what = _SHOWN.get(condition.paradigm, "query pairs" + (
            f" in the band {band_name(band)}" if any(u.queries_max_percentile for u in units) else ""))
        out.append(f"{name}: {plan} gives each unit up to {per_unit} main trials, but "
                   f"{'unit' if len(short) == 1 else 'units'} {', '.join(short)} "
                   f"{'has' if len(short) == 1 else 'have'} fewer {what}: participants would see one again. "
                   f"Lower {_trial_count_name(study)} or run the job with more.")
    return out


def _trial_count_name(study):
    """The study field that sets how many main trials a condition has."""
    blocks = study.design != Study.Design.BETWEEN and study.trials_per_block
    return "the trials per block" if blocks else "N main"


def _main_plan(study, condition, n_units, conditions=None):
    """(main trials a participant does in `condition`, catch trials included; how many of its units they
    see; the plan in words). A within or mixed design gives a condition `trials_per_block` in each of its
    blocks (`Study.main_trials_per_condition`); a disjoint allocation shows each participant the part of the
    units that falls to the condition (the smallest part of `designs.disjoint_parts` is the fewest units a
    participant sees of it), so each of those units takes more of the trials."""
    if study.design == Study.Design.BETWEEN:
        return study.n_main, n_units, f"N main {study.n_main}"
    n_main = study.main_trials_per_condition()
    plan = (f"{study.trials_per_block} trials per block x {study.blocks_per_condition} blocks"
            if study.trials_per_block else f"N main {study.n_main}")
    if study.unit_allocation != Study.UnitAllocation.DISJOINT:
        return n_main, n_units, plan
    try:
        ordered, orders, _ = assignment.study_plan(study, conditions)
    except designs.DesignError:
        return n_main, n_units, plan  # design_problems says why the design cannot be satisfied
    index = next((i for i, c in enumerate(ordered) if c is condition or (c.pk and c.pk == condition.pk)), None)
    groups = [sorted(set(order.blocks)) for order in orders if index in order.blocks]
    if not groups:
        return n_main, n_units, plan
    members = max(groups, key=len)
    n_least = min(ordered[i].units().count() for i in members)
    try:
        # the rotation moves the parts between conditions, never their sizes
        shown = min(len(part) for part in designs.disjoint_parts(n_least, len(members), 0))
    except designs.DesignError:
        return n_main, n_units, plan  # design_problems: fewer units than conditions to split them over
    return n_main, shown, f"{plan}, over the {shown} of its units a disjoint allocation shows each participant,"


def problems(study, conditions=None):
    """Every reason `study` cannot run; empty when it can. `conditions`: the conditions it would have
    (a form's, not saved yet); default: its stored ones."""
    conditions = list(study.conditions.select_related("job__network") if conditions is None else conditions)
    out = []
    if not conditions:
        out.append("The study has no conditions: a participant would have nothing to do.")
    if not study.n_main:
        out.append("N main is 0: a participant would have no trials.")
    if not study.participants_per_condition:
        out.append("The quota (participants per condition) is 0: the first participant would find the study full.")
    out += completion_problems(study)
    for condition in conditions:
        out += condition_problems(study, condition, conditions)
    out += design_problems(study, conditions)
    return out


def design_problems(study, conditions):
    """What keeps a within or mixed design from being satisfied: factors no condition has, a practice
    block that names no condition, more blocks than units (a query band the job cannot serve is a
    condition's own problem, `condition_problems`)."""
    out = []
    if study.design == Study.Design.BETWEEN or not conditions:
        return out
    try:
        conditions, orders, _ = assignment.study_plan(study, conditions)
    except designs.DesignError as exc:
        return out + [f"The design cannot be satisfied: {exc}."]
    names = {c.name for c in conditions}
    if study.practice_block and study.practice_block not in names:
        out.append(f"The practice block names \"{study.practice_block}\", which is no condition of the study; "
                   f"it has {', '.join(sorted(names))}.")
    if study.block_alternate and study.block_alternate in (study.between_factors or []):
        out.append(f"{study.block_alternate} varies between participants, so it cannot alternate within one.")
    for order in orders:
        members = sorted(set(order.blocks))
        n_units = min(conditions[i].units().count() for i in members)
        if study.unit_allocation == Study.UnitAllocation.DISJOINT and n_units < len(members):
            out.append(f"A disjoint allocation splits each participant's units over their {len(members)} "
                       f"conditions, but a condition has only {n_units} units.")
            break
        if study.trials_per_block == 0 and study.n_main < study.blocks_per_condition:
            out.append(f"N main ({study.n_main}) is fewer than the blocks per condition "
                       f"({study.blocks_per_condition}): a block would be empty.")
            break
    return out


@transaction.atomic
def set_live(study, author=None):
    """Set `study` live, or raise GoLiveRefused with every reason it cannot run. Its earlier versions that
    are live close to new arrivals (their started participants finish where they began); returns them."""
    found = problems(study)
    if found:
        raise GoLiveRefused(study, found)
    earlier = []
    previous = study.previous_version
    while previous is not None:
        if previous.status == Study.Status.LIVE:
            previous.status = Study.Status.CLOSED
            previous.changed_by = author
            previous.save(update_fields=["status"])
            earlier.append(previous)
        previous = previous.previous_version
    if study.status != Study.Status.LIVE:
        study.status = Study.Status.LIVE
        study.changed_by = author
        study.save(update_fields=["status"])
    return earlier
