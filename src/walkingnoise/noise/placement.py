"""Placements: which noise sites get noise, and at which σ."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from walkingnoise.noise.kinds import SITE_KINDS
from walkingnoise.noise.models import NoiseLevel
from walkingnoise.noise.site import SiteInfo


@dataclass(frozen=True)
class GlobalPlacement:
    """The same σ at every site, BatchNorm outputs included (``global``), or at every site but
    those of ``exclude_kinds``. The paper's "global noise" leaves BatchNorm outputs out, so that
    the total injected noise is the same with and without BatchNorm: ``global-except:batchnorm``
    (the same as ``global`` on a model without BatchNorm).

    Attributes:
        exclude_kinds: site kinds that get no noise, e.g. ``("batchnorm",)``.
    """

    exclude_kinds: tuple[str, ...] = ()

    def resolve(self, sites: Sequence[SiteInfo], sigma: NoiseLevel | None) -> dict[int, NoiseLevel]:
        """Map each noisy site index to its σ."""
        level = _require_sigma(sigma, "global")
        return {s.index: level for s in sites if s.kind not in self.exclude_kinds}

    def __str__(self) -> str:
        return "global" + (f"-except:{','.join(self.exclude_kinds)}" if self.exclude_kinds else "")


@dataclass(frozen=True)
class WalkingPlacement:
    """σ at exactly one site, index ``site`` (Walking Noise "walking noise")."""

    site: int

    def resolve(self, sites: Sequence[SiteInfo], sigma: NoiseLevel | None) -> dict[int, NoiseLevel]:
        """Map the one noisy site index to its σ."""
        _check_index(self.site, len(sites))
        return {self.site: _require_sigma(sigma, "walking")}

    def __str__(self) -> str:
        return f"walking:{self.site}"


@dataclass(frozen=True)
class SiteMapPlacement:
    """An explicit σ per site; sites not in the map get no noise."""

    sigmas: Mapping[int, NoiseLevel] = field(default_factory=dict)

    def resolve(self, sites: Sequence[SiteInfo], sigma: NoiseLevel | None) -> dict[int, NoiseLevel]:
        """Return the map itself (``sigma`` must be None: the map carries the levels)."""
        if sigma is not None:
            raise ValueError("an explicit site map carries its own σ values; pass sigma=None")
        for index in self.sigmas:
            _check_index(index, len(sites))
        return dict(self.sigmas)

    def __str__(self) -> str:
        return "map:" + ";".join(f"{i}={s}" for i, s in sorted(self.sigmas.items()))


Placement = GlobalPlacement | WalkingPlacement | SiteMapPlacement


def _require_sigma(sigma: NoiseLevel | None, mode: str) -> NoiseLevel:
    if sigma is None:
        raise ValueError(f"{mode} placement needs a sigma")
    return sigma


def _check_index(index: int, n_sites: int) -> None:
    if not 0 <= index < n_sites:
        raise ValueError(f"site index {index} out of range: the model has sites 0..{n_sites - 1}")


class _PlacementError(ValueError):
    """A placement of the right form with a value it cannot have."""


def _site_index(index: int, text: str) -> int:
    """``index`` as a site index: sites count from 0 at the network's input."""
    if index < 0:
        raise _PlacementError(
            f"bad placement {text!r}: site indices count from 0 (the input), got {index}"
        )
    return index


def parse_placement(text: str) -> Placement:
    """Parse ``global``, ``global-except:batchnorm``, ``walking:3`` or ``map:0=0.1;3=0.5``."""
    mode, _, arg = text.strip().partition(":")
    try:
        if mode == "global" and not arg:
            return GlobalPlacement()
        if mode == "global-except" and arg:
            kinds = tuple(k.strip() for k in arg.split(","))
            unknown = [k for k in kinds if k not in SITE_KINDS]
            if unknown:
                raise ValueError(
                    f"bad placement {text!r}: unknown site kind(s) {', '.join(unknown)}; "
                    f"known: {', '.join(SITE_KINDS)}"
                )
            return GlobalPlacement(exclude_kinds=kinds)
        if mode == "walking" and arg:
            return WalkingPlacement(site=_site_index(int(arg), text))
        if mode == "map" and arg:
            sigmas: dict[int, float] = {}
            for item in (item for item in arg.split(";") if item.strip()):
                index, sigma = item.split("=")
                site = _site_index(int(index), text)
                if site in sigmas:
                    raise _PlacementError(f"bad placement {text!r}: site {site} is given twice")
                sigmas[site] = float(sigma)
            return SiteMapPlacement(sigmas)
    except _PlacementError:
        raise
    except ValueError as error:
        if "unknown site kind" in str(error):
            raise
    raise ValueError(
        f"bad placement {text!r}; expected global, global-except:KIND[,KIND], walking:INDEX "
        "or map:INDEX=SIGMA[;INDEX=SIGMA]"
    )
