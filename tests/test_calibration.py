"""Calibration observers and scales: known answers on synthetic distributions, bad calibration data."""

from __future__ import annotations

import numpy as np
import pytest

from graphopt.ir.graph import Graph
from graphopt.ir.types import TensorType
from graphopt.quant.calibrate import CalibrationError, calibrate_ranges
from graphopt.quant.observers import make_observer
from graphopt.quant.scales import activation_qparams, fake_quantize, weight_qparams


def observe(method, batches, **kw):
    ob = make_observer(method, **kw)
    for b in batches:
        ob.observe(b)
    return ob.range()


def batches(x, n=4):
    return np.array_split(x, n)


# ---- scales ---------------------------------------------------------------------------


def test_symmetric_int8_scale_covers_the_range_with_zero_point_zero():
    scale, zero = activation_qparams(-1.0, 3.0, "int8", symmetric=True)
    assert zero.dtype == np.int8 and int(zero) == 0
    assert float(scale) == pytest.approx(6.0 / 255)


def test_asymmetric_uint8_keeps_zero_exact():
    scale, zero = activation_qparams(0.5, 2.0, "uint8", symmetric=False)  # the range is widened to hold 0
    assert zero.dtype == np.uint8 and int(zero) == 0
    assert float(scale) == pytest.approx(2.0 / 255)
    scale, zero = activation_qparams(-1.0, 1.0, "uint8", symmetric=False)
    assert abs((0 - int(zero)) * float(scale)) < 1e-7 or int(zero) in (127, 128)


def test_weights_are_symmetric_int8_per_output_channel_in_narrow_range():
    w = (
        np.random.default_rng(0).standard_normal((4, 3, 2)).astype(np.float32)
        * np.array([1, 10, 0.1, 0])[:, None, None]
    )
    q, scale, zero = weight_qparams(w, axis=0)
    assert q.dtype == np.int8 and q.min() >= -127 and q.max() <= 127 and not zero.any()
    assert scale.shape == (4,)
    for c in range(3):  # each non-zero channel uses the full range
        assert np.abs(q[c]).max() == 127
    assert not q[3].any()  # an all-zero channel stays zero
    np.testing.assert_allclose(q * scale[:, None, None], w, atol=float(scale.max()) / 2 + 1e-7)


# ---- observers: known answers -------------------------------------------------------------


def test_minmax_is_the_extremes_over_all_batches():
    x = np.random.default_rng(0).standard_normal(10_000)
    assert observe("minmax", batches(x)) == (x.min(), x.max())


def test_percentile_of_a_uniform_distribution():
    x = np.random.default_rng(1).uniform(-2.0, 2.0, 400_000)
    lo, hi = observe("percentile", batches(x), percentile=90.0)
    assert (lo, hi) == pytest.approx((-1.8, 1.8), abs=0.01)  # 90 % of |x| lies below 1.8


def test_percentile_of_a_normal_distribution_grows_across_batches():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(400_000)
    parts = [x[:1000] * 0.01, *batches(x[1000:])]  # the histogram range doubles many times
    _, hi = observe("percentile", parts, percentile=99.0)
    assert hi == pytest.approx(2.5758, abs=0.02)  # P(|z| < 2.5758) = 0.99


def test_asymmetric_percentile_takes_both_tails():
    x = np.random.default_rng(3).uniform(0.0, 10.0, 400_000)
    lo, hi = observe("percentile", batches(x), percentile=95.0, symmetric=False)
    assert (lo, hi) == pytest.approx((0.5, 9.5), abs=0.02)


def _fq_mse(x, t):
    return float(np.mean((fake_quantize(x, -t, t) - x) ** 2))


def test_mse_finds_the_clip_with_least_squared_error():
    x = np.random.default_rng(4).laplace(size=200_000)
    lo, hi = observe("mse", batches(x))
    grid = np.linspace(0.2 * np.abs(x).max(), np.abs(x).max(), 200)
    best = min(_fq_mse(x, t) for t in grid)  # brute force over clipping thresholds
    assert hi < 0.9 * np.abs(x).max()  # it clips the Laplace tail
    assert _fq_mse(x, hi) <= 1.02 * best
    assert lo == -hi


def test_mse_does_not_clip_a_uniform_distribution():
    x = np.random.default_rng(5).uniform(-1, 1, 200_000)
    _, hi = observe("mse", batches(x))
    assert hi == pytest.approx(1.0, abs=0.01)


def test_entropy_clips_heavy_tails_and_beats_minmax_on_them():
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.standard_normal(200_000), rng.standard_normal(20) * 60])  # rare huge outliers
    _, t_minmax = observe("minmax", batches(x))
    _, t_entropy = observe("entropy", batches(x))
    assert t_entropy < 0.3 * t_minmax
    bulk = x[:200_000]  # the entropy range resolves the bulk of the data far better
    assert _fq_mse(bulk, t_entropy) < 0.1 * _fq_mse(bulk, t_minmax)


def test_entropy_keeps_the_range_of_a_uniform_distribution():
    x = np.random.default_rng(7).uniform(-3, 3, 200_000)
    _, hi = observe("entropy", batches(x))
    assert hi > 2.7


def test_all_zero_and_nonfinite_values():
    for method in ("minmax", "percentile", "entropy", "mse"):
        assert observe(method, [np.zeros(100)]) == (0.0, 0.0)
        lo, hi = observe(method, [np.array([np.nan, np.inf, 1.0, -1.0])])
        assert -1.0 <= lo < 0 < hi <= 1.0
        with pytest.raises(ValueError, match="no finite value"):
            observe(method, [np.array([np.nan, np.inf])])


def test_unknown_calibrator_and_bad_percentile():
    with pytest.raises(ValueError, match="unknown calibrator 'kl'.*minmax, percentile, entropy, mse"):
        make_observer("kl")
    with pytest.raises(ValueError, match="percentile 0.0 must lie in"):
        make_observer("percentile", percentile=0.0)


# ---- calibration runs on a graph ---------------------------------------------------------


def tiny_graph() -> Graph:
    g = Graph("tiny")
    x = g.add_input("x", TensorType((2, 3)))
    y = g.add_node("relu", [x], name="relu").output
    g.set_outputs([g.add_node("neg", [y], name="neg").output])
    return g


def test_calibrate_ranges_captures_values_and_reports_progress():
    g = tiny_graph()
    sets = [[np.array([[1, -2, 3], [0, 5, -1]], np.float32)], [np.full((2, 3), -7, np.float32)]]
    lines = []
    run = calibrate_ranges(g, ["x", "relu"], sets, samples=4, log=lines.append)
    assert run.ranges == {"x": (-7.0, 5.0), "relu": (0.0, 5.0)}
    assert (run.sets, run.samples) == (2, 4)
    assert lines == [
        "calibrating [############            ] 2/4 samples (1 set)",
        "calibrating [########################] 4/4 samples (2 sets)",
    ]


def test_calibration_stops_after_samples():
    g = tiny_graph()
    sets = ([np.ones((2, 3), np.float32) * k] for k in range(100))
    run = calibrate_ranges(g, ["x"], sets, samples=5)
    assert (run.sets, run.samples, run.ranges["x"]) == (3, 6, (0.0, 2.0))


@pytest.mark.parametrize(
    "sets, message",
    [
        ([], "the calibration set is empty"),
        ([[np.ones((2, 4), np.float32)]], r"calibration set 0, input 'x': got float32\[2, 4\], the graph expects"),
        ([[np.ones((2, 3), np.float64)]], r"calibration set 0, input 'x': got float64\[2, 3\]"),
        ([[np.ones((2, 3), np.float32)], [np.ones(3, np.float32)]], r"calibration set 1, input 'x': got float32\[3\]"),
        ([[np.ones((2, 3), np.float32), np.ones(2)]], "calibration set 0 has 2 arrays; the graph takes 1"),
        ([[np.full((2, 3), np.nan, np.float32)]], "value '%x': no finite value was observed"),
    ],
)
def test_bad_calibration_data_is_refused_clearly(sets, message):
    with pytest.raises(CalibrationError, match=message):
        calibrate_ranges(tiny_graph(), ["x"], sets)
