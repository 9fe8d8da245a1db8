"""Built-in model zoo: plain clean ``nn.Module``s, instrumented like any user model."""

from walkingnoise.models import convnets, mlp
from walkingnoise.models.registry import build_model, model_names, register_model

__all__ = ["build_model", "convnets", "mlp", "model_names", "register_model"]
