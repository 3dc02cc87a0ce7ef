"""README command 1 on the embedded default: SQLite, no broker (the Celery task runs in process)."""
import json
import os
import re
import subprocess
import sys

import pytest

from .stack import ROOT

pytestmark = pytest.mark.slow


def manage(env, *args):
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def embedded_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "MEDIA_ROOT",
                                                             "ARTIFACT_ROOT")}
    env.update(DJANGO_SETTINGS_MODULE="studyapp.settings.local", STUDYAPP_VAR_DIR=str(tmp_path / "var"),
               STIMULI_CACHE_DIR=str(ROOT / "var" / "cache"))
    return env


def test_demo_sets_up_a_live_study_without_any_service(embedded_env, tmp_path):
    manage(embedded_env, "migrate", "--noinput")
    out = manage(embedded_env, "demo")
    assert "Demo study 'demo' is live with 3 conditions over 18 units." in out
    assert re.search(r"Participant link:\s+http://127\.0\.0\.1:8000/s/demo/\?PROLIFIC_PID=", out)
    password = re.search(r"user: admin\s+password: (\S+)", out).group(1)
    assert (tmp_path / "var" / "db.sqlite3").exists()
    manifests = list((tmp_path / "var" / "artifacts").glob("job-*/manifest.json"))
    assert len(manifests) == 1
    units = [u for entry in json.loads(manifests[0].read_text())["layers"] for u in entry["units"]]
    assert len(units) == 18 and all(0 <= u["measures"]["mis"] <= 1 for u in units)  # every unit has a machine score
    # heat maps for an `overlay` condition, one per maximal reference
    assert all(len(u["attribution_overlays_max"]) == len(u["references_max"]) == 9 for u in units)
    # disjoint ordered strips, so that an ordered-strip condition never shows a row twice
    assert all(len(u["strips"]) == 4 and len({img for strip in u["strips"] for img in strip}) == 4 * 9 for u in units)

    again = manage(embedded_env, "demo")
    assert "Generating stimuli" not in again and "over 18 units" in again
    assert re.search(r"password: (\S+)", again).group(1) != password

    export = tmp_path / "demo.csv"
    assert "wrote 0 responses" in manage(embedded_env, "export_responses", "demo", "--out", str(export))
    assert export.read_text().startswith("study,study_version,participant,condition,basis,layer")
