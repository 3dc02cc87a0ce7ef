"""docker-compose.yml against the Compose Specification's schema (as vendored by check-jsonschema), and
what the schema cannot know: the services we deploy, the GPU worker's queue and device, the health
checks the start order depends on, and that every variable handed to the app is one the settings read."""
import ast
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SETTINGS_DIR = ROOT / "studyapp" / "settings"
# Read by Django and Celery themselves, or by torch and the Hugging Face hub (their model caches), not by
# our settings modules.
FRAMEWORK_VARIABLES = {"DJANGO_SETTINGS_MODULE", "TORCH_HOME", "HF_HOME"}
SERVICES = {"web", "worker-gpu", "worker", "redis", "postgres"}


def check_schema(path):
    """check-jsonschema's verdict on a compose file: (passed, [(path, message), …])."""
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", "--output-format",
         "json", str(path)], capture_output=True, text=True, timeout=60)
    report = json.loads(result.stdout)
    assert not report.get("parse_errors"), report
    errors = [(e["path"], e["message"]) for e in report["errors"]]
    assert (result.returncode == 0) == (report["status"] == "ok") == (not errors), result
    return result.returncode == 0, errors


def load(text):
    return YAML(typ="safe", pure=True).load(text)


@pytest.fixture(scope="module")
def compose():
    return load(COMPOSE_FILE.read_text())


def settings_variables():
    """The variables our settings modules read, and those read with no default (required), found by
    reading the code, so a branch that does not run here (SQLite vs PostgreSQL) still counts."""
    read, required = set(), set()
    for module in SETTINGS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text(), filename=str(module))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            by_env = (isinstance(func, ast.Name) and func.id == "env") or \
                (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "env")
            name = node.args[0]
            if by_env and isinstance(name, ast.Constant) and isinstance(name.value, str):
                read.add(name.value)
                if len(node.args) == 1 and not any(k.arg == "default" for k in node.keywords):
                    required.add(name.value)
    return read, required


def app_services(compose):
    """The services that run our image (the web app and the workers)."""
    return {name: service for name, service in compose["services"].items() if "build" in service}


def environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def dotenv_names(path):
    return {line.split("=", 1)[0].strip() for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#") and "=" in line}


def interpolated(text):
    """Variables compose itself substitutes (${NAME}, ${NAME:?…}, $NAME) rather than passing on."""
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)) | set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", text))


def unknown_variables(compose, compose_text):
    """(service, variable) for each variable the compose file hands the app that no settings module reads."""
    read, _ = settings_variables()
    known = read | FRAMEWORK_VARIABLES
    unknown = []
    for name, service in sorted(app_services(compose).items()):
        unknown += [(name, var) for var in sorted(environment(service)) if var not in known]
        for env_file in _env_files(service):
            # .env is the operator's copy of .env.example; its entries reach the app, except those that
            # exist for compose's own interpolation (the database password).
            example = ROOT / f"{env_file}.example"
            if example.exists():
                unknown += [(name, var) for var in sorted(dotenv_names(example))
                            if var not in known and var not in interpolated(compose_text)]
    return unknown


def _env_files(service):
    files = service.get("env_file") or []
    files = [files] if isinstance(files, str) else files
    return [f if isinstance(f, str) else f["path"] for f in files]


def queues(command):
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    for i, arg in enumerate(argv):
        if arg in ("--queues", "-Q") and i + 1 < len(argv):
            return set(argv[i + 1].split(","))
        if arg.startswith("--queues="):
            return set(arg.split("=", 1)[1].split(","))
    return {"celery"}  # Celery's own default when no queue is named


# ------------------------------------------------------------------------------------------ the schema
def test_the_compose_file_is_valid_under_the_compose_specification():
    passed, errors = check_schema(COMPOSE_FILE)
    assert passed, errors


@pytest.mark.parametrize("mutation, where", [
    # A misspelt key inside a service.
    (lambda text: text.replace("    healthcheck:\n      test: [\"CMD\", \"redis-cli\"",
                               "    healthchek:\n      test: [\"CMD\", \"redis-cli\""), "$.services.redis"),
    # A wrong type, in the shared x-app block: caught in each service only if the merge keys are followed.
    (lambda text: text.replace("  depends_on:\n    postgres:\n      condition: service_healthy\n",
                               "  depends_on:\n    postgres:\n      condition: 7\n", 1), "$.services.worker"),
    # A health check's command that is neither a string nor a list.
    (lambda text: text.replace('test: ["CMD-SHELL", "pg_isready -U studyapp -d studyapp"]', "test: 42"),
     "$.services.postgres.healthcheck"),
], ids=["misspelt-key", "wrong-type-through-merge", "wrong-type"])
def test_the_schema_check_rejects_a_broken_compose_file(tmp_path, mutation, where):
    text = COMPOSE_FILE.read_text()
    broken = mutation(text)
    assert broken != text, "the mutation no longer applies to docker-compose.yml; update it"
    path = tmp_path / "docker-compose.yml"
    path.write_text(broken)
    passed, errors = check_schema(path)
    assert not passed
    assert any(p == where or p.startswith(where + ".") or p.startswith(where + "[") for p, _ in errors), errors


# ------------------------------------------------------------------------------------------ beyond the schema
def test_the_deployment_has_its_services(compose):
    assert set(compose["services"]) >= SERVICES
    assert set(app_services(compose)) == {"web", "worker-gpu", "worker"}


def test_the_gpu_worker_takes_the_gpu_queue_and_reserves_an_nvidia_gpu(compose):
    from django.conf import settings

    worker_gpu = compose["services"]["worker-gpu"]
    assert "gpu" in queues(worker_gpu["command"])
    devices = worker_gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), devices
    # Every queue a task is routed to, and the default queue, has a worker listening.
    workers = [s for s in app_services(compose).values() if "celery" in str(s["command"])]
    listened = set().union(*(queues(s["command"]) for s in workers))
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()} | {settings.CELERY_TASK_DEFAULT_QUEUE}
    assert routed <= listened, routed - listened
    # Only the GPU worker takes GPU work: a job landing on the CPU worker would run for hours.
    assert "gpu" not in queues(compose["services"]["worker"]["command"])


def test_the_model_cache_is_one_named_volume_every_worker_mounts(compose):
    declared = set(compose.get("volumes") or {})
    for name in ("worker-gpu", "worker"):
        service = compose["services"][name]
        env = environment(service)
        mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in service["volumes"]}
        for variable in ("TORCH_HOME", "HF_HOME", "STIMULI_CACHE_DIR"):
            mount = next((m for m in mounts if env[variable].startswith(m + "/")), None)
            assert mount is not None and mounts[mount] in declared, (name, variable, env[variable])
    gpu_mounts = [str(v) for v in compose["services"]["worker-gpu"]["volumes"]]
    assert any(v.endswith(":/datasets:ro") for v in gpu_mounts), gpu_mounts


def test_every_variable_passed_to_the_app_is_one_the_settings_read(compose):
    assert unknown_variables(compose, COMPOSE_FILE.read_text()) == []
    settings_module = environment(compose["services"]["web"])["DJANGO_SETTINGS_MODULE"]
    assert (ROOT / (settings_module.replace(".", "/") + ".py")).is_file(), settings_module


def test_a_misspelt_variable_is_caught(compose):
    text = COMPOSE_FILE.read_text().replace("    CACHE_URL:", "    CACHE_ULR:")
    assert unknown_variables(load(text), text) == [("web", "CACHE_ULR"), ("worker", "CACHE_ULR"),
                                                   ("worker-gpu", "CACHE_ULR")]


def test_the_settings_production_requires_are_provided(compose):
    _, required = settings_variables()
    assert {"DJANGO_SECRET_KEY", "PARTICIPANT_ID_KEY"} <= required  # the variable scan still sees them
    for name, service in app_services(compose).items():
        provided = set(environment(service))
        for env_file in _env_files(service):
            provided |= dotenv_names(ROOT / f"{env_file}.example")
        assert required <= provided, (name, required - provided)


def test_health_checks_gate_the_start_order(compose):
    services = compose["services"]
    for name in ("web", "redis", "postgres"):
        check = services[name].get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), name
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        for target, condition in (depends.items() if isinstance(depends, dict) else ()):
            if condition.get("condition") == "service_healthy":
                assert services[target].get("healthcheck", {}).get("test"), (name, target)


def test_every_service_comes_back_after_a_crash(compose):
    for name in SERVICES:
        assert compose["services"][name].get("restart") in ("always", "unless-stopped", "on-failure"), name
