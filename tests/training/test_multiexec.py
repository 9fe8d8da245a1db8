"""Comparing execution plans: accuracy per plan on one model, reproducible, settings restored."""

from __future__ import annotations

import math

import torch
from torch import nn

from walkingnoise.data.dataset import Split
from walkingnoise.noise import instrument
from walkingnoise.noise.models import AdditiveNoise
from walkingnoise.noise.placement import GlobalPlacement
from walkingnoise.training.multiexec import ExecutionPlan, compare_plans, standard_plans


def test_guided_plan_beats_uniform_when_one_site_dominates_the_noise() -> None:
    """Noise at a site the output reads with a large gain hurts most: more executions there."""
    torch.manual_seed(0)
    n, d = 4000, 8
    x = torch.randn(n, d)
    weight = torch.randn(d, 2)
    y = (x @ weight).argmax(1)
    net = nn.Sequential(nn.Linear(d, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(weight.T)
        net[1].weight.copy_(torch.eye(2) * 0.05)  # shrinks the signal: site 2 is fragile
    model = instrument(net, x[:2])
    split = Split(x, y)
    mu = {0: 1.0, 1: 1.0, 2: 0.05}
    plans = standard_plans(mu, budget=30, powers=[1.0])
    assert plans[2].counts == {0: 2, 1: 1, 2: 27}  # quotas 1.36, 1.36, 27.3
    table = compare_plans(
        model, split, AdditiveNoise(), GlobalPlacement(), 0.2, plans, repeats=8, seed=3
    )
    assert table["plan"].tolist() == ["single", "uniform", "guided 1/μ"]
    assert table["budget"].tolist() == [3, 30, 30]
    acc = dict(zip(table["plan"], table["accuracy"], strict=True))
    sem = dict(zip(table["plan"], table["accuracy_sem"], strict=True))
    margin = 6 * math.hypot(sem["guided 1/μ"], sem["uniform"]) + 1e-9
    assert acc["guided 1/μ"] > acc["uniform"] + margin
    assert acc["uniform"] > acc["single"]
    assert model.executions == {}  # restored
    assert all(site.noise is None for site in model.sites)


def test_compare_plans_is_reproducible_and_independent_of_the_other_plans() -> None:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 3))
    x, y = torch.randn(200, 4), torch.randint(0, 3, (200,))
    model = instrument(net, x[:2])
    own = torch.Generator()
    model.set_generator(own)
    plan = ExecutionPlan("uniform", {0: 2, 1: 2})
    args = (model, Split(x, y), AdditiveNoise(), GlobalPlacement(), 1.0)
    alone = compare_plans(*args, [plan], repeats=3, seed=7)
    after = compare_plans(*args, [ExecutionPlan("single", {0: 1, 1: 1}), plan], repeats=3, seed=7)
    assert alone.iloc[0]["accuracy"] == after.iloc[1]["accuracy"]
    assert alone.iloc[0]["accuracy_std"] > 0
    assert all(site.generator is own for site in model.sites)  # the model's own, restored
