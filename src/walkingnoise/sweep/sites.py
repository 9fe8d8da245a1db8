"""Noise sites of an experiment's model: for ``walking:*``, index checks and site names."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch

from walkingnoise.data import load_dataset
from walkingnoise.experiment import Experiment
from walkingnoise.models import build_model, check_logits
from walkingnoise.models.registry import check_trainable
from walkingnoise.noise.instrument import NoisyModel, instrument
from walkingnoise.noise.site import SiteInfo
from walkingnoise.sweep.architecture import architecture_key, describe_network
from walkingnoise.sweep.data_fingerprints import dataset_fingerprint
from walkingnoise.sweep.planner import cohort_key
from walkingnoise.training.cohort import trains_alone
from walkingnoise.training.memory import default_device, device_setting

log = logging.getLogger(__name__)


class SiteCounter:
    """Site tables of (dataset, model, batchnorm), built once each; each dataset loaded once."""

    def __init__(
        self,
        data_root: str | Path | None = None,
        shapes: dict[str, tuple[tuple[int, ...], int]] | None = None,
        device: str | None = None,
    ) -> None:
        """``shapes`` may give (input shape, classes) of datasets so they need not be loaded;
        ``device`` is the kind the units compute on (None: this machine's default)."""
        self.data_root = data_root
        self.device = device
        self._shapes: dict[str, tuple[tuple[int, ...], int]] = dict(shapes or {})
        self._tables: dict[tuple[str, str, bool], list[SiteInfo]] = {}
        self._models: dict[tuple[str, str, bool], NoisyModel] = {}
        self._alone: dict[str, bool] = {}
        self._said: set[tuple[str, str, str]] = set()  # why cohorts train alone, said once
        self._data: dict[str, list[str]] = {}  # dataset_fingerprint of each dataset loaded

    def shape(self, dataset: str) -> tuple[tuple[int, ...], int]:
        """(input shape, number of classes) of a dataset."""
        if dataset not in self._shapes:
            self._load(dataset)
        return self._shapes[dataset]

    def _load(self, dataset: str) -> None:
        """Load a dataset once, keeping its shape and fingerprint, not its tensors."""
        data = load_dataset(dataset, root=self.data_root)
        self._shapes[dataset] = (data.input_shape, data.num_classes)
        self._data[dataset] = dataset_fingerprint(data)

    def datasets(self, names: Iterable[str]) -> dict[str, list[str]]:
        """The ``dataset_fingerprint`` of each dataset of ``names``, loading those not yet."""
        wanted = sorted(set(names))
        for name in wanted:
            if name not in self._data:
                self._load(name)
        return {name: self._data[name] for name in wanted}

    def table(self, experiment: Experiment) -> list[SiteInfo]:
        """The site table of the experiment's instrumented model."""
        key = (experiment.dataset, experiment.model, experiment.batchnorm)
        if key not in self._tables:
            input_shape, classes = self.shape(experiment.dataset)
            model = build_model(
                experiment.model, input_shape, classes, batchnorm=experiment.batchnorm
            )
            example = torch.zeros(2, *input_shape)
            noisy = instrument(model, example)
            check_logits(experiment.model, noisy, example, classes)
            check_trainable(experiment.model, model)
            self._tables[key] = noisy.site_table
            self._models[key] = noisy
        return self._tables[key]

    def trains_alone(self, experiment: Experiment) -> bool:
        """Whether the cohort of this noisy-training experiment trains one model at a time
        in a unit of work (``training.cohort.trains_alone``), probed once per cohort, for the
        units' device (a Ray executor's: GPUs where its tasks take them, else CPUs; else
        ``$WALKINGNOISE_DEVICE``, which names the workers' device even where this process has
        none) or, by default, this process's."""
        key = cohort_key(experiment)
        if key not in self._alone:
            self.table(experiment)
            model = self._models[(experiment.dataset, experiment.model, experiment.batchnorm)]
            example = torch.zeros(2, *self.shape(experiment.dataset)[0])
            kind = self.device or device_setting() or default_device().type
            try:
                reason = trains_alone(model, experiment, example, torch.device(kind))
            except Exception as error:  # units of one are right for any model, if slower
                reason = f"{type(error).__name__}: {error}"
            self._alone[key] = reason is not None
            said = (experiment.model, experiment.dataset, reason)
            if reason is not None and said not in self._said:  # here, where the user sees it
                self._said.add(said)
                log.info(
                    "noisy trainings of %s on %s run one model at a time: %s",
                    experiment.model,
                    experiment.dataset,
                    reason,
                )
        return self._alone[key]

    def networks(self) -> dict[str, list[str]]:
        """The description of each network built so far, by ``architecture_key``."""
        return {
            architecture_key(*key): describe_network(model.source, self._tables[key])
            for key, model in self._models.items()
        }

    def site_names(self) -> dict[str, list[str]]:
        """The site names of each network built so far, in site order, by ``architecture_key``:
        kept in the store, so that a store's tables name the sites of a user's model where its
        module cannot be imported."""
        return {
            architecture_key(*key): [info.name for info in table]
            for key, table in self._tables.items()
        }

    def __call__(self, experiment: Experiment) -> int:
        """The number of noise sites of the experiment's instrumented model."""
        return len(self.table(experiment))
