"""The experiment: one fully specified run, with a stable content hash."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from walkingnoise.noise.models import (
    AdditiveNoise,
    MixedNoise,
    MultiplicativeNoise,
    NoiseModel,
)
from walkingnoise.noise.placement import Placement, parse_placement
from walkingnoise.training.recipe import Recipe

NoiseName = Literal["none", "additive", "multiplicative", "mixed"]


class Experiment(BaseModel):
    """Dataset, model, recipe, noise model, placement, σ, training-noise flag and seed.

    Evaluation noise is always on for the noisy metrics; ``train_noise`` decides whether the same
    noise is also injected during training ("noisy training") or not ("inference-only").

    Attributes:
        sigma: σ for ``additive``/``multiplicative``; for ``mixed`` a pair (σ_mul, σ_add) or,
            with ``ratio`` set, an amplitude. None only with ``noise="none"`` or a ``map:``
            placement, which carries its own σ values.
        order: order of the two noises for ``mixed``.
        ratio: σ_add / amplitude for ``mixed`` given as an amplitude.
        gradient: ``forward_only`` (default) or ``through_noise``; see ``noise.models``.
        eval_repeats: noisy evaluations averaged for the noisy metrics (R).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = "digits"
    model: str = "mlp"
    batchnorm: bool = True
    recipe: Recipe = Field(default_factory=Recipe)
    noise: NoiseName = "additive"
    order: Literal["mul_first", "add_first"] = "mul_first"
    ratio: float | None = Field(default=None, gt=0, lt=1)
    gradient: Literal["forward_only", "through_noise"] = "forward_only"
    placement: str = "global"
    sigma: float | tuple[float, float] | None = None
    train_noise: bool = False
    eval_repeats: int = Field(default=5, ge=1)
    seed: int = Field(default=0, ge=0)

    @field_validator("placement")
    @classmethod
    def _placement_parses(cls, value: str) -> str:
        return str(parse_placement(value))

    @model_validator(mode="after")
    def _sigma_fits(self) -> Experiment:
        if self.noise == "none":
            return self
        if self.sigma is None and not self.placement.startswith("map:"):
            raise ValueError(f"noise {self.noise!r} with placement {self.placement!r} needs sigma")
        model = self.noise_model()
        if self.sigma is not None:
            model.levels(self.sigma)
        return self

    def placement_spec(self) -> Placement:
        """The placement object this experiment's ``placement`` string describes."""
        return parse_placement(self.placement)

    def noise_model(self) -> NoiseModel | None:
        """The noise model, on in evaluation and, if ``train_noise``, in training."""
        flags = {"training": self.train_noise, "evaluation": True, "gradient": self.gradient}
        if self.noise == "additive":
            return AdditiveNoise(**flags)
        if self.noise == "multiplicative":
            return MultiplicativeNoise(**flags)
        if self.noise == "mixed":
            return MixedNoise(order=self.order, ratio=self.ratio, **flags)
        return None

    def canonical_json(self) -> str:
        """Key-sorted compact JSON of every field: the basis of the content hash."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON: equal experiments get equal hashes."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()
