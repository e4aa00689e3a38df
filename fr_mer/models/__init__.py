"""The models: ``create_model("fr", **options)``; one model per module, each registered by name.

The registry itself is :mod:`fr_mer.models._registry`; importing this package
imports every model module, which registers it.
"""
from __future__ import annotations

from fr_mer.models import dual_inception, fr, htnet, meranet, micro_attention  # noqa: F401
from fr_mer.models import off_apexnet, smastn, ststnet  # noqa: F401
from fr_mer.models._registry import create_model, list_models, model_class, model_option_names, register
from fr_mer.models._registry import validate_options
from fr_mer.models.base import MERModel, Recipe, count_parameters

__all__ = [
    "MERModel", "Recipe", "count_parameters", "create_model", "list_models",
    "model_class", "model_option_names", "register", "validate_options",
]
