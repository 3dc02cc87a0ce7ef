"""Migration 0008 gives every existing participant its own record of what it was shown: layer, basis and job
from the unit of its first trial (what it saw, even where the condition was edited since), the rest from
its condition."""
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("studyapp", "0007_stimulus_shards")]
AFTER = [("studyapp", "0008_versions_and_assigned_conditions")]


def migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)
    return executor.loader.project_state(target).apps


@pytest.fixture
def back_to_the_latest_migration():
    """The database goes back to the newest schema afterwards, whatever migrations come after 0008: the
    tests that follow expect every column."""
    yield
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_existing_participants_get_what_they_were_shown(back_to_the_latest_migration):
    old = migrate(BEFORE)
    network = old.get_model("studyapp", "Network").objects.create(name="net")
    image_set = old.get_model("studyapp", "ImageSet").objects.create(name="images")
    job = old.get_model("studyapp", "StimulusJob").objects.create(network=network, image_set=image_set,
                                                                   layer="conv2", bases="pca,nmf")
    unit = old.get_model("studyapp", "Unit").objects.create(job=job, layer="conv2", basis="pca", index=0)
    study = old.get_model("studyapp", "Study").objects.create(slug="s", title="S")
    condition = old.get_model("studyapp", "Condition").objects.create(
        study=study, name="pca", job=job, layer="conv2", basis="pca", reference_type="max_only")
    Participant = old.get_model("studyapp", "Participant")
    shown = Participant.objects.create(study=study, condition=condition, recruitment="link", seed=1)
    old.get_model("studyapp", "Trial").objects.create(participant=shown, position=0, block="main", kind="main",
                                                      unit=unit, correct_query="a")
    waiting = Participant.objects.create(study=study, condition=condition, recruitment="link", seed=2)
    # The database: the condition's basis edited after participants were shown pca units.
    old.get_model("studyapp", "Condition").objects.filter(pk=condition.pk).update(basis="nmf", name="nmf")

    new = migrate(AFTER)
    rows = {p.pk: p for p in new.get_model("studyapp", "Participant").objects.all()}
    assert (rows[shown.pk].layer, rows[shown.pk].basis, rows[shown.pk].stimulus_job_id) == ("conv2", "pca", job.pk)
    assert (rows[shown.pk].condition_name, rows[shown.pk].reference_type, rows[shown.pk].paradigm) == \
        ("nmf", "max_only", "reference_2afc")
    # No trial: the condition's row is the only record left.
    assert (rows[waiting.pk].basis, rows[waiting.pk].condition_name) == ("nmf", "nmf")
    assert new.get_model("studyapp", "Study").objects.get().version == 1
