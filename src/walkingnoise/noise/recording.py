"""Record what leaves noise sites: the activations the binarization and SQNR studies inspect."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from walkingnoise.noise.instrument import NoisyModel


@contextmanager
def recording(model: NoisyModel, indices: Iterable[int]) -> Iterator[dict[int, list[torch.Tensor]]]:
    """Within the block, every forward pass appends the output of the chosen sites (detached).

    The output is taken after the site, so with noise on it is the noisy activation; a tuple
    output is recorded by its first element.
    """
    chosen = sorted(set(indices))
    known = range(len(model.sites))
    for index in chosen:
        if index not in known:
            raise ValueError(
                f"site {index} does not exist; the model has sites 0..{len(known) - 1}"
            )
    records: dict[int, list[torch.Tensor]] = {index: [] for index in chosen}

    def hook_for(index: int) -> Any:
        def keep(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
            tensor = output[0] if isinstance(output, tuple) else output
            records[index].append(tensor.detach())

        return keep

    handles = [model.sites[i].register_forward_hook(hook_for(i)) for i in chosen]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def site_outputs(
    model: NoisyModel, x: torch.Tensor, indices: Iterable[int], *, batch_size: int = 1024
) -> dict[int, torch.Tensor]:
    """The chosen sites' outputs for all of ``x`` in evaluation mode, one tensor per site.

    Noise is applied as currently configured; wrap the call in ``model.noise_disabled()`` for
    the clean activations.
    """
    was_training = model.training
    model.eval()
    try:
        with recording(model, indices) as records:
            for start in range(0, len(x), batch_size):
                model(x[start : start + batch_size])
    finally:
        model.train(was_training)
    return {index: torch.cat(parts) for index, parts in records.items()}
