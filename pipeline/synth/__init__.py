"""Synthetic micro-expressions in the real on-disk layouts (``fr-mer synth``, ``fr-mer demo``).

- :mod:`fr_mer.pipeline.synth.faces`: subjects derived from face photos.
- :mod:`fr_mer.pipeline.synth.motion`: action units as displacement fields on the landmarks.
- :mod:`fr_mer.pipeline.synth.config`: the generator's settings (recorded in the manifest),
  each clip's parameters and the synthetic defaults.
- :mod:`fr_mer.pipeline.synth.planning`: a database's subjects and clip parameters, drawn.
- :mod:`fr_mer.pipeline.synth.rendering`: a clip's frames, with its nuisances.
- :mod:`fr_mer.pipeline.synth.writing`: CASME II, SAMM or SMIC-HS written to disk (and a
  composite list and the manifest).

``docs/synthetic-data.md`` describes the model.
"""
from fr_mer.pipeline.synth.config import (
    COMPOSITE_LIST_NAME,
    FPS,
    LAYOUTS,
    MANIFEST_NAME,
    ClipParams,
    Nuisances,
    SynthSettings,
)
from fr_mer.pipeline.synth.motion import ACTION_UNITS, CLASS_UNITS, MAX_AMPLITUDE_128, Expression
from fr_mer.pipeline.synth.planning import draw_clip, plan_database
from fr_mer.pipeline.synth.rendering import ClipRenderer, apex_displacement, au_region_mask
from fr_mer.pipeline.synth.writing import (
    SynthDatabase,
    SynthSummary,
    generate,
    generate_composite,
    read_settings,
    write_synth,
)

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
    "SynthSettings",
    "SynthSummary",
    "apex_displacement",
    "au_region_mask",
    "draw_clip",
    "generate",
    "generate_composite",
    "plan_database",
    "read_settings",
    "write_synth",
]
