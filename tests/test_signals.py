"""Signals during clean-up: a second Ctrl-C must not leave a stopped sweep's claims behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from walkingnoise._signals import interrupts_held
from walkingnoise.sweep import Store, run_sweep
from walkingnoise.sweep import runner as runner_module

from .sweep.helpers import spec

SWEEP = """
fixed: {dataset: digits, model: mlp, noise: additive, placement: "walking:1",
        train_noise: true, eval_repeats: 1, recipe: {epochs: 1}}
grid:
  sigma: {type: choice, options: [0.1, 1.0]}
  recipe.lr: {type: choice, options: [0.001, 0.002]}
"""


def test_an_interrupt_is_held_until_the_block_ends_then_raised() -> None:
    before = signal.getsignal(signal.SIGINT)
    finished: list[bool] = []

    def interrupted_block() -> None:
        with interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            finished.append(True)

    with pytest.raises(KeyboardInterrupt):
        interrupted_block()
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is before
    with interrupts_held():  # nothing held: nothing raised
        pass


def test_a_second_interrupt_while_claims_go_back_leaves_none_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C reaches the process and its pool's workers: the interrupt a worker sends back
    can stop the run first, and this process's own then arrives while the claims go back."""
    record, release = runner_module._record, Store.release

    def interrupted_record(*args: object) -> None:
        record(*args)
        raise KeyboardInterrupt  # the first Ctrl-C, after the first unit is stored

    def release_under_a_second_interrupt(self: Store, keys: list[str]) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        release(self, keys)

    monkeypatch.setattr(runner_module, "_record", interrupted_record)
    monkeypatch.setattr(Store, "release", release_under_a_second_interrupt)
    counts = _interrupted_run(tmp_path / "s.sqlite")
    assert (counts["running"], counts["done"], counts["pending"]) == (0, 2, 2)


def test_an_interrupt_right_after_a_claim_leaves_none_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal between a claim's commit and the run noting it (a batch system's SIGTERM sent
    as soon as the store shows a running experiment): the claim still goes back."""
    claim = Store.claim

    def claim_then_interrupt(self: Store, keys: list[str]) -> list[str]:
        claimed = claim(self, keys)
        os.kill(os.getpid(), signal.SIGINT)
        return claimed

    monkeypatch.setattr(Store, "claim", claim_then_interrupt)
    counts = _interrupted_run(tmp_path / "s.sqlite")
    assert (counts["running"], counts["pending"]) == (0, 4)


def _interrupted_run(store: Path) -> dict[str, int]:
    """Run the sweep until Ctrl-C stops it; the store's counts per status after."""
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec(SWEEP), store, progress=False)
    with Store(store, read_only=True) as opened:
        return opened.counts()
