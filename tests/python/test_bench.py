"""The benchmark survives its comparison point: when llama-cpp-python crashes, the crash and its signal are in
the table and every other row is still printed, saved and charted (a real, shortened bench run)."""

import json
import subprocess
import sys

from conftest import MODELS, ROOT


def test_a_crashing_comparison_point_is_reported_and_the_rest_is_kept(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--model", str(MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"),
         "--items", "2", "--rounds", "1", "--concurrency", "1", "--arena-prompts", "1",
         "--llama-cpp-python", str(ROOT / "tests" / "python" / "fixtures" / "segv-python"), "--lcp-items", "1",
         "--json", str(tmp_path / "bench.json"), "--chart", str(tmp_path / "bench.png")],
        capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "crashed with SIGSEGV (signal 11)" in out.stdout
    for mode in ("engine alone", "HTTP c=1", "HTTP batch of 16", "cache hits, c=1"):
        assert f"| {mode} |" in out.stdout, mode
    results = json.loads((tmp_path / "bench.json").read_text())
    assert results["llama_cpp_python"] == {"items": 1, "failed": "crashed with SIGSEGV (signal 11)"}
    assert {r["mode"] for r in results["rows"]} >= {"engine alone", "HTTP c=1", "cache hits, c=1"}
    assert all(r["scored_per_s"] > 0 for r in results["rows"])
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
