"""The pytest11 entry point is installed and leaves ordinary test runs alone."""

pytest_plugins = ["pytester"]


def test_plain_pytest_run_is_unaffected(pytester):
    pytester.makepyfile(test_mine="def test_ok():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["plugins:*quantbench*"])  # installed and loaded...
    result.stdout.no_fnmatch_line("*--quantbench*")  # ...and silent without the option


def test_quantbench_option_exists_and_says_the_suite_comes_later(pytester):
    pytester.makepyfile(test_mine="def test_ok():\n    pass\n")
    result = pytester.runpytest_subprocess("--quantbench")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*--quantbench: the conformance and throughput suite is not implemented yet*"])
    help_text = pytester.runpytest_subprocess("--help")
    help_text.stdout.fnmatch_lines(["*--quantbench*"])
