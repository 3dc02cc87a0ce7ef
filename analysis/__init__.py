"""Analysis of crowdsourced 2AFC responses: load, exclusions, descriptives, mixed models
(lme4's algorithms: LMM by profiled (RE)ML, binomial GLMM by PIRLS + Laplace), Kruskal–Wallis
with Conover–Iman post hoc tests, the machine observer (MIS) against people, simulated power, plots,
report.

No Django import: the library reads only the response export file.
"""

import importlib

# Where each public name lives. Loaded on first use (PEP 562), so that importing one light module of the
# package (``analysis.exclusions``, which the web app's exclusion rules share) does not pull in the
# mixed-model stack and its 1.8 s / 130 MB of imports.
_EXPORTS = {
    "parse_formula": "formula",
    "BinomialGLMM": "glmm",
    "LinearMixedModel": "lmm",
    "lrt": "lmm",
    "MachineObserver": "machine",
    "conover_iman": "nonparametric",
    "friedman_wilcoxon": "nonparametric",
    "holm": "nonparametric",
    "kruskal_conover": "nonparametric",
}

__all__ = ["BinomialGLMM", "LinearMixedModel", "MachineObserver", "conover_iman", "holm",
           "friedman_wilcoxon", "kruskal_conover", "lrt", "parse_formula"]


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *__all__])
