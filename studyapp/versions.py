"""Versions and copies of a study.

Once a study has answers, what they mean is frozen (`Study.MEANING_FIELDS`, `Condition.MEANING_FIELDS`,
enforced by the models' `clean()` and `save()`). A change to it is a new version: a copy of the study
and its conditions, numbered one more, linked to its predecessor, as a draft under its own participant
link `<slug>-v<N>` (the slug of version 1 with the version's number). A version is a study row of its
own, so its participants, answers and export stay apart, and a participant keeps the version they
started: their session belongs to that row, whose status no longer matters once they have started.

Going live with a version closes its earlier versions to new arrivals (`golive.set_live`).

A duplicate is a new study (version 1, no predecessor) with the same conditions, texts and settings,
as a draft under a new slug; participants are never copied.
"""
import re

from django.db import transaction

from .models import Condition, Study, StudyChange

# Not copied: the row's identity, its place in a line of versions, its state.
_NOT_COPIED = {"id", "slug", "version", "previous_version", "status", "created"}
_VERSION_SUFFIX = re.compile(r"-v\d+$")
SLUG_MAX = Study._meta.get_field("slug").max_length


class VersionError(ValueError):
    """A new version or a copy that cannot be made; the message says why."""


def _copy(study, slug, author=None, **fields):
    if Study.objects.filter(slug=slug).exists():
        raise VersionError(f"A study with the link name {slug!r} exists already.")
    values = {f.attname: getattr(study, f.attname) for f in Study._meta.concrete_fields if f.name not in _NOT_COPIED}
    copy = Study(**{**values, **fields, "slug": slug, "status": Study.Status.DRAFT})
    copy.changed_by = author
    copy.save()
    for condition in study.conditions.order_by("pk"):
        Condition.objects.create(study=copy, **{f.attname: getattr(condition, f.attname)
                                                for f in Condition._meta.concrete_fields
                                                if f.name not in ("id", "study")})
    return copy


def base_slug(study):
    """The slug of the line's first version (what `-v2`, `-v3` … extend)."""
    first = study
    while first.previous_version_id is not None:
        first = first.previous_version
    return first.slug


def version_slug(study, version):
    suffix = f"-v{version}"
    return base_slug(study)[:SLUG_MAX - len(suffix)] + suffix


@transaction.atomic
def new_version(study, author=None):
    """The next version of `study`: a draft copy numbered `study.version + 1`, to be edited and set live.
    Refuses a version that already has a next one (versions form a line: edit the newest)."""
    study = Study.objects.select_for_update().get(pk=study.pk)
    following = study.next_versions.first()
    if following is not None:
        raise VersionError(f"Study \"{study.slug}\" already has a newer version, \"{following.slug}\" (version "
                           f"{following.version}); make the next version from the newest one.")
    copy = _copy(study, version_slug(study, study.version + 1), author,
                 version=study.version + 1, previous_version=study)
    StudyChange.objects.create(study=copy, field="new version", old=f"{study.slug} (version {study.version})",
                               new=f"{copy.slug} (version {copy.version})",
                               author=author if getattr(author, "pk", None) else None,
                               author_name=author.get_username() if getattr(author, "pk", None) else "")
    return copy


def copy_slug(study):
    """`<slug>-copy`, then `-copy-2`, `-copy-3` … until one is free."""
    stem = _VERSION_SUFFIX.sub("", study.slug)
    n = 1
    while True:
        suffix = "-copy" if n == 1 else f"-copy-{n}"
        slug = stem[:SLUG_MAX - len(suffix)] + suffix
        if not Study.objects.filter(slug=slug).exists():
            return slug
        n += 1


@transaction.atomic
def duplicate(study, slug=None, author=None):
    """A new study with `study`'s conditions, texts and settings, as a draft under `slug` (default: a free
    `<slug>-copy`); version 1 of its own line. No participant is copied."""
    return _copy(study, slug or copy_slug(study), author, version=1, previous_version=None,
                 title=f"{study.title} (copy)")


def lineage(study):
    """The study's versions, first to newest."""
    first = study
    while first.previous_version_id is not None:
        first = first.previous_version
    line = [first]
    while True:
        following = line[-1].next_versions.first()
        if following is None:
            return line
        line.append(following)
