"""Analysis of results: midpoint fits, the paper's tables, crossings, weight statistics,
multi-execution plans, SQNR profiles and the Noisy Machines table."""

from walkingnoise.analysis.crossing import half_accuracy_crossing
from walkingnoise.analysis.curves import accuracy_curves, prepare_results
from walkingnoise.analysis.midpoint import (
    DoubleLogisticFit,
    MidpointFit,
    fit_double_logistic,
    fit_midpoint,
    logistic,
)
from walkingnoise.analysis.multiexec import execution_plan, uniform_plan
from walkingnoise.analysis.noisy_machines import accuracy_vs_eta, weight_noise_accuracy
from walkingnoise.analysis.sqnr import sqnr_profile
from walkingnoise.analysis.tables import (
    dataset_site_names,
    double_midpoint_table,
    fit_curves,
    global_table,
    midpoint_table,
    partial_drops,
    preservation_table,
    site_table,
    weight_ratio_table,
)
from walkingnoise.analysis.weights import weight_statistics

__all__ = [
    "DoubleLogisticFit",
    "MidpointFit",
    "accuracy_curves",
    "accuracy_vs_eta",
    "dataset_site_names",
    "double_midpoint_table",
    "execution_plan",
    "fit_curves",
    "fit_double_logistic",
    "fit_midpoint",
    "global_table",
    "half_accuracy_crossing",
    "logistic",
    "midpoint_table",
    "partial_drops",
    "prepare_results",
    "preservation_table",
    "site_table",
    "sqnr_profile",
    "uniform_plan",
    "weight_noise_accuracy",
    "weight_ratio_table",
    "weight_statistics",
]
