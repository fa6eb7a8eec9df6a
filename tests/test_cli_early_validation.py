"""Bad options fail before any import: the input named here does not even exist."""

from __future__ import annotations

from graphopt.cli import main


def _error(capsys, *argv) -> str:
    assert main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.count("graphopt: error:") == 1 and "no such file" not in err
    return err


def test_opt_refuses_a_bad_pipeline_and_output_first(capsys, tmp_path):
    assert "fold-bnx" in _error(capsys, "opt", tmp_path / "missing.onnx", "-p", "fold-bnx")
    assert "directory" in _error(capsys, "opt", tmp_path / "missing.onnx", "-o", f"{tmp_path}/")


def test_compile_checks_output_target_toolchain_and_db_before_the_import(capsys, tmp_path, monkeypatch):
    missing = tmp_path / "missing.onnx"
    assert "use a .so" in _error(capsys, "compile", missing, "-o", tmp_path / "m.bin")
    assert "unknown target" in _error(capsys, "compile", missing, "--target", "armm", "-o", tmp_path / "m.so").lower()
    assert "not a directory" in _error(capsys, "compile", missing, "-o", tmp_path / "m.so", "--db", __file__)
    monkeypatch.setenv("PATH", str(tmp_path))  # no aarch64-linux-gnu-g++ here
    err = _error(capsys, "compile", missing, "--target", "arm", "-o", tmp_path / "m.so")
    assert "aarch64-linux-gnu-g++" in err and "apt-get install g++-aarch64-linux-gnu" in err and ".tar" in err
    assert list(tmp_path.iterdir()) == []


def test_compile_arm_tar_needs_no_cross_compiler(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["compile", str(tmp_path / "missing.onnx"), "--target", "arm", "-o", str(tmp_path / "m.tar")]) == 1
    assert "no such file: " in capsys.readouterr().err  # past the checks, as far as the import


def test_setup_script_without_apt_or_root_prints_a_note_and_succeeds(tmp_path):
    import os
    import shutil
    import subprocess
    from pathlib import Path

    script = Path(__file__).parents[1] / "scripts" / "setup.sh"
    text = script.read_text()
    function = text[text.index("install_cross_compiler() {") : text.index("install_cross_compiler || true")]
    (tmp_path / "bin").mkdir()
    os.symlink(shutil.which("id"), tmp_path / "bin" / "id")  # no apt-get, sudo or cross compiler on PATH
    run = subprocess.run(
        [shutil.which("bash"), "-c", f"set -euo pipefail\n{function}\ninstall_cross_compiler || true\necho finished"],
        env={"PATH": str(tmp_path / "bin")},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0 and run.stdout.strip() == "finished", run.stderr
    assert "apt-get install g++-aarch64-linux-gnu" in run.stderr and ".tar" in run.stderr
