"""`graphopt check`: budgets measured against the original model, a readable diff, exit status, JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

import graphopt
from graphopt.check import BudgetResult, CheckReport, check_model, digits_accuracy
from graphopt.cli import main
from graphopt.models import DigitsCNN, load_digits_data, train_digits_model


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models on a shared machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits_onnx(tmp_path_factory):
    """(ONNX file of a trained digits CNN taking one [1, 1, 8, 8] image, its test accuracy in torch)."""
    torch.manual_seed(0)
    model = DigitsCNN()
    acc = train_digits_model(model, epochs=3)
    path = tmp_path_factory.mktemp("digits") / "digits.onnx"
    graphopt.trace(model.eval(), (torch.zeros(1, 1, 8, 8),)).save_onnx(path)
    return path, acc


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["-q", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def junit(path) -> ET.Element:
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    return suite


def test_budgets_kept_exit_0_with_a_table_and_junit(digits_onnx, tmp_path, capsys):
    model, acc = digits_onnx
    before = model.read_bytes()
    xml = tmp_path / "reports" / "check.xml"
    rc, out, err = cli(
        capsys, "check", model, "-p", "fold-bn,eliminate-dead-code", "--min-sqnr", 60, "--max-abs-diff", 1e-3,
        "--max-accuracy-drop", 0.5, "--accuracy", "digits", "--junit", xml,
    )  # fmt: skip
    assert rc == 0, err
    assert "3 of 3 budgets kept" in out and "BROKEN" not in out and err == ""
    assert f"digits top-1 {100 * acc:.2f}% -> {100 * acc:.2f}%" in out  # same figure as torch's own evaluation
    assert model.read_bytes() == before  # the user's model is untouched
    suite = junit(xml)
    assert suite.get("tests") == "3" and suite.get("failures") == "0"
    assert [c.get("name") for c in suite.iter("testcase")] == ["min-sqnr", "max-abs-diff", "max-accuracy-drop"]
    assert not list(suite.iter("failure"))
    assert [p.attrib for p in suite.iter("property")][1] == {"name": "pipeline", "value": "fold-bn,eliminate-dead-code"}
    assert sorted(p.name for p in xml.parent.iterdir()) == ["check.xml"]  # no temporary left beside it


def test_a_broken_budget_exits_1_naming_budget_measured_and_by_how_much(digits_onnx, tmp_path, capsys):
    model, _ = digits_onnx
    xml = tmp_path / "check.xml"
    rc, out, err = cli(
        capsys, "check", model, "-p", "prune-channels{ratio=0.75}", "--min-sqnr", 30, "--max-accuracy-drop", 1,
        "--accuracy", "digits", "--junit", xml,
    )  # fmt: skip
    assert rc == 1
    report = [line for line in out.splitlines() if line.startswith(("min-sqnr", "max-accuracy-drop"))]
    assert len(report) == 2 and all("BROKEN by " in line for line in report), out
    assert "2 of 2 budgets broken" in out
    sqnr = float(report[0].split()[4])  # "min-sqnr >= 30 dB 12.3 dB BROKEN by ..."
    assert sqnr < 30 and f"BROKEN by {30 - sqnr:.2f}".rstrip("0").rstrip(".") in report[0]
    assert "graphopt: check failed: pipeline 'prune-channels{ratio=0.75}'" in err
    assert "min-sqnr: SQNR " in err and "budget >= 30 dB: BROKEN by" in err
    assert "max-accuracy-drop: accuracy drop" in err and "budget <= 1 pts" in err
    suite = junit(xml)
    assert suite.get("failures") == "2"
    failures = [c.find("failure") for c in suite.iter("testcase")]
    assert all(f is not None and "BROKEN by" in f.get("message") for f in failures)


def test_latency_budget_builds_with_tvm_and_times_it(digits_onnx, capsys):
    model, _ = digits_onnx
    rc, out, _ = cli(capsys, "check", model, "-p", "fold-bn", "--max-latency-ms", 0, "--target", "x86")
    assert rc == 1  # nothing runs in 0 ms: the budget is measured, not assumed
    line = next(line for line in out.splitlines() if line.startswith("max-latency"))
    measured = float(line.split()[4])
    assert measured > 0 and f"BROKEN by {line.split()[4]} ms" in line
    assert "median of" in out and "built for x86" in out


def test_sqnr_on_given_inputs(digits_onnx, tmp_path, capsys):
    model, _ = digits_onnx
    images = load_digits_data().x_test[:8].numpy()
    np.savez(tmp_path / "inputs.npz", x=images)
    rc, out, err = cli(capsys, "check", model, "-p", "share-weights{clusters=4}", "--min-sqnr", 0, "--inputs",
                       tmp_path / "inputs.npz")  # fmt: skip
    assert rc == 0, err
    graph = graphopt.load_onnx(model)
    shared = graphopt.Pipeline.parse("share-weights{clusters=4}").run(graph).graph
    expected = check_model(graph, "share-weights{clusters=4}", min_sqnr_db=0, inputs=[[x[None]] for x in images])
    assert expected.results[0].measured == pytest.approx(float(out.split("min-sqnr")[1].split()[3]), abs=0.01)
    same = check_model(shared, "", min_sqnr_db=0)  # no passes: identical outputs
    assert same.results[0].measured == float("inf")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max-accuracy-drop", "1"], "--max-accuracy-drop needs --accuracy DATASET"),
        (["--max-accuracy-drop", "1", "--accuracy", "imagenet"], "unknown dataset 'imagenet'"),
        (["--max-latency-ms", "2"], "--max-latency-ms needs --target"),
        (["--max-latency-ms", "2", "--target", "x68"], "x68"),
        (["--max-abs-diff", "-1"], "--max-abs-diff must be >= 0"),
        (["--min-sqnr", "nan"], "--min-sqnr must be a finite number"),
        (["-p", "fold-bm"], "unknown pass 'fold-bm'"),
    ],
)
def test_bad_options_fail_before_the_model_is_read(tmp_path, capsys, argv, message):
    rc, out, err = cli(capsys, "check", tmp_path / "absent.onnx", *argv)
    assert rc == 1 and out == ""
    assert err.count("graphopt: error:") == 1 and message in err and "absent.onnx" not in err


def test_inputs_file_errors_name_the_option(digits_onnx, tmp_path, capsys):
    model, _ = digits_onnx
    np.savez(tmp_path / "bad.npz", wrong=np.zeros((2, 3), np.float32))
    rc, _, err = cli(capsys, "check", model, "--min-sqnr", 1, "--inputs", tmp_path / "bad.npz")
    assert rc == 1 and f"--inputs '{tmp_path / 'bad.npz'}'" in err and "--calib" not in err


def test_digits_accuracy_batches_a_fixed_batch_dimension(digits_onnx):
    model, acc = digits_onnx
    assert digits_accuracy(graphopt.load_onnx(model)) == pytest.approx(acc, abs=1e-6)  # torch reports a float32 mean
    flat = graphopt.trace(torch.nn.Sequential(torch.nn.Linear(64, 10)).eval(), (torch.zeros(7, 64),))
    assert 0.0 <= digits_accuracy(flat) <= 1.0  # 450 test images in batches of 7, the last one padded


def test_report_lines_and_junit_of_a_nan_measurement():
    r = BudgetResult("min-sqnr", "SQNR", 20.0, float("nan"), " dB", True)
    report = CheckReport("m.onnx", "quantize", (r,))
    assert not report.passed and "BROKEN (not a number)" in report.table()
    assert 'failures="1"' in report.junit_xml()


def test_a_run_that_fails_still_writes_junit_with_an_error(tmp_path, capsys):
    xml = tmp_path / "check.xml"
    rc, out, err = cli(capsys, "check", tmp_path / "absent.onnx", "--min-sqnr", 20, "--junit", xml)
    assert rc == 1 and out == "" and "absent.onnx" in err
    suite = junit(xml)
    assert (suite.get("tests"), suite.get("errors"), suite.get("failures")) == ("1", "1", "0")
    error = suite.find("testcase/error")
    assert error is not None and "absent.onnx" in error.get("message")
