"""Faults on the real stack: a GPU worker killed mid-job; a web worker killed before, inside and after
the transaction that stores an answer; PostgreSQL restarting or unreachable under the web app (through a
proxy that can drop, refuse and hold its connections); Redis, the cache and the broker, going away."""
import math
import os
import re
import signal
import threading
import time
from types import SimpleNamespace
from urllib.parse import urlencode

import psycopg
import pytest

from studyapp import ratelimit

from .participant import Participant, answer, open_request, read_reply
from .stack import connection_owner, free_port, wait_until
from .tcpproxy import TcpProxy

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def job_state(stack, job_id):
    return stack.sql("SELECT status, stage, attempts FROM studyapp_stimulusjob WHERE id = %s", (job_id,))[0]


@pytest.fixture
def jobs_forgotten(stack):
    """The stimulus jobs a test makes are deleted after it, with their units: the other integration tests
    take the demo's job to be the only one that succeeded."""
    [(last,)] = stack.sql("SELECT coalesce(max(id), 0) FROM studyapp_stimulusjob")
    yield
    stack.manage("shell", "-c", "from studyapp.models import StimulusJob; "
                 f"StimulusJob.objects.filter(pk__gt={last}).delete()")


def test_a_worker_killed_mid_job_leaves_no_half_artifact_and_the_job_completes_on_retry(stack, jobs_forgotten):
    out = stack.manage("launch_stimuli", "--layer", "conv1", "--bases", "neuron,pca,nmf", "--units", "4").stdout
    job_id = int(out.split()[-1])
    artifacts = stack.workdir / "artifacts"
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


# ------------------------------------------------------------------------------------------ web workers
SLUG = "faults"


@pytest.fixture(scope="module")
def study(stack):
    """A study of our own over the demo's stimuli, so the demo study stays untouched for the other tests."""
    stack.manage("demo", "--slug", SLUG, "--base-url", stack.base_url)
    yield SLUG
    ours = "SELECT p.id FROM studyapp_participant p JOIN studyapp_study s ON p.study_id = s.id WHERE s.slug = %s"
    for table, column in (("studyapp_response", "participant_id"), ("studyapp_trial", "participant_id"),
                          ("studyapp_participant", "id")):
        stack.sql(f"DELETE FROM {table} WHERE {column} IN ({ours})", (SLUG,))


@pytest.fixture(scope="module")
def database_proxy(stack):
    dsn = psycopg.conninfo.conninfo_to_dict(stack.database_url)
    proxy = TcpProxy(dsn.get("host", "127.0.0.1"), int(dsn.get("port", 5432))).start()
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def web(stack, database_proxy):
    """gunicorn with one sync worker, reaching PostgreSQL through the proxy. One worker, so the worker
    a test kills or whose connection it breaks is the one that serves the next request."""
    dsn = psycopg.conninfo.conninfo_to_dict(stack.database_url)
    url = f"postgres://{dsn.get('user', 'postgres')}@127.0.0.1:{database_proxy.port}/{dsn['dbname']}" \
        "?sslmode=disable&gssencmode=disable"
    web = SimpleNamespace(name="web-faults", port=free_port())
    web.url = f"http://127.0.0.1:{web.port}"
    stack.start_web(name=web.name, port=web.port, workers=1, DATABASE_URL=url)
    yield web
    stack.stop_process(web.name)


def stored(stack, trial_id):
    return stack.sql("SELECT count(*) FROM studyapp_response WHERE trial_id = %s", (trial_id,))[0][0]


def answered(stack, token):
    return stack.sql("SELECT answered FROM studyapp_participant WHERE token = %s", (token,))[0][0]


def lock_waiters(stack):
    """Backends of the stack's database that wait for a lock (a row's, a table's)."""
    return stack.sql("SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                     (stack.database,))


def backend_alive(stack, pid):
    return bool(stack.sql("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)))


def serving_worker(stack, web, sock):
    """The gunicorn worker that accepted the request on `sock`."""
    return wait_until(lambda: connection_owner(stack.web_workers(web.name), web.port, sock.getsockname()[1]), 20,
                      "a web worker to take the request")


def kill_worker(stack, web, pid):
    os.kill(pid, signal.SIGKILL)
    # gunicorn's master notices and starts another worker; the test's next request waits for it.
    wait_until(lambda: (workers := stack.web_workers(web.name)) and pid not in workers, 30,
               "gunicorn to replace the killed worker")


def started_participant(web, pid):
    participant = Participant(web.url)
    participant.arrive(SLUG, pid)
    participant.through_instructions()
    return participant


def test_a_web_worker_killed_while_reading_an_answer_stores_nothing_and_the_retry_stores_it_once(stack, study, web):
    participant = started_participant(web, "faults-killed-reading")
    trial = participant.next_trial()
    body = answer(trial)
    path, data, headers = participant.api_request("POST", "responses", body)
    # Half the body: the sync worker takes the request and waits for the rest.
    sock = open_request(web.port, "POST", path, data, headers, send=len(data) // 2)
    kill_worker(stack, web, serving_worker(stack, web, sock))
    assert read_reply(sock) == b""  # no status line: the request died with its worker
    assert stored(stack, trial["id"]) == 0

    retry = participant.api("POST", "responses", body)  # the front end resends the whole answer, same key
    assert retry.status == 201, retry
    assert stored(stack, trial["id"]) == 1 and answered(stack, participant.token) == trial["position"] + 1


def test_a_web_worker_killed_inside_its_transaction_stores_the_answer_once(stack, study, web):
    participant = started_participant(web, "faults-killed-in-transaction")
    trial = participant.next_trial()
    body = answer(trial)
    with psycopg.connect(stack.database_url) as holder:
        # Hold the participant's row, which storing an answer must lock: the worker stops there, inside
        # the statement (or transaction) that writes the answer, until this one ends.
        holder.execute("SELECT id FROM studyapp_participant WHERE token = %s FOR UPDATE", (participant.token,))
        sock = open_request(web.port, "POST", *participant.api_request("POST", "responses", body))
        [orphan] = wait_until(lambda: lock_waiters(stack), 20, "the answer to wait for the participant's row")
        kill_worker(stack, web, serving_worker(stack, web, sock))
        assert read_reply(sock) == b""
        holder.rollback()
    # PostgreSQL finishes the dead client's statement or transaction on its own, one way or the other.
    wait_until(lambda: not backend_alive(stack, orphan[0]), 20, "the killed worker's database session to end")
    before = stored(stack, trial["id"])
    assert answered(stack, participant.token) == trial["position"] + before

    retry = participant.api("POST", "responses", body)
    # Whatever became of the first attempt, the retry says so truthfully and nothing is stored twice.
    assert retry.status == (200 if before else 201), (before, retry)
    assert stored(stack, trial["id"]) == 1 and answered(stack, participant.token) == trial["position"] + 1


def test_a_web_worker_killed_after_the_commit_before_its_reply_gives_the_stored_answer_back(
        stack, study, web, database_proxy):
    participant = started_participant(web, "faults-killed-after-commit")
    trial = participant.next_trial()
    body = answer(trial, choice="b")
    # The worker's statements one at a time: after each, while PostgreSQL's reply is held back, look
    # whether the answer is committed; the first time it is, the worker has not heard so yet.
    database_proxy.hold_replies()
    try:
        sock = open_request(web.port, "POST", *participant.api_request("POST", "responses", body))
        for _ in range(50):
            database_proxy.wait_for_held_reply(20)
            if stored(stack, trial["id"]):
                break
            database_proxy.release_reply()
        else:
            raise AssertionError("the answer was not stored within 50 statements")
        kill_worker(stack, web, serving_worker(stack, web, sock))
    finally:
        database_proxy.stop_holding()
    assert read_reply(sock) == b""  # the participant never heard that the answer was stored

    retry = participant.api("POST", "responses", body)
    assert retry.status == 200, retry  # the stored answer, not a second one
    assert retry.json["stored"] is True and retry.json["phase"] == "practice"
    assert stored(stack, trial["id"]) == 1 and answered(stack, participant.token) == trial["position"] + 1
    assert stack.sql("SELECT choice FROM studyapp_response WHERE trial_id = %s", (trial["id"],)) == [("b",)]


# ------------------------------------------------------------------------------------------ PostgreSQL
def assert_unavailable(reply):
    # "At once" is the participant client's deadline (its socket timeout): a request that hung would
    # never get here. How fast the 503 comes is a figure for bench/, not an assertion on a loaded machine.
    assert reply.status == 503, reply
    assert reply.json["error"] == "unavailable"
    assert int(reply.headers["Retry-After"]) > 0


def test_postgres_going_away_answers_503_at_once_and_the_app_recovers_without_a_restart(
        stack, study, web, database_proxy):
    participant = started_participant(web, "faults-postgres-restart")
    trial = participant.next_trial()
    body = answer(trial)
    try:
        postgres_outage(stack, participant, body, database_proxy)
    finally:
        database_proxy.restore()  # and the web app is not restarted
    retry = participant.api("POST", "responses", body)
    assert retry.status in (200, 201), retry  # 200: the dropped attempt committed before its session ended
    assert stored(stack, trial["id"]) == 1 and answered(stack, participant.token) == trial["position"] + 1
    assert participant.api("GET", "session").json["progress"]["answered"] == trial["position"] + 1
    following = participant.next_trial()
    assert participant.api("POST", "responses", answer(following)).status == 201


def postgres_outage(stack, participant, body, database_proxy):
    """The answer `body` in flight when PostgreSQL goes away, then requests while it is away."""
    in_flight = {}
    with psycopg.connect(stack.database_url) as holder:
        holder.execute("SELECT id FROM studyapp_participant WHERE token = %s FOR UPDATE", (participant.token,))
        thread = threading.Thread(target=lambda: in_flight.update(reply=participant.api("POST", "responses", body)))
        thread.start()
        [orphan] = wait_until(lambda: lock_waiters(stack), 20, "the answer to be in flight")
        database_proxy.cut()  # PostgreSQL restarting: every connection dropped, new ones refused
        # Joined while the holder still holds its lock: a reply now can only be the outage's answer, not
        # the insert going through once the lock is released.
        thread.join(30)
        assert not thread.is_alive() and "reply" in in_flight, "the answer in flight got no reply"
        assert_unavailable(in_flight["reply"])
        holder.rollback()
    wait_until(lambda: not backend_alive(stack, orphan[0]), 20, "the dropped session to end")

    # While it is down, every participant request fails the same clean way, at once.
    assert_unavailable(participant.api("GET", "session"))
    assert_unavailable(participant.api("POST", "responses", body))
    page = participant.request("GET", participant.experiment_path)
    assert page.status == 503 and page.headers["Retry-After"] and b"One moment" in page.body
    # A server that cannot be reached at all (connections neither refused nor answered) costs no more
    # than the connect timeout.
    database_proxy.hang()
    assert_unavailable(participant.api("GET", "session"))


def test_a_quick_postgres_restart_is_noticed_by_the_health_check_not_by_a_participant(
        stack, study, web, database_proxy):
    participant = started_participant(web, "faults-postgres-blip")
    # The worker keeps its connection between requests (CONN_MAX_AGE).
    wait_until(lambda: database_proxy.active, 10, "the worker to keep its database connection")
    opened = database_proxy.opened
    database_proxy.drop()  # a restart between two requests: the kept connection is dead, new ones work
    wait_until(lambda: not database_proxy.active, 10, "the proxy to drop the connection")

    trial = participant.next_trial()
    reply = participant.api("POST", "responses", answer(trial))
    assert reply.status == 201, reply
    assert database_proxy.opened == opened + 1  # the worker replaced its connection before using it


# ------------------------------------------------------------------------------------------ Redis
@pytest.fixture
def redis_web(stack):
    """gunicorn whose cache (rate limits) and Celery broker are a Redis of its own."""
    redis_url = stack.start_redis("redis-faults")
    web = SimpleNamespace(name="web-redis", port=free_port(), redis_url=redis_url)
    web.url = f"http://127.0.0.1:{web.port}"
    web.workers = 2
    stack.start_web(name=web.name, port=web.port, workers=web.workers, CACHE_URL=f"{redis_url}/0",
                    CELERY_BROKER_URL=f"{redis_url}/1")
    yield web
    stack.stop_process(web.name)
    if "redis-faults" in stack.processes:
        stack.kill_process("redis-faults")  # no persistence to lose, and a stopped server ignores SIGTERM


def correct_choice(stack, trial):
    return stack.sql("SELECT correct_query FROM studyapp_trial WHERE id = %s", (trial["id"],))[0][0]


def walk_through(stack, participant):
    """Every trial answered (correctly, so practice is not repeated), then the questionnaire."""
    while (trial := participant.next_trial()) is not None:
        reply = participant.api("POST", "responses", answer(trial, correct_choice(stack, trial)))
        assert reply.status == 201, reply
    done = participant.api("POST", "questionnaire", {"answers": {"strategy": "shapes"}})
    assert done.status == 200 and done.json["phase"] == "done", done


def admin_client(stack, url):
    admin = Participant(url)  # the same cookie-keeping client serves the researcher's browser
    page = admin.request("GET", "/admin/login/")
    csrf = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.body).group(1).decode()
    login = admin.request("POST", "/admin/login/?next=/admin/", urlencode({
        "csrfmiddlewaretoken": csrf, "username": "admin", "password": stack.admin_password,
        "next": "/admin/"}).encode(), {"Content-Type": "application/x-www-form-urlencoded", "Referer": url})
    assert login.status == 302 and login.headers["Location"] == "/admin/", login
    return admin


def add_job(stack, admin, seed):
    """Submit the admin's form for a new stimulus job (a small one, told apart by its seed)."""
    network, image_set = stack.sql("SELECT n.id, i.id FROM studyapp_network n, studyapp_imageset i "
                                   "WHERE n.name = 'demo' AND i.name = 'digits'")[0]
    path = "/admin/studyapp/stimulusjob/add/"
    csrf = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', admin.request("GET", path).body).group(1)
    return admin.request("POST", path, urlencode({
        "csrfmiddlewaretoken": csrf.decode(), "network": network, "image_set": image_set, "layer": "conv1",
        "bases": "neuron", "n_units": 2, "seed": seed, "parameters": "{}"}).encode(),
        {"Content-Type": "application/x-www-form-urlencoded", "Referer": admin.origin})


def test_participants_do_not_notice_redis_going_down(stack, study, redis_web):
    import redis

    started = time.monotonic()
    first = started_participant(redis_web, "faults-redis-1")
    # The limits are counted in this Redis, so what follows takes away something the requests use.
    assert redis.Redis.from_url(f"{redis_web.redis_url}/0").keys("*ratelimit*")

    # Hung: the server takes connections and never answers.
    os.kill(stack.processes["redis-faults"].pid, signal.SIGSTOP)
    trial = first.next_trial()
    assert first.api("POST", "responses", answer(trial, correct_choice(stack, trial))).status == 201
    # Gone: connections refused.
    stack.kill_process("redis-faults")
    walk_through(stack, first)
    second = started_participant(redis_web, "faults-redis-2")
    walk_through(stack, second)

    for participant in (first, second):
        assert stack.sql("SELECT status, answered = trial_count FROM studyapp_participant WHERE token = %s",
                         (participant.token,)) == [("completed", True)]
    assert "participant requests are not rate limited" in stack.log(redis_web.name)
    # A cache timeout at most once per worker and retry window, not once per request: each timeout logs
    # one warning, and after it the worker leaves the cache alone for CACHE_RETRY_SECONDS. Counted, not
    # timed, so a slow machine cannot fail it (it only widens the bound).
    timeouts = stack.log(redis_web.name).count("the cache cannot be reached")
    windows = 1 + math.ceil((time.monotonic() - started) / ratelimit.CACHE_RETRY_SECONDS)
    requests = sum(len(p.replies) for p in (first, second))
    assert 1 <= timeouts <= min(redis_web.workers * windows, requests - 1), (timeouts, windows, requests)


def test_with_redis_down_the_admin_signs_in_and_launching_a_job_says_the_queue_is_unreachable(
        stack, redis_web, jobs_forgotten):
    stack.kill_process("redis-faults")
    admin = admin_client(stack, redis_web.url)  # the sign-in lockout counts in the database, not in Redis
    reply = add_job(stack, admin, seed=11)
    assert reply.status == 503, reply  # within the admin client's deadline (its socket timeout)
    assert b"The task queue could not be reached" in reply.body
    # The job is saved, and says it did not start rather than waiting in a queue it never reached.
    [(status, error)] = stack.sql("SELECT status, error FROM studyapp_stimulusjob WHERE layer = 'conv1' AND seed = 11")
    assert status == "failed" and "task queue could not be reached" in error


def test_a_job_added_in_the_admin_reaches_the_worker_only_once_its_row_is_committed(stack, jobs_forgotten):
    admin = admin_client(stack, stack.base_url)  # the stack's web, broker and GPU worker

    def received():
        return len(re.findall(r"Task studyapp\.tasks\.generate_stimuli\[[-0-9a-f]+\] received", stack.log("worker")))

    before = received()
    added = {}
    with psycopg.connect(stack.database_url) as holder:
        # The admin saves the job, then writes its history entry, in one transaction: with the history
        # table locked here, that transaction stays open after the job's INSERT as long as we like.
        holder.execute("LOCK TABLE django_admin_log IN SHARE MODE")
        thread = threading.Thread(target=lambda: added.update(reply=add_job(stack, admin, seed=12)))
        thread.start()
        wait_until(lambda: lock_waiters(stack), 20, "the admin's transaction to wait on the history table")
        # A task sent now reaches the idle worker at once, and the worker finds no job with its id. The
        # worker logs each task it takes; give it the time it needs to take one.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and received() == before:
            time.sleep(0.1)
        assert received() == before, "the task was sent before the job was committed"
    thread.join(30)
    assert added["reply"].status == 302, added["reply"]
    [(job_id,)] = stack.sql("SELECT id FROM studyapp_stimulusjob WHERE layer = 'conv1' AND seed = 12")

    def finished():
        # Stopped as soon as it is queued or running: only the hand-over is under test.
        stack.sql("UPDATE studyapp_stimulusjob SET status = 'cancel_requested' WHERE id = %s "
                  "AND status IN ('queued', 'running')", (job_id,))
        return job_state(stack, job_id)[0] in ("cancelled", "succeeded")

    wait_until(finished, 120, "the worker to take the job up")
    assert received() == before + 1
