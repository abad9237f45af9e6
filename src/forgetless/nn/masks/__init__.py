"""Binary masks shared by HAT, PackNet, Piggyback, the affine weight transformations, DGM and CCGN.

- :mod:`.binarize`: the straight-through binariser (``identity`` or ``sigmoid`` surrogate), the
  Gumbel-sigmoid gate built on it, real-valued mask initialisation.
- :mod:`.sigmoid`: HAT-style masks ``sigmoid(s e)``: annealing of ``s``, embedding-gradient compensation,
  clamping, cumulated masks, gradient blocking, the sparsity regularizer, HAT unit masking of a network.
- :mod:`.layers`: Linear/Conv2d with a per-task weight transformation ``k0 W + k1 + k2 M + k3 W o M``.

Task-specific batch norm and :func:`select_task` live in :mod:`forgetless.nn.taskwise`.
"""

from .binarize import (
    CCGN_TEMPERATURE,
    PIGGYBACK_INIT,
    PIGGYBACK_THRESHOLD,
    SURROGATES,
    Surrogate,
    binarize,
    gumbel_sigmoid_gate,
    init_scores,
    logistic_noise,
)
from .layers import (
    AFFINE_FULL,
    AFFINE_SIMPLE,
    PIGGYBACK,
    MaskedConv2d,
    MaskedLinear,
    MaskedWeight,
    TaskWeights,
    WeightTransform,
    freeze_tasks,
    mask_layers,
    mask_summary,
    masked_copy,
    masked_layers,
)
from .sigmoid import (
    HAT_CLAMP,
    HAT_COSH_CLAMP,
    HAT_LAMBDA,
    HAT_SMAX,
    SigmoidMask,
    UnitMasked,
    anneal,
    block_gradients_,
    clamp_embedding_,
    compensate_embedding_grad_,
    cumulative_max,
    nested_anneal,
    reuse_weight,
    set_scale,
    sparsity_regularizer,
    unit_gradient_factors,
    unit_weight_mask,
    wrap_units,
)

__all__ = [
    "AFFINE_FULL", "AFFINE_SIMPLE", "CCGN_TEMPERATURE", "HAT_CLAMP", "HAT_COSH_CLAMP", "HAT_LAMBDA", "HAT_SMAX",
    "PIGGYBACK", "PIGGYBACK_INIT", "PIGGYBACK_THRESHOLD", "SURROGATES", "MaskedConv2d", "MaskedLinear",
    "MaskedWeight", "SigmoidMask", "Surrogate", "TaskWeights", "UnitMasked", "WeightTransform", "anneal",
    "binarize", "block_gradients_", "clamp_embedding_", "compensate_embedding_grad_", "cumulative_max",
    "freeze_tasks", "gumbel_sigmoid_gate", "init_scores", "logistic_noise", "mask_layers", "mask_summary",
    "masked_copy", "masked_layers", "nested_anneal", "reuse_weight", "set_scale", "sparsity_regularizer",
    "unit_gradient_factors", "unit_weight_mask", "wrap_units",
]
