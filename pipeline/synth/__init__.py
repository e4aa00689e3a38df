"""Synthetic micro-expressions in the real on-disk layouts (``fr-mer synth``, ``fr-mer demo``).

- :mod:`fr_mer.pipeline.synth.faces`: subjects derived from face photos.
- :mod:`fr_mer.pipeline.synth.motion`: action units as displacement fields on the landmarks.
- :mod:`fr_mer.pipeline.synth.generator`: clips with nuisances, written as CASME II, SAMM or
  SMIC-HS (and a composite list).

``docs/synthetic-data.md`` describes the model.
"""
from fr_mer.pipeline.synth.generator import (
    COMPOSITE_LIST_NAME,
    FPS,
    LAYOUTS,
    MANIFEST_NAME,
    ClipParams,
    ClipRenderer,
    Nuisances,
    SynthDatabase,
    SynthSummary,
    apex_displacement,
    au_region_mask,
    generate,
    generate_composite,
    plan_database,
)
from fr_mer.pipeline.synth.motion import ACTION_UNITS, CLASS_UNITS, MAX_AMPLITUDE_128, Expression

__all__ = [
    "ACTION_UNITS",
    "CLASS_UNITS",
    "COMPOSITE_LIST_NAME",
    "FPS",
    "LAYOUTS",
    "MANIFEST_NAME",
    "MAX_AMPLITUDE_128",
    "ClipParams",
    "ClipRenderer",
    "Expression",
    "Nuisances",
    "SynthDatabase",
    "SynthSummary",
    "apex_displacement",
    "au_region_mask",
    "generate",
    "generate_composite",
    "plan_database",
]
