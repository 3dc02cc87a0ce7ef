"""Bases of a layer's activation space, with scikit-learn's estimator shape: one module per basis over
:class:`Basis` (``base.py``, with the block moments the bases and the measures share).

Adding a basis: a module with a :class:`Basis` subclass (its ``name``, :class:`BasisTags` and the
methods the defaults do not cover), and one ``register`` line below.
"""

from .archetypal import ARCHETYPAL_DEFAULTS, ArchetypalBasis
from .base import (
    Basis,
    BasisTags,
    as_float64,
    block_rows,
    centred_blocks,
    centred_products,
    checked_activations,
    column_mean,
    column_variance,
    row_blocks,
    unit_shares,
)
from .batchtopk import BATCHTOPK_DEFAULTS, BatchTopKBasis
from .dictionary import DICTIONARY_DEFAULTS, DictionaryBasis
from .jumprelu import JUMPRELU_DEFAULTS, JumpReLUBasis
from .neuron import NeuronBasis
from .nmf import NMF_DEFAULTS, NMFBasis
from .pca import PCABasis
from .registry import BASIS_CLASSES, basis_class, basis_from_settings, basis_names, make_basis, register, unregister
from .sae import SAE_DEFAULTS, SAEBasis

register(NeuronBasis)
register(PCABasis)
register(NMFBasis)
register(DictionaryBasis)
register(SAEBasis)
register(BatchTopKBasis)
register(JumpReLUBasis)
register(ArchetypalBasis)

__all__ = [
    "ARCHETYPAL_DEFAULTS", "ArchetypalBasis", "BATCHTOPK_DEFAULTS", "BatchTopKBasis", "JUMPRELU_DEFAULTS",
    "JumpReLUBasis",
    "BASIS_CLASSES", "Basis", "BasisTags", "DICTIONARY_DEFAULTS", "DictionaryBasis", "NMF_DEFAULTS", "NMFBasis",
    "NeuronBasis", "PCABasis", "SAE_DEFAULTS", "SAEBasis", "as_float64", "basis_class", "basis_from_settings",
    "basis_names", "block_rows", "centred_blocks", "centred_products", "checked_activations", "column_mean",
    "column_variance", "make_basis", "register", "row_blocks", "unit_shares", "unregister",
]
