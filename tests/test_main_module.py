"""`python -m graphopt` is the `graphopt` command."""

import subprocess
import sys

import graphopt


def test_python_dash_m_runs_the_cli():
    out = subprocess.run([sys.executable, "-m", "graphopt", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"graphopt {graphopt.__version__}"
    listed = subprocess.run([sys.executable, "-m", "graphopt", "passes"], capture_output=True, text=True, check=True)
    assert "prune-channels" in listed.stdout and "round_to" in listed.stdout
