"""Analysis of crowdsourced 2AFC responses: load, exclusions, descriptives, mixed models
(lme4's algorithms: LMM by profiled (RE)ML, binomial GLMM by PIRLS + Laplace), Kruskal–Wallis
with Conover–Iman post hoc tests, the machine observer (MIS) against people, simulated power, plots,
report.

No Django import: the library reads only the response export file.
"""

from .formula import parse_formula
from .glmm import BinomialGLMM
from .lmm import LinearMixedModel, lrt
from .machine import MachineObserver
from .nonparametric import conover_iman, friedman_wilcoxon, holm, kruskal_conover

__all__ = ["BinomialGLMM", "LinearMixedModel", "MachineObserver", "conover_iman", "holm",
           "friedman_wilcoxon", "kruskal_conover", "lrt", "parse_formula"]
