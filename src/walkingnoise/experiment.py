"""The experiment: one fully specified run, with a stable content hash."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from walkingnoise._numbers import MAX_SEED, no_bool, within_float32
from walkingnoise.data.registry import dataset_names
from walkingnoise.models.registry import model_names, unknown_model
from walkingnoise.noise.models import (
    AdditiveNoise,
    MixedNoise,
    MultiplicativeNoise,
    NoiseModel,
)
from walkingnoise.noise.placement import Placement, SiteMapPlacement, parse_placement
from walkingnoise.training.distillation import CLEAN_TEACHER, Distillation
from walkingnoise.training.recipe import Recipe

NoiseName = Literal["none", "additive", "multiplicative", "mixed"]
#: Validation context of experiments read back from a store or a checkpoint: checks added
#: after they were written (a ratio beside a pair of σ) do not make them unreadable.
STORED = {"stored": True}


class Experiment(BaseModel):
    """Dataset, model, recipe, noise model, placement, σ, training-noise flag and seed.

    Evaluation noise is always on for the noisy metrics; ``train_noise`` decides whether the same
    noise is also injected during training ("noisy training") or not ("inference-only"). This
    holds for activation noise (``noise``) and weight noise (``weight_noise``) alike; the two
    combine.

    Attributes:
        sigma: σ for ``additive``/``multiplicative``; for ``mixed`` a pair (σ_mul, σ_add) or,
            with ``ratio`` set, an amplitude. None only with ``noise="none"`` or a ``map:``
            placement, which carries its own σ values.
        order: order of the two noises for ``mixed``.
        ratio: σ_add / amplitude for ``mixed`` given as an amplitude.
        gradient: ``through_noise`` (default, as the published code) or ``forward_only``; see
            ``noise.models``. Additive noise is one computation either way.
        eval_repeats: noisy evaluations averaged for the noisy metrics (R).
        weight_noise: η of Noisy Machines' weight noise: every forward pass adds
            N(0, (η · (max W − min W))²) to the weights of each conv/linear layer (see
            ``noise.weight``); 0 (default) for none. Use ``noise="none"`` for weight noise alone.
        distillation: train by knowledge distillation from a teacher (see
            ``training.distillation``); None (default) for plain cross-entropy training.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = "digits"
    model: str = "mlp"
    batchnorm: bool = True
    recipe: Recipe = Field(default_factory=Recipe)
    noise: NoiseName = "additive"
    order: Literal["mul_first", "add_first"] = "mul_first"
    ratio: float | None = Field(default=None, gt=0, lt=1)
    gradient: Literal["forward_only", "through_noise"] = "through_noise"
    placement: str = "global"
    sigma: float | tuple[float, float] | None = None
    train_noise: bool = False
    eval_repeats: int = Field(default=5, ge=1)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    weight_noise: float = Field(default=0.0, ge=0)
    distillation: Distillation | None = None

    _numbers = field_validator(
        "ratio", "sigma", "eval_repeats", "seed", "weight_noise", mode="before"
    )(no_bool)
    _float32 = field_validator("weight_noise")(within_float32)

    @field_validator("dataset")
    @classmethod
    def _dataset_known(cls, value: str) -> str:
        if value not in dataset_names():
            raise ValueError(f"unknown dataset {value!r}; known: {', '.join(dataset_names())}")
        return value

    @field_validator("model")
    @classmethod
    def _model_known(cls, value: str) -> str:
        if value not in model_names():
            raise ValueError(unknown_model(value))
        return value

    @field_validator("placement")
    @classmethod
    def _placement_parses(cls, value: str) -> str:
        return str(parse_placement(value))

    @field_validator("sigma")
    @classmethod
    def _sigma_finite(cls, value: float | tuple[float, float] | None) -> object:
        for part in value if isinstance(value, tuple) else (value,):
            if part is not None and not 0.0 <= part < math.inf:
                raise ValueError(f"sigma must be finite and ≥ 0, got {part}")
        return value

    @field_validator("weight_noise")
    @classmethod
    def _weight_noise_finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"weight_noise must be finite and ≥ 0, got {value}")
        return value

    @model_validator(mode="after")
    def _sigma_fits(self, info: ValidationInfo) -> Experiment:
        """σ against the noise model and placement: the experiment's only check of several
        fields together, so a sweep file's error of it points at ``sigma``."""
        if self.noise == "none":
            return self
        stored = bool(info.context and info.context.get("stored"))
        if isinstance(self.sigma, tuple) and self.ratio is not None and not stored:
            raise ValueError(
                f"mixed noise with the pair sigma {list(self.sigma)} takes both σ from it: "
                f"ratio {self.ratio} would be ignored; give a pair or an amplitude with ratio"
            )
        model = self.noise_model()
        placement = self.placement_spec()
        if isinstance(placement, SiteMapPlacement):
            if self.sigma is not None:
                raise ValueError(
                    f"placement {self.placement!r} carries its own σ values; leave sigma unset"
                )
            for level in placement.sigmas.values():
                model.levels(level)
            return self
        if self.sigma is None:
            raise ValueError(f"noise {self.noise!r} with placement {self.placement!r} needs sigma")
        model.levels(self.sigma)
        return self

    @property
    def trains_with_noise(self) -> bool:
        """Whether noise (activation or weight noise) is on during training."""
        return self.train_noise and (self.noise != "none" or self.weight_noise > 0)

    @property
    def shares_clean_model(self) -> bool:
        """Whether this experiment's model is its clean training's model (only evaluated).

        True for inference-only experiments: no noise in training and no distillation.
        """
        return not self.trains_with_noise and self.distillation is None

    def clean_training(self) -> Experiment:
        """The clean training this experiment's model comes from when noise is off in training.

        Every inference-only experiment with the same dataset, model, BatchNorm flag, recipe and
        seed shares it, so its content hash identifies one trained model. It is also the teacher
        of a distillation whose ``teacher`` is ``clean``.
        """
        keep = {"dataset", "model", "batchnorm", "recipe", "seed"}
        return Experiment(**{k: v for k, v in self if k in keep}, noise="none")

    def teacher_training(self) -> Experiment | None:
        """The clean training that teaches this experiment, if it distils from ``clean``."""
        if self.distillation is None or self.distillation.teacher != CLEAN_TEACHER:
            return None
        return self.clean_training()

    def teacher_file(self) -> str | None:
        """The checkpoint path, as written, this experiment distils from; None without
        distillation or with the ``clean`` teacher (see ``teacher_training``)."""
        if self.distillation is None or self.distillation.teacher == CLEAN_TEACHER:
            return None
        return self.distillation.teacher

    def training_noise_seed(self) -> int:
        """A seed for the noise drawn during training, derived from the content hash."""
        return _derived_seed(self.content_hash(), "training-noise")

    def evaluation_seed(self) -> int:
        """A seed for the noise of evaluation, derived from the content hash without σ.

        A generator seeded with it makes the noisy metrics independent of which other
        experiments were evaluated before, or beside, it on the same model. Experiments that
        differ only in σ share it: they see the same standard normal draws, each scaled by its
        own σ (common random numbers), so a stack draws them once, and a seed's accuracy
        against σ does not move from one σ to the next by the luck of fresh draws.
        """
        fields = self.identity()
        fields.pop("sigma", None)
        return _derived_seed(_digest(fields), "evaluation-noise")

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

    def identity(self) -> dict[str, object]:
        """The fields that decide the outcome, as JSON-ready values.

        Fields that cannot matter are left out, so experiments that differ only in them are
        one experiment: ``order`` and ``ratio`` unless the noise is mixed, ``gradient`` unless
        activation noise is on in training (and additive noise, the same computation with
        either rule, is always ``forward_only``, as before ``through_noise`` became the
        default), ``placement`` and ``sigma`` when ``noise`` is
        ``none``, ``train_noise`` and ``eval_repeats`` when there is no noise at all, and
        ``weight_noise``, ``distillation`` and ``recipe.augment`` at their defaults (so
        experiments without them keep the hashes they had before these fields existed).
        """
        fields = self.model_dump(mode="json")
        if not self.recipe.augment:
            del fields["recipe"]["augment"]
        if self.noise != "mixed":
            del fields["order"], fields["ratio"]
        if not (self.noise != "none" and self.train_noise):
            del fields["gradient"]
        elif self.noise == "additive":  # one computation either way: the hash it always had
            fields["gradient"] = "forward_only"
        if self.noise == "none":
            del fields["placement"], fields["sigma"]
            if self.weight_noise == 0:
                del fields["train_noise"], fields["eval_repeats"]
        if self.weight_noise == 0:
            del fields["weight_noise"]
        if self.distillation is None:
            del fields["distillation"]
        return fields

    def canonical_json(self) -> str:
        """Key-sorted compact JSON of ``identity()``: the basis of the content hash."""
        return _canonical(self.identity())

    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON: equal experiments get equal hashes."""
        return _digest(self.identity())


def _canonical(fields: dict[str, object]) -> str:
    """Key-sorted compact JSON of ``fields``."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def _digest(fields: dict[str, object]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``fields``."""
    return hashlib.sha256(_canonical(fields).encode()).hexdigest()


def _derived_seed(content_hash: str, purpose: str) -> int:
    """A 60-bit seed from an experiment's hash and what the seed is for."""
    return int(hashlib.sha256(f"{content_hash}:{purpose}".encode()).hexdigest()[:15], 16)
