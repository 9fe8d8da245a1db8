"""Noise sites of an experiment's model: for ``walking:*``, index checks and site names."""

from __future__ import annotations

from pathlib import Path

import torch

from walkingnoise.data import load_dataset
from walkingnoise.experiment import Experiment
from walkingnoise.models import build_model
from walkingnoise.noise.instrument import instrument
from walkingnoise.noise.site import SiteInfo


class SiteCounter:
    """Site tables of (dataset, model, batchnorm), built once each; each dataset loaded once."""

    def __init__(
        self,
        data_root: str | Path | None = None,
        shapes: dict[str, tuple[tuple[int, ...], int]] | None = None,
    ) -> None:
        """``shapes`` may give (input shape, classes) of datasets so they need not be loaded."""
        self.data_root = data_root
        self._shapes: dict[str, tuple[tuple[int, ...], int]] = dict(shapes or {})
        self._tables: dict[tuple[str, str, bool], list[SiteInfo]] = {}

    def shape(self, dataset: str) -> tuple[tuple[int, ...], int]:
        """(input shape, number of classes) of a dataset."""
        if dataset not in self._shapes:
            data = load_dataset(dataset, root=self.data_root)
            self._shapes[dataset] = (data.input_shape, data.num_classes)
        return self._shapes[dataset]

    def table(self, experiment: Experiment) -> list[SiteInfo]:
        """The site table of the experiment's instrumented model."""
        key = (experiment.dataset, experiment.model, experiment.batchnorm)
        if key not in self._tables:
            input_shape, classes = self.shape(experiment.dataset)
            model = build_model(
                experiment.model, input_shape, classes, batchnorm=experiment.batchnorm
            )
            self._tables[key] = instrument(model, torch.zeros(2, *input_shape)).site_table
        return self._tables[key]

    def __call__(self, experiment: Experiment) -> int:
        """The number of noise sites of the experiment's instrumented model."""
        return len(self.table(experiment))
