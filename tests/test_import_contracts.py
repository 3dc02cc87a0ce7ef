"""The import contracts of .importlinter, checked with import-linter (`lint-imports`): no import loop
inside studyapp, stimuli or analysis, and no upward import between them (stimuli at the bottom;
analysis imports neither stimuli nor studyapp; stimuli imports neither).

The same configuration is also run on small stand-in packages that repeat each loop the project once had
and each forbidden import, to show that the contracts catch them, also when the import hides inside a
function."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".importlinter"


def lint_imports(cwd):
    """Run import-linter's command line with the project's contracts on the packages found in `cwd`; its
    exit status and report."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
         str(CONFIG), "--no-cache", "--no-logo"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def test_the_three_packages_keep_their_import_contracts():
    status, report = lint_imports(ROOT)
    assert status == 0, report


# Stand-ins for the three packages: each module is a path → source. Every import that goes the wrong
# way sits inside a function, as the project's loops did.
CLEAN = {
    "stimuli/__init__.py": "",
    "stimuli/mis.py": "def delta():\n    return 1\n",
    "stimuli/pipeline.py": "from .mis import delta\n",
    "stimuli/bases/__init__.py": "from .base import Basis\n",
    "stimuli/bases/base.py": "class Basis:\n    pass\n",
    "stimuli/measures/__init__.py": "",
    "stimuli/measures/completeness.py": "from ..bases import Basis\nfrom ..settings.completeness import Settings\n",
    "stimuli/settings/__init__.py": "",
    "stimuli/settings/completeness.py": "class Settings:\n    def validate(self):\n        from ..bases import Basis\n",
    "analysis/__init__.py": "",
    "analysis/tables.py": "def format_table():\n    return ''\n",
    "analysis/report.py": "from .tables import format_table\n",
    "analysis/machine.py": "from .tables import format_table\n",
    "studyapp/__init__.py": "",
    "studyapp/trials.py": "",
    "studyapp/models.py": "from . import trials\n",
    "studyapp/participation.py": "from .models import trials\n",
    "studyapp/jobs.py": "import stimuli.pipeline\n",
    "studyapp/tasks.py": "from . import jobs\n",
    "studyapp/export.py": "def run():\n    import analysis.report\n",
}

BREAKS = {
    "models <-> participation": ({
        "studyapp/models.py": "class Condition:\n    def clean(self):\n        from .participation import units\n",
        "studyapp/participation.py": "from .models import Condition\n\ndef units():\n    pass\n",
    }, "No cycles are allowed in studyapp"),
    "jobs <-> tasks": ({
        "studyapp/jobs.py": "def enqueue(job):\n    from .tasks import generate_stimuli\n",
        "studyapp/tasks.py": "from . import jobs\n\ndef generate_stimuli():\n    pass\n",
    }, "No cycles are allowed in studyapp"),
    "analysis.machine <-> analysis.report": ({
        "analysis/machine.py": "def render():\n    from .report import format_table\n",
        "analysis/report.py": "from . import machine\n\ndef format_table():\n    pass\n",
    }, "No cycles are allowed in analysis"),
    "a loop of three modules": ({
        "stimuli/a.py": "from . import b\n",
        "stimuli/b.py": "from . import c\n",
        "stimuli/c.py": "def f():\n    from . import a\n",
    }, "No cycles are allowed in stimuli"),
    "a basis imports a measure": ({
        "stimuli/bases/base.py": "class Basis:\n    def codes(self):\n        from ..measures import completeness\n",
    }, "stimuli.bases is not allowed to import stimuli.measures"),
    "a configuration section imports a measure": ({
        "stimuli/settings/completeness.py": "class Settings:\n    def validate(self):\n"
                                            "        from ..measures import completeness\n",
    }, "stimuli.settings is not allowed to import stimuli.measures"),
    "a basis imports a configuration section": ({
        "stimuli/bases/base.py": "class Basis:\n    def params(self):\n        from ..settings import completeness\n",
    }, "stimuli.bases is not allowed to import stimuli.settings"),
    "a loop inside the measures": ({
        "stimuli/measures/essence.py": "from . import ablation\n",
        "stimuli/measures/ablation.py": "def f():\n    from . import essence\n",
    }, "No cycles are allowed in stimuli.measures"),
    "analysis imports stimuli": ({
        "analysis/machine.py": "def fit():\n    from stimuli.mis import delta\n",
    }, "analysis is not allowed to import stimuli"),
    "analysis imports studyapp": ({
        "analysis/report.py": "def load():\n    import studyapp.models\n",
    }, "analysis is not allowed to import studyapp"),
    "stimuli imports analysis": ({
        "stimuli/pipeline.py": "def measure():\n    import analysis.tables\n",
    }, "stimuli is not allowed to import analysis"),
    "stimuli imports studyapp": ({
        "stimuli/pipeline.py": "def progress():\n    from studyapp import models\n",
    }, "stimuli is not allowed to import studyapp"),
}


def write_packages(folder, modules):
    for path, source in modules.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(textwrap.dedent(source))


def test_the_stand_in_packages_keep_the_contracts(tmp_path):
    write_packages(tmp_path, CLEAN)
    status, report = lint_imports(tmp_path)
    assert status == 0, report
    assert "Analyzed 20 files" in report  # the stand-ins, not the project's own packages


@pytest.mark.parametrize("name", list(BREAKS))
def test_the_contracts_catch_a_loop_or_an_upward_import(tmp_path, name):
    change, message = BREAKS[name]
    write_packages(tmp_path, {**CLEAN, **change})
    status, report = lint_imports(tmp_path)
    assert status != 0 and message in report, report
