"""Faults on the real stack: a GPU worker killed mid-job."""
import time

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def job_state(stack, job_id):
    return stack.sql("SELECT status, stage, attempts FROM studyapp_stimulusjob WHERE id = %s", (job_id,))[0]


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_worker_killed_mid_job_leaves_no_half_artifact_and_the_job_completes_on_retry(stack):
    out = stack.manage("launch_stimuli", "--layer", "conv1", "--bases", "neuron,pca,nmf", "--units", "4").stdout
    job_id = int(out.split()[-1])
    artifacts = stack.workdir / "media" / "artifacts"
    mid_stages = {"activations", "bases", "exemplars", "render", "measures"}
    wait_until(lambda: job_state(stack, job_id)[1] in mid_stages, 300, "the job to reach the middle of the pipeline")

    stack.kill_process("worker")
    status, stage, attempts = job_state(stack, job_id)
    assert status == "running" and attempts == 1
    assert not (artifacts / f"job-{job_id}").exists()  # only a temporary folder, never a half artifact
    assert stack.sql("SELECT count(*) FROM studyapp_unit WHERE job_id = %s", (job_id,))[0][0] == 0

    stack.start_worker()
    wait_until(lambda: job_state(stack, job_id)[0] == "succeeded", 300, "the retried job to succeed")
    status, stage, attempts = job_state(stack, job_id)
    assert attempts == 2
    assert (artifacts / f"job-{job_id}" / "manifest.json").exists()
    assert not list(artifacts.glob(f".job-{job_id}.tmp-*"))
    units = stack.sql("SELECT basis, count(*) FROM studyapp_unit WHERE job_id = %s GROUP BY basis ORDER BY basis",
                      (job_id,))
    assert units == [("neuron", 4), ("nmf", 4), ("pca", 4)]  # each unit once
