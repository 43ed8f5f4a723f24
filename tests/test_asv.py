"""asv: the suite follows the registry, and a real run publishes graphs that a browser shows."""

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import quantbench_kernels as qk

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"
# asv's pages load jQuery, flot and bootstrap from CDNs, which this machine cannot reach; .ci/run
# installs the same libraries from the npm registry here, and the browser is served those instead.
WEB_LIBS = ROOT / ".asv" / "web" / "node_modules"
CDNJS_PACKAGES = {"flot": "flot", "stupidtable": "stupid-table-plugin", "blueimp-md5": "blueimp-md5"}


def local_asset(url: str) -> Path | None:
    """The npm-installed file that stands for a CDN URL of asv's pages (None if there is none)."""
    candidates = []
    if m := re.match(r"https://code\.jquery\.com/jquery-[\d.]+(\.min)?\.js$", url):
        candidates.append(WEB_LIBS / "jquery" / "dist" / f"jquery{m.group(1) or ''}.js")
    elif m := re.match(r"https://cdn\.jsdelivr\.net/npm/([^@/]+)@[^/]+/(.+)$", url):
        candidates.append(WEB_LIBS / m.group(1) / m.group(2))
    elif m := re.match(r"https://cdnjs\.cloudflare\.com/ajax/libs/([^/]+)/[^/]+/(.+)$", url):
        package = WEB_LIBS / CDNJS_PACKAGES.get(m.group(1), m.group(1))
        name = m.group(2)
        candidates += [package / name, package / name.replace(".min.js", ".js"), package / Path(name).name,
                       package / Path(name).name.replace(".min.js", ".js")]
    return next((c for c in candidates if c.is_file()), None)


def test_asv_suite_covers_every_registered_format_and_op():
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import throughput as t
    finally:
        sys.path.remove(str(ROOT))
    assert t.Dequantize.params[0] == [f.name for f in qk.formats()]
    assert t.Quantize.params[0] == [f.name for f in qk.formats() if f.numba.quantize is not None]
    assert "Q8_K" in t.Quantize.params[0]  # the activation quantizer
    assert t.Gemv.params[0] == t.VecDot.params[0] == [f.name for f in qk.formats("gemv")]
    assert t.Gemv.params[1] == ["cache", "16M", "2048x640", "256x256"]
    assert not t.fits("Q4_K", "2048x640") and t.fits("Q5_0", "2048x640")  # rows of 640: 32-weight blocks only
    for cls in (t.Dequantize, t.Quantize, t.Gemv, t.VecDot):
        assert cls.track_gweights_per_s.unit == "G weights/s" and cls.track_roofline_fraction.unit
        # asv keys a setup_cache by where it is written: an inherited one would be shared by the classes.
        assert "setup_cache" in vars(cls)


def test_asv_dequantize_reuses_its_out_buffer_only_for_the_same_shape():
    # "cache" (256 x 4096) and "256x256" have the same rows: a buffer kept by rows alone was
    # handed to the second and asv's setup_cache failed.
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import throughput as t
    finally:
        sys.path.remove(str(ROOT))
    bench = t.Dequantize()
    for size in ("cache", "256x256", "2048x640", "cache"):
        rows, cols = t.SIZES[size]
        args = bench.inputs("Q4_0", rows, cols)
        out = bench.kernel("Q4_0", args)
        assert out.shape == (rows, cols)
        np.testing.assert_array_equal(out, qk.dequantize(args[0], "Q4_0"))


def test_asv_decode_step_beside_llama_cpps_runs_its_kernels_on_the_same_matrices(monkeypatch):
    pytest.importorskip("ggml", reason="ggml-python (a test extra) is not installed")
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks import throughput as t
    finally:
        sys.path.remove(str(ROOT))
    assert "setup_cache" in vars(t.LlamaCppDecodeStep)
    rng = np.random.default_rng(2)
    step = [(qk.quantize(rng.standard_normal((rows, cols)).astype(np.float32), fmt), fmt, cols)
            for fmt, rows, cols in [("Q5_0", 8, 64), ("Q4_K", 4, 256)]]
    theirs = t.LlamaCppDecodeStep()
    theirs.setup(step, 1)
    outs = []
    real = t._llamacpp

    class Recorded:  # llama.cpp's kernels of a format, their gemv's results kept
        def __init__(self, fmt):
            self.gemv = lambda *args: outs.append((fmt, real(fmt).gemv(*args)))

    monkeypatch.setattr(t, "_llamacpp", Recorded)
    theirs.time_decode_step(step, 2)
    assert [fmt for fmt, _ in outs] == ["Q5_0", "Q4_K"]
    for (raw, fmt, cols), (_, out) in zip(step, outs, strict=True):
        ours = qk.gemv(raw, theirs.xs[cols], fmt)
        np.testing.assert_allclose(out, ours, rtol=1e-4, atol=1e-4 * float(np.abs(ours).max()))
    monkeypatch.setattr(t, "_llamacpp", lambda fmt: None)
    with pytest.raises(NotImplementedError, match="llama.cpp's kernels are not reachable"):
        theirs.setup(step, 1)


def _suite_under(**env: str) -> subprocess.CompletedProcess:
    code = "from benchmarks import throughput as t; print(','.join(t.SIZES), ','.join(t.Gemv.params[0]))"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **env))


def test_a_smoke_run_keeps_the_sizes_and_formats_named_and_refuses_unknown_ones():
    kept = _suite_under(QUANTBENCH_ASV_SIZES="256x256,cache", QUANTBENCH_ASV_FORMATS="Q8_K,Q4_K,Q4_0")
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.split() == ["cache,256x256", "Q4_0,Q4_K"]  # the suite's order; Q8_K has no gemv
    bad = _suite_under(QUANTBENCH_ASV_SIZES="cache,1G")
    assert bad.returncode != 0 and "QUANTBENCH_ASV_SIZES names unknown ['1G']" in bad.stderr
    bad = _suite_under(QUANTBENCH_ASV_FORMATS="Q4_0,Q9_9")
    assert bad.returncode != 0 and "QUANTBENCH_ASV_FORMATS names unknown ['Q9_9']" in bad.stderr


def _require(ok: bool, message: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    _require(path is not None, "Debian's chromium is not installed (.ci/run installs it): cannot check the graphs")
    _require(WEB_LIBS.is_dir(), f"asv's web libraries are not in {WEB_LIBS} (.ci/run installs them with npm)")
    return path


def _asv(args, conf, home, **extra_env):
    env = dict(os.environ, HOME=str(home), **extra_env)  # asv keeps its machine file in $HOME
    cmd = [sys.executable, "-m", "asv", *args, "--config", str(conf)]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.browser
def test_published_asv_graph_shows_data_points_in_chromium(tmp_path):
    chromium = _chromium()
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright (test extra) is not installed")
    from asv import util

    conf = util.load_json(str(ROOT / "asv.conf.json"), js_comments=True)
    conf.update(repo=str(ROOT), benchmark_dir=str(ROOT / "benchmarks"), results_dir=str(tmp_path / "results"),
                html_dir=str(tmp_path / "html"), env_dir=str(tmp_path / "env"))
    conf_path = tmp_path / "asv.conf.json"
    conf_path.write_text(json.dumps(conf))
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    if not head:
        pytest.skip("not a git checkout with a commit: asv has no commit to file results under")
    _asv(["machine", "--yes", "--machine", "quantbench-test"], conf_path, tmp_path)
    # One format at one size is enough to plot a point (the whole grid took minutes of CI).
    _asv(["run", "--python=same", "--quick", "--set-commit-hash", head, "--machine", "quantbench-test",
          "--bench", r"Gemv\.time_gemv"], conf_path, tmp_path, QUANTBENCH_ASV_SIZES="256x256",
         QUANTBENCH_ASV_FORMATS="Q4_K")
    _asv(["publish"], conf_path, tmp_path)
    benchmark = "throughput.Gemv.time_gemv"
    graphs = list((tmp_path / "html" / "graphs").rglob(f"{benchmark}.json"))
    assert graphs, "asv publish wrote no graph data for the benchmark"

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "html"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            missing = []

            def serve_locally(route):
                path = local_asset(route.request.url)
                if path is None:
                    missing.append(route.request.url)
                    route.abort()
                else:
                    route.fulfill(path=str(path))

            def without_integrity(route):
                # The local copies are not byte-identical to the CDN's minified files (npm ships flot
                # unminified), so the pages' subresource-integrity hashes are dropped for this check.
                response = route.fetch()
                body = re.sub(r'\s(integrity|crossorigin)="[^"]*"', "", response.text())
                route.fulfill(response=response, body=body)

            page.route(re.compile(r"^https?://(?!127\.0\.0\.1)"), serve_locally)
            page.route(re.compile(r"^http://127\.0\.0\.1:\d+/(index\.html)?([?#].*)?$"), without_integrity)
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/#{benchmark}")
            # The graph page plots with flot, which keeps the plot object on its placeholder.
            points = page.wait_for_function(
                """() => {
                    const plot = window.$ && $('#main-graph').data('plot');
                    if (!plot) return 0;
                    return plot.getData().reduce((n, s) => n + s.data.filter(p => p[1] !== null).length, 0);
                }""",
                timeout=60_000,
            ).json_value()
            page.screenshot(path=str(tmp_path / "asv-graph.png"))
            browser.close()
            assert not missing, f"no local copy of {missing}"
    finally:
        server.shutdown()
    assert points >= 1, "the published graph shows no data point"
    assert (tmp_path / "asv-graph.png").stat().st_size > 10_000
