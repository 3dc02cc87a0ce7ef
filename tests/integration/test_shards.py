"""Sharded stimulus jobs on the real stack: two `celery worker` processes on Redis share a job's shards,
and the artifact is the one the job run as one task makes; a worker killed in the middle of a shard
leaves the job to the other, which takes the shard over once Redis hands its message out again."""
import json
import os
import signal

import pytest

from .stack import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

# The demo network's first layer over the digits: a job of seconds, in batches small enough that three
# shards each take a while.
JOB = {"shards": 3, "batch_size": 16, "completeness": False, "n_strips": 2}


@pytest.fixture
def two_workers(stack):
    """The stack's worker and a second one, both on the gpu queue. Afterwards the stack is as it was:
    its own worker running (restarted if a test killed it), the second stopped, the tests' jobs deleted
    (the other integration tests take the demo's job to be the only one that succeeded)."""
    [(last,)] = stack.sql("SELECT coalesce(max(id), 0) FROM studyapp_stimulusjob")
    stack.start_worker("worker-2")
    wait_until(lambda: "ready." in stack.log("worker-2"), 120, "the second worker to be ready")
    yield stack
    stack.stop_process("worker-2")
    if "worker" not in stack.processes:
        stack.start_worker()
    stack.manage("shell", "-c", "from studyapp.models import StimulusJob; "
                 f"StimulusJob.objects.filter(pk__gt={last}).delete()")


def launch(stack, **parameters):
    out = stack.manage("launch_stimuli", "--layer", "conv1", "--bases", "neuron,pca", "--units", "2", "--parameters",
                       json.dumps(parameters)).stdout
    return int(out.split()[-1])


def status(stack, job_id):
    return stack.sql("SELECT status, error FROM studyapp_stimulusjob WHERE id = %s", (job_id,))[0]


def succeeded(stack, job_id):
    state, error = status(stack, job_id)
    assert state in ("queued", "running", "succeeded"), error
    return state == "succeeded"


def shard_rows(stack, job_id):
    return stack.sql("SELECT index, status, progress, attempts, worker FROM studyapp_stimulusshard "
                     "WHERE job_id = %s ORDER BY index", (job_id,))


def manifest(stack, job_id):
    m = json.loads((stack.workdir / "artifacts" / f"job-{job_id}" / "manifest.json").read_text())
    return {k: v for k, v in m.items() if k not in ("created", "versions", "timings")}


def units(stack, job_id):
    return stack.sql("SELECT u.basis, u.index, u.measures::text, string_agg(e.image, ',' ORDER BY e.role, e.group, "
                     "e.position) FROM studyapp_unit u JOIN studyapp_exemplar e ON e.unit_id = u.id "
                     "WHERE u.job_id = %s GROUP BY u.id ORDER BY u.basis, u.index", (job_id,))


def test_two_workers_share_the_shards_and_the_artifact_is_the_unsharded_one(two_workers):
    stack = two_workers
    whole = launch(stack, **{**JOB, "shards": 1})
    wait_until(lambda: succeeded(stack, whole), 300, "the unsharded job to succeed")
    sharded = launch(stack, **JOB)
    wait_until(lambda: succeeded(stack, sharded), 300, "the sharded job to succeed")

    assert manifest(stack, sharded) == manifest(stack, whole)
    assert units(stack, sharded) == units(stack, whole) and len(units(stack, whole)) == 4
    rows = shard_rows(stack, sharded)
    assert [(i, s, p, a) for i, s, p, a, _ in rows] == [(i, "succeeded", 100.0, 1) for i in range(3)]
    assert {w.split("@")[0] for *_, w in rows} == {"worker", "worker-2"}  # both took shards
    assert not shard_rows(stack, whole)
    assert not (stack.workdir / "artifacts" / "shards" / f"job-{sharded}").exists()


def test_a_worker_killed_mid_shard_leaves_the_shard_to_the_other_and_the_job_completes(two_workers):
    stack = two_workers
    job_id = launch(stack, **{**JOB, "batch_size": 4})
    killed = wait_until(lambda: freeze_a_worker_mid_shard(stack, job_id), 300, "a worker to be in a shard")
    index, name = killed
    stack.kill_process(name)  # frozen mid-shard, it dies there: no cleanup, its message unacknowledged
    survivor = {"worker": "worker-2", "worker-2": "worker"}[name]

    wait_until(lambda: succeeded(stack, job_id), 300, "the job to succeed on the surviving worker")
    rows = shard_rows(stack, job_id)
    assert all(s == "succeeded" and p == 100.0 for _, s, p, _, _ in rows)
    taken_over = rows[index]
    assert taken_over[3] == 2 and taken_over[4].startswith(f"{survivor}@")  # a second attempt, elsewhere
    assert stack.sql("SELECT count(*) FROM studyapp_unit WHERE job_id = %s", (job_id,))[0][0] == 4
    assert not (stack.workdir / "artifacts" / "shards" / f"job-{job_id}").exists()


def freeze_a_worker_mid_shard(stack, job_id):
    """Stop (SIGSTOP) the worker of a shard that is running and not done, and make sure it still is once
    stopped; (shard index, worker's process name), or None to look again."""
    for index, state, progress, _attempts, worker in shard_rows(stack, job_id):
        name = worker.split("@")[0]
        if state != "running" or progress >= 100 or name not in stack.processes:
            continue
        process = stack.processes[name]
        os.killpg(process.pid, signal.SIGSTOP)
        wait_until(lambda name=name: not stack.statements_running(name), 30, "the frozen worker's last write to land")
        [(state, progress)] = stack.sql("SELECT status, progress FROM studyapp_stimulusshard WHERE job_id = %s "
                                        "AND index = %s", (job_id, index))
        if state == "running" and progress < 100:
            return index, name
        os.killpg(process.pid, signal.SIGCONT)
    return None
