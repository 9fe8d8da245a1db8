"""Memory budgets: the sizes the budget variable accepts, how they fail, the stacks they allow."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from walkingnoise.models import build_model
from walkingnoise.noise import instrument
from walkingnoise.training import memory
from walkingnoise.training.memory import (
    BUDGET_ENV,
    CPU_SHARE_ENV,
    DEVICE_ENV,
    GPU_SHARE_ENV,
    check_budget,
    cpu_share,
    default_device,
    gpu_share,
    memory_budget,
    models_per_stack,
    parse_bytes,
)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1500000", 1_500_000),
        ("2GB", 2_000_000_000),
        ("512MiB", 512 * 2**20),
        (" 1.5 kb ", 1500),
        ("1TB", 10**12),
        ("2TiB", 2 * 2**40),
    ],
)
def test_sizes_with_and_without_a_unit(text: str, size: int) -> None:
    assert parse_bytes(text) == size


@pytest.mark.parametrize("text", ["lots", "1..2GB", ".", "2 GiBs", "-1GB", ""])
def test_a_malformed_size_names_the_variable(text: str) -> None:
    with pytest.raises(ValueError, match=rf"^{BUDGET_ENV}: not a size: "):
        parse_bytes(text)


@pytest.mark.parametrize("text", ["0", "0.5", "0GB", ".4"])
def test_a_budget_of_no_bytes_is_refused(text: str) -> None:
    """Zero bytes (or a fraction of one) would silently train every model alone."""
    with pytest.raises(ValueError, match=rf"^{BUDGET_ENV}: '{re.escape(text)}' is no memory"):
        parse_bytes(text)


def test_the_variable_is_checked_on_demand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BUDGET_ENV, "1..2GB")
    with pytest.raises(ValueError, match=BUDGET_ENV):
        check_budget()
    monkeypatch.setenv(BUDGET_ENV, "2GB")
    check_budget()


def test_a_budget_below_one_model_stacks_one_and_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    torch.manual_seed(0)
    model = instrument(build_model("mlp", (1, 8, 8), 10), torch.randn(2, 1, 8, 8))
    monkeypatch.setattr(memory, "_SAID_BELOW", set())  # as in a new process
    monkeypatch.setenv(BUDGET_ENV, "1KB")
    with caplog.at_level(logging.WARNING, logger="walkingnoise"):
        for _ in range(3):  # a sweep sizes a stack per unit: the warning comes once
            assert models_per_stack(model, 64, torch.device("cpu"), training=True) == 1
        # a cohort sizes its training stack for its evaluation too, and other units evaluate
        # in other batches: other estimates of the same model kind, still warned of once
        for batch in (64, 1000, 16):
            assert models_per_stack(model, batch, torch.device("cpu"), training=False) == 1
    warnings = [r for r in caplog.records if "below one model's" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert BUDGET_ENV in warnings[0].getMessage()
    caplog.clear()
    monkeypatch.setenv(BUDGET_ENV, "1GB")
    with caplog.at_level(logging.INFO, logger="walkingnoise"):
        assert models_per_stack(model, 64, torch.device("cpu"), training=True) > 100
    assert caplog.text == ""


@pytest.mark.parametrize(("share", "free"), [("0.25", 30), ("1", 30), ("", 30), ("0.5", 70)])
def test_workers_sharing_a_gpu_size_to_their_share_of_it(
    monkeypatch: pytest.MonkeyPatch, share: str, free: int
) -> None:
    """70 % of the free memory, or of this worker's share of all of it if that is less: two
    workers on one GPU must not each size to what the other has not taken yet."""
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda _device: (free * gib, 80 * gib))
    monkeypatch.setenv(GPU_SHARE_ENV, share)
    expected = 0.7 * min(free * gib, float(share or 1) * 80 * gib)
    assert memory_budget(torch.device("cuda")) == int(expected)
    monkeypatch.setenv(BUDGET_ENV, "1GB")
    assert memory_budget(torch.device("cuda")) == 10**9


def test_the_gpu_budget_counts_what_this_process_has_cached_as_free(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a worker's first unit its allocator keeps the freed blocks, which the driver counts
    as used: the next stack may use them."""
    gib = 2**30
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    monkeypatch.delenv(GPU_SHARE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda _device: (10 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda _device: 30 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda _device: 2 * gib)
    assert memory_budget(torch.device("cuda")) == int(0.7 * 38 * gib)


@pytest.mark.parametrize("text", ["0", "1.5", "-0.5", "half", "nan"])
def test_a_bad_gpu_share_names_the_variable(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv(GPU_SHARE_ENV, text)
    with pytest.raises(ValueError, match=rf"^{GPU_SHARE_ENV}: not a share in \(0, 1\]: "):
        gpu_share()
    with pytest.raises(ValueError, match=GPU_SHARE_ENV):
        check_budget()


@pytest.mark.parametrize("setting", ["cpu", " CPU "])
def test_the_device_variable_chooses_the_cpu(monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    monkeypatch.setenv(DEVICE_ENV, setting)
    assert default_device() == torch.device("cpu")


def test_without_the_device_variable_cuda_is_used_when_available(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    assert default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_bad_device_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEVICE_ENV, "tpu")
    with pytest.raises(ValueError, match=rf"^{DEVICE_ENV}: not a device: 'tpu'"):
        default_device()
    with pytest.raises(ValueError, match=DEVICE_ENV):
        check_budget()


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests a machine without CUDA")
def test_cuda_asked_for_where_there_is_none_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    check_budget()  # a Ray cluster's nodes may have what this machine lacks
    with pytest.raises(ValueError, match=rf"^{DEVICE_ENV}=cuda: PyTorch finds no CUDA device"):
        default_device()


def test_a_workers_cpu_budget_is_its_share_of_the_available_ram(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Workers of a pool each size to their share: N workers each taking half of all the RAM
    (up to the 1 GiB cap) could take N times what there is."""
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    monkeypatch.delenv(CPU_SHARE_ENV, raising=False)
    assert cpu_share() == 1.0
    alone = memory_budget(torch.device("cpu"))
    monkeypatch.setenv(CPU_SHARE_ENV, "0.001")  # small enough that the cap does not bind
    shared = memory_budget(torch.device("cpu"))
    available = 2 * alone if alone < 2**30 else None
    assert shared < alone
    assert shared < 2**30
    if available is not None:  # RAM moves between the reads: 10 % leeway
        assert shared == pytest.approx(available * 0.001 / 2, rel=0.1)


@pytest.mark.parametrize("text", ["0", "1.5", "half", "-0.5"])
def test_a_bad_cpu_share_names_the_variable(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv(CPU_SHARE_ENV, text)
    with pytest.raises(ValueError, match=rf"^{CPU_SHARE_ENV}: not a share in \(0, 1\]"):
        check_budget()
