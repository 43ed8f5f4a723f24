"""Command-line and ini options of pytest-quantbench, and typed access to their values.

The plugin imports this module in every pytest run, --quantbench or not: the kernels and the
stored-run code load inside the functions that need them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import quantbench_kernels as qk

# Named benchmark sizes in rows x 4096-weight rows: 1M weights (fits the L3 with its output) and
# 16M weights (4096 x 4096, the size of a large layer).
NAMED_SIZES = {"cache": (256, 4096), "16M": (4096, 4096)}
DEFAULT_SIZES = "cache,16M"
# Passes over the benchmarks when a run is stored or gated: a disturbance that lasts one pass then
# holds a third of the rounds (see gate.py; calibrated in docs/gate.md).
GATE_PASSES = 3
MAX_PASSES = 100
MAX_SIZE_WEIGHTS = 1 << 30  # 4 GB of float32 per benchmark input: anything larger is a typo
MAX_FAIL_PCT = 1000.0
# The fixed shapes every dot and dequantize kernel meets besides Hypothesis' small draws (ROWSxCOLS;
# "one-block": 3 rows of one block each, the narrowest row a format has): Gemma 3's 640-wide rows,
# a row count that is prime, above 1024 and so no multiple of 8 or of a thread split, and 4096-wide
# rows. "large" adds a 2048 x 4096 matrix and rows of 65,536 weights.
NAMED_SHAPES = {"one-block": (3, 0)}
SHAPE_SETS = {"default": "one-block,3x640,1031x256,5x4096", "none": ""}
SHAPE_SETS["large"] = SHAPE_SETS["default"] + ",2048x4096,2x65536"
MAX_SHAPE_WEIGHTS = 1 << 26  # checked against the NumPy reference: 64M weights take minutes
BUILTIN_MODES = ("compare", "test", "off")
BUILTIN_NAME = "quantbench-numba"  # the built-in kernels' name (registration.BUILTIN)
KEEP_RUNS = 5  # runs a stored baseline holds by default: --quantbench-save adds one, the oldest goes
MAX_KEEP_RUNS = 100


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("quantbench", "quantized kernel conformance and throughput")
    group.addoption("--quantbench", action="store_true", default=False,
                    help="run the pytest-quantbench suite: bit-exactness and throughput of every registered kernel")
    group.addoption("--quantbench-gguf", action="append", default=[], metavar="PATH",
                    help="GGUF file whose tensors the conformance tests use (repeatable)")
    group.addoption("--quantbench-sizes", default=None, metavar="LIST",
                    help=f"benchmark sizes, comma-separated: {', '.join(NAMED_SIZES)} or ROWSxCOLS "
                         f"(default {DEFAULT_SIZES})")
    group.addoption("--quantbench-shapes", default=None, metavar="LIST",
                    help="the fixed shapes every dot and dequantize kernel is checked on, comma-separated: "
                         f"ROWSxCOLS, one-block, or one of {', '.join(SHAPE_SETS)} (default: "
                         f"{SHAPE_SETS['default']})")
    group.addoption("--quantbench-save", default=None, metavar="NAME",
                    help="store this run's benchmark rounds as NAME in the storage folder")
    group.addoption("--quantbench-keep", type=int, default=None, metavar="N",
                    help=f"with --quantbench-save: the stored baseline keeps this run and the N - 1 before it "
                         f"(default {KEEP_RUNS}; 1 replaces it)")
    group.addoption("--quantbench-compare", nargs="?", const="latest", default=None, metavar="NAME",
                    help="compare against the stored run NAME (default: the latest stored)")
    group.addoption("--quantbench-ab", action="append", default=[], metavar="OLD,NEW",
                    help="A/B: time the registered kernel NEW with OLD's calls in between its rounds, in this "
                         "process, and judge NEW / OLD on the pairs (repeatable)")
    group.addoption("--quantbench-fail-on", type=float, default=None, metavar="PCT",
                    help="with --quantbench-compare or --quantbench-ab: fail when a kernel is slower by more "
                         "than PCT percent and the slowdown is statistically significant")
    group.addoption("--quantbench-passes", type=int, default=None, metavar="N",
                    help="measure each kernel and the probe in N separate passes over all benchmarks, whose rounds "
                         f"the gate pools (default: {GATE_PASSES} with --quantbench-save or --quantbench-compare, "
                         "else 1)")
    group.addoption("--quantbench-windows", type=int, default=None, metavar="N", dest="quantbench_windows",
                    help="deprecated alias of --quantbench-passes")
    group.addoption("--quantbench-storage", default=None, metavar="DIR",
                    help="where stored runs live (default: .quantbench under the rootdir)")
    group.addoption("--quantbench-builtins", default=None, choices=BUILTIN_MODES, metavar="MODE",
                    help="the package's own kernels when the project registers kernels: 'compare' (default: "
                         "benchmarked beside the registered kernels of the same format and op, not tested), 'test' "
                         "(all tested and benchmarked, as when no kernels are registered) or 'off'")
    group.addoption("--quantbench-baseline", action="append", default=[], metavar="IMPL",
                    help="add a column to the summary: each kernel's speed over IMPL's (a kernel name, "
                         f"{BUILTIN_NAME!r} or 'reference') on the same format, op and size (repeatable: "
                         "the first one measured for a row is used)")
    group.addoption("--quantbench-benchmark-table", action="store_true", default=False,
                    help="also print pytest-benchmark's own table (off under --quantbench)")
    parser.addini("quantbench_builtins", default="compare",
                  help="default of --quantbench-builtins: compare, test or off")
    parser.addini("quantbench_kernels", type="linelist", default=[],
                  help="module:attribute lines naming pytest_quantbench.Kernel objects (or lists of them)")
    parser.addini("quantbench_gguf", type="paths", default=[], help="GGUF files for the conformance tests")


@dataclass(frozen=True)
class Size:
    """A benchmark size: ``rows`` x ``cols`` weights (cols is a multiple of the smallest block, 32
    weights; a format whose blocks do not divide it skips the size)."""

    label: str
    rows: int
    cols: int

    @property
    def weights(self) -> int:
        return self.rows * self.cols

    def cols_for(self, fmt: qk.BlockFormat) -> int:
        """Weights per row for ``fmt``: ``cols``, or one block where cols is 0 (the "one-block" shape)."""
        return self.cols or fmt.block_weights

    def unfit_for(self, fmt: qk.BlockFormat) -> str | None:
        """Why ``fmt`` cannot be benchmarked at this size (its rows are not whole blocks), or None."""
        if self.cols % fmt.block_weights:
            return (f"size {self.label}: rows of {self.cols} weights are not whole {fmt.name} blocks "
                    f"({fmt.block_weights} weights each)")
        return None


def enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("quantbench"))


# The options that store, compare or gate: given without --quantbench they would do nothing, and
# a CI line that forgot the flag would pass with the gate it asked for never run.
GATE_OPTIONS = ("--quantbench-save", "--quantbench-compare", "--quantbench-ab", "--quantbench-fail-on")


def refuse_without_quantbench(config: pytest.Config) -> None:
    """Refuse a :data:`GATE_OPTIONS` option given without ``--quantbench`` (pytest.UsageError naming
    it). The others (sizes, files, storage) are left alone: a project may keep them in its ini's
    ``addopts`` for the runs that add ``--quantbench``."""
    for flag in GATE_OPTIONS:
        if config.getoption(flag.lstrip("-").replace("-", "_")) not in (None, []):
            raise pytest.UsageError(f"{flag} needs --quantbench: without it no kernel is measured, so nothing is "
                                    "stored, compared or gated (add --quantbench to the command line)")


def _parse_sizes(spec: str, option: str, named: dict[str, tuple[int, int]], limit: int) -> list[Size]:
    """``spec``'s comma-separated ROWSxCOLS and ``named`` items (pytest.UsageError naming a bad one)."""
    import quantbench_kernels as qk

    out = []
    block = min(f.block_weights for f in qk.formats())  # the smallest block: every COLS is a multiple
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item in named:
            out.append(Size(item, *named[item]))
            continue
        rows, _, cols = item.lower().partition("x")
        if not (rows.isdigit() and cols.isdigit()) or int(cols) % block or int(cols) < 1 or int(rows) < 1:
            raise pytest.UsageError(
                f"{option}: {item!r} is neither {' nor '.join(named)} nor ROWSxCOLS "
                f"with ROWS at least 1 and COLS a positive multiple of {block} (the smallest block; a "
                "format whose blocks do not divide COLS skips that size)"
            )
        if int(rows) * int(cols) > limit:
            raise pytest.UsageError(f"{option}: {item!r} is {int(rows) * int(cols)} weights, more than "
                                    f"the {limit} it may use")
        out.append(Size(item, int(rows), int(cols)))
    return out


def sizes(config: pytest.Config) -> list[Size]:
    return _parse_sizes(config.getoption("quantbench_sizes") or DEFAULT_SIZES, "--quantbench-sizes", NAMED_SIZES,
                        MAX_SIZE_WEIGHTS)


def shapes(config: pytest.Config) -> list[Size]:
    """The fixed shapes of ``--quantbench-shapes`` (:data:`SHAPE_SETS`' names expanded), each once."""
    spec = config.getoption("quantbench_shapes")
    spec = SHAPE_SETS["default"] if spec is None else spec
    expanded = ",".join(SHAPE_SETS.get(item.strip(), item) for item in spec.split(","))
    if not expanded.strip(", ") and spec.strip() not in SHAPE_SETS:
        raise pytest.UsageError(f"--quantbench-shapes: {spec!r} names no shape (give 'none' to check none)")
    found = _parse_sizes(expanded, "--quantbench-shapes", NAMED_SHAPES, MAX_SHAPE_WEIGHTS)
    return list({s.label: s for s in found}.values())


def passes(config: pytest.Config) -> int:
    """Passes over the benchmarks: --quantbench-passes, else GATE_PASSES for a stored or gated run."""
    n = config.getoption("quantbench_passes")
    old = config.getoption("quantbench_windows")
    if old is not None:
        if n is not None:
            raise pytest.UsageError("give --quantbench-passes only: --quantbench-windows is its deprecated alias")
        n = old
    if n is None:
        gating = config.getoption("quantbench_save") or config.getoption("quantbench_compare")
        return GATE_PASSES if gating else 1
    if not 1 <= n <= MAX_PASSES:
        raise pytest.UsageError(f"--quantbench-passes must be from 1 to {MAX_PASSES}, got {n}")
    return n


def keep(config: pytest.Config) -> int:
    """How many runs a stored baseline keeps (--quantbench-keep, else KEEP_RUNS)."""
    n = config.getoption("quantbench_keep")
    if n is None:
        return KEEP_RUNS
    if not 1 <= n <= MAX_KEEP_RUNS:
        raise pytest.UsageError(f"--quantbench-keep must be from 1 to {MAX_KEEP_RUNS}, got {n}")
    return n


def builtins_mode(config: pytest.Config) -> str:
    """--quantbench-builtins, else the quantbench_builtins ini key."""
    mode = config.getoption("quantbench_builtins") or config.getini("quantbench_builtins").strip()
    if mode not in BUILTIN_MODES:
        raise pytest.UsageError(f"quantbench_builtins: {mode!r} is not one of {', '.join(BUILTIN_MODES)}")
    return mode


def ab_names(config: pytest.Config) -> list[tuple[str, str]]:
    """The (OLD, NEW) kernel names of each --quantbench-ab OLD,NEW."""
    out = []
    for value in config.getoption("quantbench_ab") or []:
        old, sep, new = (part.strip() for part in value.partition(","))
        if not sep or not old or not new or "," in new or old == new:
            raise pytest.UsageError(f"--quantbench-ab: {value!r} is not OLD,NEW: two different registered kernel "
                                    "names separated by a comma")
        out.append((old, new))
    return out


def warn_at_start(config: pytest.Config) -> None:
    """Say once, at start-up, which deprecated options this run uses; refuse a GGUF path given as
    a separate word that moves pytest's rootdir (:func:`gguf_separate_word`)."""
    if config.getoption("quantbench_windows") is not None:
        config.issue_config_time_warning(
            pytest.PytestDeprecationWarning("--quantbench-windows is deprecated: use --quantbench-passes"),
            stacklevel=2,
        )
    gguf_separate_word(config)


def gguf_separate_word(config: pytest.Config) -> None:
    """Refuse ``--quantbench-gguf PATH`` (two words) with a PATH outside the folder pytest was
    started in (pytest.UsageError saying to write ``=``). pytest picks its rootdir and ini file
    before plugins add their options, so it takes that PATH for a test path: the rootdir moves to
    a folder above both, where the project's ini (and the kernels it registers) and its tests are
    not found, and the run would test the built-ins alone and pass. ``--quantbench-gguf=PATH`` is
    one word that pytest leaves alone; a PATH inside the folder cannot move the rootdir."""
    args = list(config.invocation_params.args)
    invoked = Path(config.invocation_params.dir).resolve()
    for flag, value in zip(args, args[1:], strict=False):
        if flag != "--quantbench-gguf":
            continue
        path = (invoked / value).resolve()
        if path != invoked and invoked not in path.parents:
            raise pytest.UsageError(f"--quantbench-gguf {value}: given as two words, pytest takes a path outside "
                                    f"{invoked} for a test path and moves its rootdir (to {config.rootpath}: your "
                                    f"ini file and tests are not found from there): write --quantbench-gguf={value}")


def validate(config: pytest.Config) -> None:
    """Refuse bad option values before anything is collected or measured (pytest.UsageError naming
    the option, the value and the rule), and prove the storage folder usable when a run will be
    saved or compared."""
    from . import storage

    sizes(config)
    shapes(config)
    passes(config)
    keep(config)
    ab = ab_names(config)
    builtins_mode(config)
    save = config.getoption("quantbench_save")
    compare = config.getoption("quantbench_compare")
    fail_pct = config.getoption("quantbench_fail_on")
    if save == "latest":
        raise pytest.UsageError("--quantbench-save: 'latest' is not a usable run name: --quantbench-compare "
                                "reads it as the newest stored run, whatever its name")
    if save is not None and not storage.valid_name(save):
        raise pytest.UsageError(f"--quantbench-save: {save!r} is not a usable run name ({storage.NAME_RULE})")
    if compare is not None and compare != "latest" and not storage.valid_name(compare):
        raise pytest.UsageError(f"--quantbench-compare: {compare!r} is not a stored run's name ({storage.NAME_RULE})")
    if fail_pct is not None:
        if not (math.isfinite(fail_pct) and 0 <= fail_pct <= MAX_FAIL_PCT):
            raise pytest.UsageError(f"--quantbench-fail-on must be a percentage from 0 to {MAX_FAIL_PCT:g}, "
                                    f"got {fail_pct!r}")
        if compare is None and not ab:
            raise pytest.UsageError("--quantbench-fail-on needs a baseline to compare with: --quantbench-compare "
                                    "[NAME] (a stored run) or --quantbench-ab OLD,NEW (a kernel in this run)")
    if save is not None or compare is not None:
        directory = storage_dir(config)
        try:
            storage.prepare_directory(directory, writable=save is not None)
        except OSError as err:
            raise pytest.UsageError(f"--quantbench-storage: {directory} cannot hold stored runs: {err}") from None
    warn_at_start(config)


def gguf_paths(config: pytest.Config) -> list[Path]:
    cli = [Path(p) for p in config.getoption("quantbench_gguf") or []]
    return cli + [Path(p) for p in config.getini("quantbench_gguf")]


def storage_dir(config: pytest.Config) -> Path:
    opt = config.getoption("quantbench_storage")
    return Path(opt) if opt else config.rootpath / ".quantbench"


def in_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def using_xdist(config: pytest.Config) -> bool:
    return in_xdist_worker(config) or bool(getattr(config.option, "numprocesses", None))
