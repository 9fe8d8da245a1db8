"""Statistical assertions with tolerances derived from the sample size."""

from __future__ import annotations

import math

import torch

#: Standard errors allowed: a correct implementation fails with probability ~2e-9 per check.
Z = 6.0


def assert_mean(samples: torch.Tensor, expected: float) -> None:
    """The sample mean matches ``expected`` within Z standard errors (SE = s/√N)."""
    x = samples.double().flatten()
    se = x.std().item() / math.sqrt(x.numel())
    assert abs(x.mean().item() - expected) <= Z * se + 1e-12, (x.mean().item(), expected, se)


def assert_variance(samples: torch.Tensor, expected: float) -> None:
    """The sample variance matches ``expected`` within Z standard errors.

    SE of the variance is estimated from the sample itself, sd((x - x̄)²)/√N, so the check holds
    for non-Gaussian products of Gaussians too.
    """
    x = samples.double().flatten()
    squares = (x - x.mean()) ** 2
    se = squares.std().item() / math.sqrt(x.numel())
    assert abs(squares.mean().item() - expected) <= Z * se, (squares.mean().item(), expected, se)


def assert_fraction(hits: torch.Tensor, expected: float) -> None:
    """A fraction of True values matches ``expected`` within Z binomial standard errors."""
    n = hits.numel()
    se = math.sqrt(expected * (1 - expected) / n)
    assert abs(hits.double().mean().item() - expected) <= Z * se
