"""Noise models, noise sites, placements, and instrumentation of any ``nn.Module``."""

from walkingnoise.noise.instrument import NoisyModel, instrument
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
from walkingnoise.noise.site import NoiseSite, SiteInfo

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
    "instrument",
    "make_noise_model",
    "parse_placement",
]
