"""How a flow model reads the cache's ``flow`` column: its input normalisation and its mirroring.

A cache's flow is stored one of two ways (``fr-mer preprocess --normalisation``,
:data:`fr_mer.pipeline.flow.NORMALISATIONS`), recorded in its params:

- ``none`` (the default): raw values, u and v in pixels of the flow-size crop,
  strain in pixel/pixel. Zero is no motion; the magnitudes are kept.
- ``minmax255``: each channel of each sample min-max scaled to 0..255 (STSTNet's
  released inputs, and ``fr-mer import-ststnet``).

Every model that reads ``flow`` derives from :class:`FlowInputModel` and has the
option ``normalise``. Its default, ``"auto"``, follows the cache the model is
trained on (:meth:`FlowInputModel.fit_inputs`, called by the training functions
with the training rows only):

- on a minmax255 cache, the model's own 0..255 mapping, exactly as before raw
  caches existed (``"range"``: 0..255 to -1..1 for the inception models and
  OFF-ApexNet; ``"identity"``: the values as they are for STSTNet and HTNet, as
  their public code feeds them);
- on a raw cache, ``"scale"``: each channel divided by its root mean square over
  the training rows and pixels (:func:`fitted_flow_scale`), a registered buffer
  (``input_scale``) that is saved in checkpoints and stacked with the folds.

The resolved mode replaces ``"auto"`` in the model's recorded options, so a
checkpoint is rebuilt with it (and, for ``"scale"``, with its buffer). A model
left at ``"auto"`` and never fitted (a checkpoint written before raw caches) reads
0..255 images, as it was trained to. An explicit 0..255 mode on a raw cache, or
``"scale"`` on a minmax255 one, is refused (:meth:`FlowInputModel.check_inputs`).
"""
from __future__ import annotations

from typing import ClassVar, Sequence

import torch

from fr_mer.errors import ParameterError
from fr_mer.models.base import MERModel

#: The cache's flow normalisations (:data:`fr_mer.pipeline.flow.NORMALISATIONS`' names) a flow model reads.
MINMAX255, RAW = "minmax255", "none"

#: The mode ``"auto"`` resolves to on a raw cache: a per-channel scale fitted on the training rows.
SCALE = "scale"


def scale_flow_image(x: torch.Tensor) -> torch.Tensor:
    """Map cached flow images from 0..255 to -1..1 (``normalise="range"``, minmax255 caches).

    A minmax255 cache stores each channel min-max scaled to 0..255 per sample (as
    STSTNet's released inputs are), so 127.5 is the middle of the range rather
    than zero motion; centring still keeps the first layers' inputs near zero mean.
    """
    return x * (1.0 / 127.5) - 1.0


def centre_flow_image(x: torch.Tensor) -> torch.Tensor:
    """Subtract each image's median, then divide by 127.5 (``normalise="median"``, minmax255 caches).

    x: (B, C, H, W), 0..255 per sample and channel. Per-sample min-max scaling
    puts zero motion at a different grey level in every sample; most of a face
    does not move, so the median is that level (plus any rigid shift of the
    head, which this also removes), and after subtracting it 0 means "moves
    like most of the face" in every sample.
    """
    median = x.flatten(2).median(dim=2).values[..., None, None]
    return (x - median) * (1.0 / 127.5)


def fitted_flow_scale(flow: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Per-channel root mean square of ``flow[rows]`` over the rows and pixels: (C,) float32.

    flow: (N, C, H, W) raw flow (u, v in pixels, strain in px/px); rows: the
    training rows. Computed in float64; a channel that is 0 everywhere gets
    scale 1 (nothing to scale).
    """
    selected = flow.index_select(0, rows.to(flow.device)).to(torch.float64)
    rms = selected.square().mean(dim=(0, 2, 3)).sqrt()
    return torch.where(rms > 0, rms, torch.ones_like(rms)).to(torch.float32)


def flip_flow(flow: torch.Tensor, channels: Sequence[str], generator: torch.Generator,
              p: float = 0.5, *, raw: bool = False) -> torch.Tensor:
    """Mirror each sample left-right with probability ``p``: a face seen in a mirror.

    flow: (B, C, H, W) images of the named channels as cached. Mirroring negates
    the horizontal flow u. On raw flow (``raw``) that is ``-u``; on a minmax255
    image it is exactly ``255 - u`` (the scaled minimum and maximum swap). So u
    is inverted as well as mirrored; v and strain are only mirrored. Returns a
    new tensor.
    """
    flip = torch.rand(flow.shape[0], generator=generator, device=flow.device) < p
    mirrored = flow.flip(-1)
    if "u" in channels:
        u = list(channels).index("u")
        mirrored[:, u] = -mirrored[:, u] if raw else 255.0 - mirrored[:, u]
    return torch.where(flip[:, None, None, None], mirrored, flow)


class FlowInputModel(MERModel):
    """A model reading the ``flow`` column, with the ``normalise`` option described in the module docstring.

    Subclasses call :meth:`init_flow_input` in their constructor, pass the flow
    through :meth:`normalise_flow` first in ``forward``, and mirror with
    :meth:`mirror_flow`.
    """

    #: The 0..255 modes the model offers on minmax255 caches; ``"auto"`` resolves to the first.
    minmax_modes: ClassVar[tuple[str, ...]] = ("range",)
    normalise: str = "auto"

    @classmethod
    def normalise_choices(cls) -> tuple[str, ...]:
        return ("auto", *cls.minmax_modes, SCALE)

    def init_flow_input(self, normalise: str, n_channels: int) -> None:
        """Check the ``normalise`` option; a model built with ``"scale"`` (from a checkpoint) gets its buffer."""
        choices = self.normalise_choices()
        if normalise not in choices:
            raise ParameterError(f"{self.model_name} option normalise must be one of {', '.join(choices)}, "
                                 f"got {normalise!r}")
        self.normalise = normalise
        self._flow_channels = n_channels
        if normalise == SCALE:
            self.register_buffer("input_scale", torch.ones(n_channels))

    @property
    def flow_mode(self) -> str:
        """The mode ``forward`` applies: ``normalise``, with an unfitted ``"auto"`` read as 0..255 input."""
        return self.minmax_modes[0] if self.normalise == "auto" else self.normalise

    @classmethod
    def normalise_for(cls, normalise: str, flow_normalisation: str, source: str) -> str:
        """The mode option ``normalise`` takes on a cache whose flow is stored as ``flow_normalisation``;
        raises ParameterError (naming ``source``) if the option does not fit that cache."""
        if flow_normalisation == RAW:
            if normalise not in ("auto", SCALE):
                raise ParameterError(
                    f"{source}: the flow is stored raw (--normalisation none, u and v in pixels), but "
                    f"{cls.model_name} option normalise={normalise} assumes per-sample 0..255 images; "
                    "leave normalise at auto (a per-channel scale fitted on the training rows), or make the "
                    "cache with `fr-mer preprocess --normalisation minmax255`")
            return SCALE
        if flow_normalisation == MINMAX255:
            if normalise == SCALE:
                raise ParameterError(
                    f"{source}: the flow is stored min-max scaled to 0..255 (minmax255); {cls.model_name} "
                    f"option normalise=scale is for raw caches (--normalisation none); leave normalise at auto "
                    f"or choose one of {', '.join(cls.minmax_modes)}")
            return cls.minmax_modes[0] if normalise == "auto" else normalise
        raise ParameterError(f"{source}: unknown flow normalisation {flow_normalisation!r}; "
                             f"{cls.model_name} reads {MINMAX255} or {RAW} caches")

    def resolve_normalise(self, flow_normalisation: str, source: str) -> str:
        """The mode for a cache whose flow is stored as ``flow_normalisation``; raises ParameterError if unfit."""
        return self.normalise_for(self.normalise, flow_normalisation, source)

    @classmethod
    def check_options(cls, options, flow_normalisation: str, source: str) -> None:
        cls.normalise_for(options.get("normalise", "auto"), flow_normalisation, source)

    def check_inputs(self, flow_normalisation: str, source: str) -> None:
        self.resolve_normalise(flow_normalisation, source)

    def fit_inputs(self, data, train_index: torch.Tensor) -> None:
        """Resolve ``normalise`` for ``data``'s cache; on a raw cache fit ``input_scale`` on rows ``train_index``."""
        source = str(data.cache.path) if data.cache is not None else "the training data"
        mode = self.resolve_normalise(data.flow_normalisation, source)
        if mode == SCALE:
            scale = fitted_flow_scale(data.inputs["flow"], torch.as_tensor(train_index))
            if hasattr(self, "input_scale"):
                self.input_scale.copy_(scale.to(self.input_scale.device))
            else:
                self.register_buffer("input_scale", scale)
        self.normalise = mode
        self._options = {**getattr(self, "_options", {}), "normalise": mode}

    def input_record(self) -> dict[str, object]:
        record: dict[str, object] = {"normalise": self.flow_mode}
        if self.flow_mode == SCALE:
            record["input_scale"] = [float(s) for s in self.input_scale.tolist()]
        return record

    def normalise_flow(self, flow: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) cached flow -> the network's input, by :attr:`flow_mode`."""
        mode = self.flow_mode
        if mode == SCALE:
            return flow / self.input_scale.view(-1, 1, 1)
        if mode == "range":
            return scale_flow_image(flow)
        if mode == "median":
            return centre_flow_image(flow)
        return flow

    def mirror_flow(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Left-right mirroring of ``batch["flow"]`` (:func:`flip_flow`), u negated as the cache stores it."""
        return {**batch, "flow": flip_flow(batch["flow"], self.inputs["flow"], generator,
                                           raw=self.flow_mode == SCALE)}
