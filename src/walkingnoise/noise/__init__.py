"""Noise models, noise sites, placements, instrumentation of any ``nn.Module``, weight noise."""

from walkingnoise.noise.instrument import NoisyModel, instrument, instrument_like
from walkingnoise.noise.kinds import DEFAULT_KINDS, SITE_KINDS
from walkingnoise.noise.models import (
    AdditiveNoise,
    MixedNoise,
    MultiplicativeNoise,
    NoiseLevel,
    NoiseModel,
    make_noise_model,
)
from walkingnoise.noise.placement import (
    GlobalPlacement,
    Placement,
    SiteMapPlacement,
    WalkingPlacement,
    parse_placement,
)
from walkingnoise.noise.recording import recording, site_outputs
from walkingnoise.noise.site import NoiseSite, SiteInfo
from walkingnoise.noise.weight import (
    WeightNoise,
    attach_weight_noise,
    remove_weight_noise,
    set_weight_noise,
    weight_noise_disabled,
)

__all__ = [
    "DEFAULT_KINDS",
    "SITE_KINDS",
    "AdditiveNoise",
    "GlobalPlacement",
    "MixedNoise",
    "MultiplicativeNoise",
    "NoiseLevel",
    "NoiseModel",
    "NoiseSite",
    "NoisyModel",
    "Placement",
    "SiteInfo",
    "SiteMapPlacement",
    "WalkingPlacement",
    "WeightNoise",
    "attach_weight_noise",
    "instrument",
    "instrument_like",
    "make_noise_model",
    "parse_placement",
    "recording",
    "remove_weight_noise",
    "set_weight_noise",
    "site_outputs",
    "weight_noise_disabled",
]
