"""Production settings behind the proxy: `manage.py check --deploy` is clean with the variables
.env.example documents (their secrets replaced by real ones), and the participant's resume cookie, HSTS
and the HTTPS redirect are on there."""
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def documented_environment(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "SECURE_"))}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    env.update(DJANGO_SETTINGS_MODULE="studyapp.settings.production", DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
               PARTICIPANT_ID_KEY=secrets.token_urlsafe(50), STUDYAPP_VAR_DIR=str(tmp_path / "var"))
    return env


def test_check_deploy_is_clean_with_the_documented_production_variables(tmp_path):
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                            env=documented_environment(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_sends_participants_over_https_only(tmp_path):
    code = ("from django.conf import settings as s; print(s.RESUME_COOKIE_SECURE, s.SESSION_COOKIE_SECURE, "
            "s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS >= 31536000, s.SECURE_PROXY_SSL_HEADER[0])")
    result = subprocess.run([sys.executable, "-c", f"import django; django.setup(); {code}"], cwd=ROOT,
                            env=documented_environment(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["True", "True", "True", "True", "HTTP_X_FORWARDED_PROTO"], result.stderr


def test_the_resume_cookie_is_secure_where_configured(client, settings, db):
    from tests.studyapp.helpers import make_study

    study = make_study()
    settings.RESUME_COOKIE_SECURE = True
    response = client.post(f"/s/{study.slug}/start", {})
    cookie = response.cookies[f"studyapp_resume_{study.pk}"]
    assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Lax"


def test_participant_pages_carry_the_content_security_policy(client, db):
    from tests.studyapp.helpers import make_study

    study = make_study()
    landing = client.get(f"/s/{study.slug}/")
    assert "script-src 'self'" in landing["Content-Security-Policy"]
    experiment = client.get(client.post(f"/s/{study.slug}/start", {})["Location"])
    policy = experiment["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "'unsafe-inline'" not in policy.split("style-src-attr")[0]
    assert "Content-Security-Policy" not in client.get("/admin/login/")
