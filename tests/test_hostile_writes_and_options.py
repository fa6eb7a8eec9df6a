"""Issue 17, items 3, 6 and 8: writes that must not replace what they should not,
nesting that must not exhaust the stack, and options that must not pass silently."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import warnings

import pytest

import graphopt
from graphopt.backends.tvm import tuning
from graphopt.backends.tvm.targets import TargetError, resolve_target
from graphopt.cli import main
from graphopt.errors import PipelineParseError
from graphopt.fileio import OutputPathError, atomic_output, atomic_write_bytes, check_output_path
from graphopt.models import get_model
from graphopt.passes import Pipeline
from graphopt.passes.pipeline import MAX_NESTING


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory):
    model, (x,) = get_model("digits_mlp", seed=2)
    path = tmp_path_factory.mktemp("hostile") / "mlp.onnx"
    graphopt.trace(model, (x,)).save_onnx(path)
    return path


def cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def temporaries(directory):
    return sorted(p.name for p in directory.iterdir() if ".tmp" in p.name)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ---- item 3: atomic writes ------------------------------------------------------------


def test_dev_null_is_refused_and_stays_a_device(tmp_path):
    # The check only: were it to regress, a write as root would replace the real /dev/null.
    with pytest.raises(OutputPathError, match="'/dev/null': it is a character device"):
        check_output_path("/dev/null")
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)
    null = tmp_path / "null"  # the write itself, on a copy of the device node
    try:
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    with pytest.raises(OutputPathError, match="it is a character device"):
        atomic_write_bytes(null, b"model")
    assert stat.S_ISCHR(os.lstat(null).st_mode) and temporaries(tmp_path) == []


def test_fifo_output_is_refused_before_the_pipeline_runs(capsys, mlp_onnx, tmp_path):
    fifo = tmp_path / "out.onnx"
    os.mkfifo(fifo)
    rc, out, err = cli(capsys, "opt", mlp_onnx, "-p", "eliminate-dead-code", "-o", fifo)
    assert rc == 1 and "it is a FIFO, not a regular file" in err
    assert "running" not in err  # refused before the passes ran
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert temporaries(tmp_path) == []


def test_symlink_output_is_refused_and_link_and_target_are_kept(tmp_path):
    target = tmp_path / "real.onnx"
    target.write_bytes(b"old")
    link = tmp_path / "link.onnx"
    os.symlink(target, link)
    with pytest.raises(OutputPathError, match="symbolic link .*name its target"):
        atomic_write_bytes(link, b"new")
    assert os.path.islink(link) and target.read_bytes() == b"old"
    dangling = tmp_path / "dangling.onnx"
    os.symlink(tmp_path / "missing.onnx", dangling)
    with pytest.raises(OutputPathError, match="symbolic link"):
        atomic_write_bytes(dangling, b"new")
    assert not (tmp_path / "missing.onnx").exists()


def test_existing_file_keeps_its_mode_and_new_file_gets_umask_mode(tmp_path):
    private = tmp_path / "private.onnx"
    private.write_bytes(b"old")
    os.chmod(private, 0o600)
    atomic_write_bytes(private, b"new")
    assert private.read_bytes() == b"new" and stat.S_IMODE(os.stat(private).st_mode) == 0o600
    fresh = tmp_path / "fresh.onnx"
    mask = os.umask(0o022)
    try:
        atomic_write_bytes(fresh, b"new")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o644


def test_failed_write_removes_its_temporary_and_keeps_the_old_file(tmp_path):
    out = tmp_path / "m.so"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="linker failed"):
        with atomic_output(out) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("linker failed")
    assert out.read_bytes() == b"old" and temporaries(tmp_path) == []


def test_killed_write_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    out = tmp_path / "m.onnx"
    killed = (
        "import os, signal, sys\n"
        "from graphopt.fileio import atomic_output\n"
        "with atomic_output(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'x' * 4096)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    child = subprocess.run([sys.executable, "-c", killed, str(out)])
    assert child.returncode == -9
    [left] = temporaries(tmp_path)
    assert left.startswith(".m.onnx.") and left.endswith(".tmp.onnx")
    # Kept: a live writer's temporary, one newer than the write, another path's, an unparsable name.
    live = tmp_path / f".m.onnx.{os.getppid()}.abcd1234.tmp.onnx"
    newer = tmp_path / f".m.onnx.{dead_pid()}.efgh5678.tmp.onnx"
    other = tmp_path / f".n.onnx.{dead_pid()}.abcd1234.tmp.onnx"
    no_pid = tmp_path / ".m.onnx.abcd1234.tmp.onnx"
    for p in (live, newer, other, no_pid):
        p.write_bytes(b"x")
    later = time.time() + 3600
    os.utime(newer, (later, later))
    atomic_write_bytes(out, b"model")
    assert out.read_bytes() == b"model"
    assert temporaries(tmp_path) == sorted(p.name for p in (live, newer, other, no_pid))


def test_opt_with_empty_output_is_an_error(capsys, mlp_onnx):
    rc, out, err = cli(capsys, "opt", mlp_onnx, "-p", "eliminate-dead-code", "-o", "")
    assert rc == 1 and "the output path is empty" in err and "running" not in err


# ---- item 6: nesting and corrupt tuning metadata --------------------------------------


@pytest.mark.parametrize("depth", [400, 100_000])
def test_deep_nesting_in_a_pipeline_is_a_parse_error(depth):
    text = "fold-constants{max_elements=" + "[" * depth + "]" * depth + "}"
    with pytest.raises(PipelineParseError, match=f"lists nested more than {MAX_NESTING} deep") as info:
        Pipeline.parse(text)
    assert info.value.position == text.index("[") + MAX_NESTING


def test_nesting_up_to_the_limit_reaches_type_conversion():
    text = "fold-constants{max_elements=" + "[" * MAX_NESTING + "]" * MAX_NESTING + "}"
    with pytest.raises(PipelineParseError, match="expects int: got a list"):
        Pipeline.parse(text)


def stamp(work_dir, **changes):
    meta = dict(tuning._metadata(tuning._tuning_target("x86")), **changes)
    (work_dir / tuning.METADATA_FILE).write_text(json.dumps(meta))


@pytest.mark.parametrize("version", ["1", None])
def test_tuning_metadata_version_of_the_wrong_type_is_corrupt(tmp_path, version):
    stamp(tmp_path, version=version)
    with pytest.raises(
        tuning.TuningDatabaseError, match=f'corrupt tuning metadata {tmp_path}.*"version" is {json.dumps(version)}'
    ):
        tuning.load_database(tmp_path, "x86")


def test_deeply_nested_tuning_metadata_is_unreadable(tmp_path):
    (tmp_path / tuning.METADATA_FILE).write_text("[" * 100_000)
    with pytest.raises(tuning.TuningDatabaseError, match="unreadable tuning metadata .*nested too deeply"):
        tuning.load_database(tmp_path, "x86")


def test_deeply_nested_tuning_line_follows_the_bad_line_policy(tmp_path):
    stamp(tmp_path)
    workloads = tmp_path / tuning.WORKLOAD_FILE
    deep = "[" * 100_000 + "]" * 100_000
    workloads.write_text(deep + "\n" + deep + "\n")
    with pytest.raises(
        tuning.TuningDatabaseError, match=f"corrupt tuning database {workloads}, line 1: JSON nested too deeply"
    ):
        tuning.load_database(tmp_path, "x86")
    workloads.write_text(deep + "\n")  # the last line: dropped with a warning, like a cut-off write
    with pytest.warns(tuning.TuningDatabaseWarning, match="dropping its last line"):
        assert tuning.load_database(tmp_path, "x86") is None
    assert workloads.read_text() == ""


def test_tuning_line_with_a_huge_integer_is_a_corrupt_line(tmp_path):
    stamp(tmp_path)
    workloads = tmp_path / tuning.WORKLOAD_FILE
    workloads.write_text("1" * 5000 + "\n" + '["h", {}]\n')  # json.loads raises ValueError, not JSONDecodeError
    with pytest.raises(
        tuning.TuningDatabaseError, match=f"corrupt tuning database {workloads}, line 1: unreadable JSON .*4300 digits"
    ):
        tuning.load_database(tmp_path, "x86")


def test_tuning_metadata_that_is_a_directory_is_corrupt(tmp_path):
    path = tmp_path / tuning.METADATA_FILE
    path.mkdir()
    with pytest.raises(tuning.TuningDatabaseError, match=f"corrupt tuning database: {path} is not a regular file"):
        tuning.load_database(tmp_path, "x86")


def test_tuning_table_that_is_a_fifo_is_refused_not_read(tmp_path):
    stamp(tmp_path)
    fifo = tmp_path / tuning.WORKLOAD_FILE
    os.mkfifo(fifo)
    # In a child: reading the FIFO blocks in TVM's loader with the GIL held, so a regression hangs.
    load = (
        "import sys\nfrom graphopt.backends.tvm import tuning\n"
        "try:\n    tuning.load_database(sys.argv[1], 'x86')\n"
        "except tuning.TuningDatabaseError as err:\n    print(err)\n"
    )
    child = subprocess.run([sys.executable, "-c", load, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert f"{fifo} is not a regular file" in child.stdout, child.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


# ---- item 8: options accepted silently ------------------------------------------------


def test_unknown_mcpu_is_refused_and_known_ones_pass():
    with pytest.raises(TargetError, match="mcpu 'not-a-cpu' is not a CPU LLVM knows"):
        resolve_target({"kind": "llvm", "mcpu": "not-a-cpu"})
    with pytest.raises(TargetError, match="did you mean skylake"):
        resolve_target({"kind": "llvm", "mcpu": "skylak"})
    with pytest.raises(TargetError, match="mcpu 'bad'"):  # the host of a GPU target too
        resolve_target({"kind": "cuda", "arch": "sm_80", "host": {"kind": "llvm", "mcpu": "bad"}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72"})
        assert resolve_target({"kind": "llvm", "mcpu": "skylake", "num-cores": 1})


@pytest.mark.parametrize("cores", [-3, 0])
def test_num_cores_below_one_is_refused(cores):
    with pytest.raises(TargetError, match=f"num-cores must be at least 1, got {cores}"):
        resolve_target({"kind": "llvm", "num-cores": cores})


@pytest.mark.parametrize(
    "target, message",
    [
        ('{"kind": "llvm", "mcpu": "not-a-cpu"}', "mcpu 'not-a-cpu'"),
        ('{"kind": "llvm", "num-cores": -3}', "num-cores must be at least 1"),
    ],
)
def test_compile_refuses_bad_target_options_before_the_build(capsys, mlp_onnx, tmp_path, target, message):
    rc, out, err = cli(capsys, "compile", mlp_onnx, "--target", target, "-o", tmp_path / "m.so")
    assert rc == 1 and message in err and "compiling" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "db, message",
    [
        ("file", "is not a directory"),
        ("missing", "no such directory; tune into it first"),
    ],
)
def test_compile_db_naming_a_file_or_a_missing_directory(capsys, mlp_onnx, tmp_path, db, message):
    (tmp_path / "file").write_text("records?")
    rc, out, err = cli(capsys, "compile", mlp_onnx, "-o", tmp_path / "m.so", "--db", tmp_path / db)
    assert rc == 1 and message in err and "compiling" not in err
    assert not (tmp_path / "m.so").exists() and not (tmp_path / "missing").exists()


def test_compile_negative_tune_is_an_error(capsys, mlp_onnx, tmp_path):
    rc, out, err = cli(capsys, "compile", mlp_onnx, "-o", tmp_path / "m.so", "--tune", "-3", "--db", tmp_path / "db")
    assert rc == 1 and "--tune wants a number of trials >= 0, got -3" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "output, message",
    [
        ("m.onnx", "use a .so (loadable shared library) or .tar"),
        ("lib/", "names a directory"),
    ],
)
def test_compile_refuses_an_unusable_output_before_the_build(capsys, mlp_onnx, tmp_path, output, message):
    rc, out, err = cli(capsys, "compile", mlp_onnx, "-o", f"{tmp_path}/{output}")
    assert rc == 1 and message in err and "compiling" not in err


def test_compile_refuses_a_metadata_path_that_is_not_a_file(capsys, mlp_onnx, tmp_path):
    os.mkfifo(tmp_path / "m.so.json")
    rc, out, err = cli(capsys, "compile", mlp_onnx, "-o", tmp_path / "m.so")
    assert rc == 1 and "m.so.json': it is a FIFO" in err and "compiling" not in err
    assert not (tmp_path / "m.so").exists()


def test_compile_db_without_records_warns_that_the_build_is_untuned(capsys, mlp_onnx, tmp_path):
    (tmp_path / "db").mkdir()
    rc, out, err = cli(capsys, "-q", "compile", mlp_onnx, "-o", tmp_path / "m.so", "--db", tmp_path / "db")
    assert rc == 0, err
    assert "graphopt: warning: --db" in err and "holds no tuning records" in err and "untuned" in err
    assert (tmp_path / "m.so").exists()


def test_tune_db_naming_a_file_is_refused_before_the_work(capsys, mlp_onnx, tmp_path):
    (tmp_path / "file").write_text("records?")
    rc, out, err = cli(capsys, "tune", mlp_onnx, "--target", "x86", "--db", tmp_path / "file", "--trials", "1")
    assert rc == 1 and "--db" in err and "is not a directory" in err and "Traceback" not in err
    assert (tmp_path / "file").read_text() == "records?"


def test_tune_api_refuses_a_database_path_that_is_a_file(tmp_path):
    pytest.importorskip("tvm")
    from graphopt.backends.tvm.lower import lower_to_relax
    from graphopt.backends.tvm.tuning import TuningError, tune
    from graphopt.ir.graph import Graph
    from graphopt.ir.types import TensorType

    g = Graph("g")
    g.set_outputs([g.add_node("relu", [g.add_input("x", TensorType((2,)))]).output])
    (tmp_path / "file").write_text("records?")
    with pytest.raises(TuningError, match="is not a directory"):
        tune(lower_to_relax(g), "x86", tmp_path / "file", 1)
