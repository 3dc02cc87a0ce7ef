"""A web process loads neither torch nor the mixed-model stack: the participant's answer path and the
admin run in gunicorn workers whose memory and start-up time every request shares. The stimulus and
analysis libraries are imported by the code that needs them (a job's validation, a worker)."""
import os
import subprocess
import sys

HEAVY = ("torch", "torchvision", "sklearn", "scipy", "statsmodels", "stimuli.config", "analysis.glmm")


def test_the_web_app_starts_without_the_heavy_libraries():
    script = ("import sys, django; django.setup(); "
              "import studyapp.urls, studyapp.admin, studyapp.api, studyapp.views, studyapp.wsgi; "
              f"print([name for name in {HEAVY!r} if name in sys.modules])")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "DJANGO_SETTINGS_MODULE": "studyapp.settings.test"})
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
