"""Quantization support: scales from ranges (`scales`), range observers (`observers`),
and calibration runs that feed observers from `graph.run(capture=...)` (`calibrate`)."""

from graphopt.quant.calibrate import CalibrationError, calibrate_ranges, check_calibration_set
from graphopt.quant.observers import OBSERVERS, HistogramObserver, MinMaxObserver, make_observer
from graphopt.quant.scales import activation_qparams, quantize_array, weight_qparams

__all__ = [
    "CalibrationError",
    "calibrate_ranges",
    "check_calibration_set",
    "OBSERVERS",
    "HistogramObserver",
    "MinMaxObserver",
    "make_observer",
    "activation_qparams",
    "weight_qparams",
    "quantize_array",
]
