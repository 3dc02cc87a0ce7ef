"""Analysis of crowdsourced 2AFC responses: load, exclusions, descriptives, mixed models
(lme4's algorithms: LMM by profiled (RE)ML, binomial GLMM by PIRLS + Laplace), plots, report.

No Django import: the library reads only the response export file.
"""

from .formula import parse_formula
from .glmm import BinomialGLMM
from .lmm import LinearMixedModel, lrt

__all__ = ["BinomialGLMM", "LinearMixedModel", "lrt", "parse_formula"]
