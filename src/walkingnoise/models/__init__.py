"""Built-in model zoo: plain clean ``nn.Module``s, instrumented like any user model."""

from walkingnoise.models import convnets, mlp
from walkingnoise.models.registry import (
    ModelBuildError,
    build_model,
    check_logits,
    model_names,
    own_model_names,
    register_model,
)

__all__ = [
    "ModelBuildError",
    "build_model",
    "check_logits",
    "convnets",
    "mlp",
    "model_names",
    "own_model_names",
    "register_model",
]
