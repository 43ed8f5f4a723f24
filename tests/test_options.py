"""Every bad option value is a usage error naming the option, the value and the rule, before
anything is collected or measured: ``options.validate`` on a parsed command line, in this process,
and once through a real ``pytest --quantbench`` run that it is what the plugin calls."""

from __future__ import annotations

import fnmatch
import os
import subprocess

import pytest

from pytest_quantbench import options


def usage_error(pytester: pytest.Pytester, *args: str) -> str:
    """The message of the usage error that ``pytest *args`` makes in ``pytester``'s folder."""
    config = pytester.parseconfig(*args)
    with pytest.raises(pytest.UsageError) as err:
        options.validate(config)
    return str(err.value)


@pytest.mark.parametrize(("args", "message"), [
    (["--quantbench-save=../elsewhere"], "--quantbench-save: '../elsewhere' is not a usable run name*"),
    ([f"--quantbench-save={'x' * 300}"], "--quantbench-save: 'xxx* is not a usable run name (1-100 characters*"),
    (["--quantbench-compare=../x"], "--quantbench-compare: '../x' is not a stored run's name*"),
    (["--quantbench-sizes=16x100"], "--quantbench-sizes: '16x100' is neither*"),
    (["--quantbench-sizes=4x0"], "--quantbench-sizes: '4x0' is neither*"),
    (["--quantbench-sizes=0x256"], "--quantbench-sizes: '0x256' is neither*"),
    (["--quantbench-sizes=64x100"], "--quantbench-sizes: '64x100' is neither*"),
    (["--quantbench-sizes=4096x"], "--quantbench-sizes: '4096x' is neither*"),
    (["--quantbench-sizes=100000x100000"], "--quantbench-sizes: '100000x100000' is 10000000000 weights, more than*"),
    (["--quantbench-passes=2", "--quantbench-windows=2"],
     "give --quantbench-passes only: --quantbench-windows is its deprecated alias"),
    (["--quantbench-passes=0"], "--quantbench-passes must be from 1 to 100, got 0"),
    (["--quantbench-passes=101"], "--quantbench-passes must be from 1 to 100, got 101"),
    (["--quantbench-keep=0", "--quantbench-save=x"], "--quantbench-keep must be from 1 to 100, got 0"),
    (["--quantbench-keep=101", "--quantbench-save=x"], "--quantbench-keep must be from 1 to 100, got 101"),
    (["--quantbench-compare=main", "--quantbench-fail-on=nan"],
     "--quantbench-fail-on must be a percentage from 0 to 1000, got nan"),
    (["--quantbench-compare=main", "--quantbench-fail-on=-5"],
     "--quantbench-fail-on must be a percentage from 0 to 1000, got -5.0"),
    (["--quantbench-compare=main", "--quantbench-fail-on=1e9"],
     "--quantbench-fail-on must be a percentage from 0 to 1000, got 1000000000.0"),
    (["--quantbench-fail-on=5"], "--quantbench-fail-on needs a baseline to compare with: --quantbench-compare "
                                 "[[]NAME[]] (a stored run) or --quantbench-ab OLD,NEW (a kernel in this run)"),
] + [([f"--quantbench-ab={value}"], f"--quantbench-ab: {value!r} is not OLD,NEW: two different registered kernel "
                                    "names separated by a comma")
     for value in ("fast", "fast,", ",fast", "fast,fast", "a,b,c")])
def test_a_bad_option_value_is_a_usage_error_naming_it(pytester, args, message):
    got = usage_error(pytester, "--quantbench", *args)
    assert fnmatch.fnmatchcase(got, message), got


def test_a_bad_builtins_mode_is_a_usage_error_on_the_command_line_and_in_the_ini(pytester):
    with pytest.raises(pytest.UsageError, match="--quantbench-builtins: invalid choice: 'sometimes'"):
        pytester.parseconfig("--quantbench", "--quantbench-builtins=sometimes")  # argparse's choices
    pytester.makeini("[pytest]\nquantbench_builtins = sometimes\n")
    assert usage_error(pytester, "--quantbench") == "quantbench_builtins: 'sometimes' is not one of compare, test, off"


def test_a_storage_path_under_a_file_is_a_usage_error(pytester):
    (pytester.path / "afile").write_text("not a folder")
    message = usage_error(pytester, "--quantbench", "--quantbench-save=main", "--quantbench-storage=afile/runs")
    assert message.startswith("--quantbench-storage: afile/runs cannot hold stored runs: ")
    assert "Not a directory" in message


def test_a_read_only_storage_folder_is_a_usage_error(pytester):
    mount = pytester.path / "ro"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only file system here (needs root and mount)")
    try:
        message = usage_error(pytester, "--quantbench", "--quantbench-save=main", f"--quantbench-storage={mount}")
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert f"--quantbench-storage: {mount} cannot hold stored runs: " in message and "Read-only file system" in message


def test_good_values_pass(pytester):
    config = pytester.parseconfig("--quantbench", "--quantbench-sizes=cache,16x4096", "--quantbench-passes=3",
                                  "--quantbench-save=main", "--quantbench-keep=3", "--quantbench-ab=old,new",
                                  "--quantbench-fail-on=5", "--quantbench-builtins=off")
    options.validate(config)
    assert [(s.label, s.rows, s.cols) for s in options.sizes(config)] == [("cache", 256, 4096), ("16x4096", 16, 4096)]
    assert options.passes(config) == 3 and options.keep(config) == 3 and options.ab_names(config) == [("old", "new")]
    assert (pytester.path / ".quantbench").is_dir()  # proved usable for the save


def test_the_plugin_refuses_a_bad_value_before_collecting_and_exits_with_a_usage_error(project):
    import downstream

    result = downstream.run(project, "--quantbench", "--quantbench-sizes=16x100")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--quantbench-sizes: '16x100' is neither*"])
    result.stdout.no_fnmatch_line("*collected*")


@pytest.mark.parametrize("args", [
    ["--quantbench-compare"], ["--quantbench-compare=main", "--quantbench-fail-on=5"], ["--quantbench-fail-on=5"],
    ["--quantbench-ab=old,new"], ["--quantbench-save=main"],
])
def test_a_gate_option_without_quantbench_is_a_usage_error_naming_the_missing_flag(pytester, args):
    config = pytester.parseconfig(*args)
    with pytest.raises(pytest.UsageError) as err:
        options.refuse_without_quantbench(config)
    flag = args[0].split("=")[0]
    assert str(err.value).startswith(f"{flag} needs --quantbench: without it no kernel is measured"), err.value


def test_options_that_only_shape_a_run_are_accepted_without_quantbench(pytester):
    # A project may keep these in its ini's addopts for the runs that add --quantbench.
    config = pytester.parseconfig("--quantbench-sizes=cache", "--quantbench-storage=x", "--quantbench-passes=2")
    options.refuse_without_quantbench(config)


def test_latest_is_not_a_name_a_run_can_be_saved_under(pytester):
    got = usage_error(pytester, "--quantbench", "--quantbench-save=latest")
    assert got.startswith("--quantbench-save: 'latest' is not a usable run name: --quantbench-compare reads it"), got


def test_the_plugin_refuses_a_gate_without_quantbench_before_running_any_test(pytester):
    pytester.makepyfile(test_nothing="def test_passes():\n    pass\n")
    result = pytester.runpytest_inprocess("--quantbench-compare=main", "--quantbench-fail-on=5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--quantbench-compare needs --quantbench*"])
    assert "passed" not in result.stdout.str()
