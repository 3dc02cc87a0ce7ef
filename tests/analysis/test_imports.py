"""analysis/ reads only the export: it imports nothing from stimuli/ or studyapp/, and its modules
import each other without a loop (imports inside functions count too)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "analysis"


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y / from . import x
                if node.module:
                    out.add("analysis." + node.module.split(".")[0])
                else:
                    out.update("analysis." + a.name for a in node.names)
            elif node.module:
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    return {f"analysis.{p.stem}": _imports(p) for p in PACKAGE.glob("*.py")}


def test_analysis_imports_nothing_from_stimuli_or_studyapp():
    for module, imports in _graph().items():
        upward = {i for i in imports if i.split(".")[0] in ("stimuli", "studyapp", "django")}
        assert not upward, f"{module} imports {sorted(upward)}"


def test_analysis_modules_have_no_import_loop():
    graph = _graph()
    internal = {m: {i for i in imps if i in graph and i not in (m, "analysis.__init__")}
                for m, imps in graph.items() if m not in ("analysis.__init__", "analysis.__main__")}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for n in internal.get(m, ()):
            assert state.get(n) != 1, "import loop: " + " -> ".join(path + [n])
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in internal:
        if m not in state:
            visit(m, [m])
