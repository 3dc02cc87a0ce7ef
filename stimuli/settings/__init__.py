"""The configuration sections of algorithms whose modules load torch or scikit-learn.

A section (:class:`stimuli.sections.Section`) lives in its algorithm's module when that module imports
without torch, scikit-learn or SciPy (:mod:`stimuli.selection`, :mod:`stimuli.exemplars`,
:mod:`stimuli.measures.mis`, …); otherwise here, one module per algorithm, and the algorithm's module
imports its section and option lists from here. So :mod:`stimuli.config`, which the web app's job form
imports, loads none of those libraries.
"""
