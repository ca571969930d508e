"""The soak, shortened for CI (`make soak` runs it for 10 minutes with 64 clients), and its judge: a run passes
only with every answer the idle server's, no 5xx, and memory, fds and threads flat; the checks themselves are
shown to fail on a changed number, a leak and a lost fd."""

import importlib.util
import json
import subprocess
import sys

from conftest import BINARY, MODELS, ROOT

spec = importlib.util.spec_from_file_location("soak", ROOT / "scripts" / "soak.py")
soak = importlib.util.module_from_spec(spec)
sys.modules["soak"] = soak  # dataclasses look their module up by name
spec.loader.exec_module(soak)


def test_a_short_soak_passes(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "soak.py"), "--binary", str(BINARY), "--models", str(MODELS),
         "--clients", "16", "--duration", "45", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["failures"] == []
    for kind, row in report["kinds"].items():
        assert row["answered"] > 0, kind
    assert report["kinds"]["repeat"]["cache_hits"] > 0
    assert (tmp_path / "samples.csv").read_text().count("\n") >= 10  # header, idle, ≥ 8 under load, settled


def test_numbers_compare_as_the_server_wrote_them():
    a = b'{"id": "lp-1", "created": 1, "model": "m", "data": [{"cached": false, "logprob": -1.2345678901234567}]}'
    same = b'{"id": "lp-2", "created": 2, "model": "m", "data": [{"cached": true, "logprob": -1.2345678901234567}]}'
    next_float = b'{"id": "lp-1", "created": 1, "model": "m", "data": [{"cached": false, "logprob": -1.2345678901234569}]}'
    assert soak.canonical(a) == soak.canonical(same)
    assert soak.canonical(a) != soak.canonical(next_float)  # one ulp apart
    assert soak.canonical(b'{"x": 0.0}') != soak.canonical(b'{"x": -0.0}')
    assert soak.canonical(b'{"x": 1.0}') != soak.canonical(b'{"x": 1}')


def samples(rss_mib, fds=10, threads=7, settled_fds=10):
    rows = [{"t_s": 0, "phase": "idle", "rss_kib": rss_mib[0] * 1024, "fds": 10, "threads": 7}]
    rows += [{"t_s": 5 * (i + 1), "phase": "load", "rss_kib": r * 1024, "fds": fds, "threads": threads}
             for i, r in enumerate(rss_mib)]
    rows.append({"t_s": 5 * len(rss_mib) + 15, "phase": "settled", "rss_kib": rss_mib[-1] * 1024,
                 "fds": settled_fds, "threads": threads})
    return rows


def judge(rows, kinds=None):
    kinds = kinds or {"score": {"answered": 5, "server_errors": 0, "mismatches": 0, "connection_errors": 0,
                                "unexpected_status": 0, "cache_hits": 0},
                      "repeat": {"answered": 2, "server_errors": 0, "mismatches": 0, "connection_errors": 0,
                                 "unexpected_status": 0, "cache_hits": 1}}
    return soak.judge(kinds, rows, warmup_s=10, rss_bound_kib=16 * 1024, fresh_repeat_misses=0, idle_changes=[],
                      exit_code=0)


def test_the_judge_passes_a_flat_run_and_fails_leaks():
    assert judge(samples([700, 702, 701, 702, 702, 701])) == []
    leak = judge(samples([700, 702, 706, 710, 714, 719]))  # 4 MiB per sample: 17 MiB above the warm-up's peak
    assert any("resident memory rose" in f for f in leak), leak
    assert any("open fds 11 after the load, 10 before" in f for f in judge(samples([700] * 6, settled_fds=11)))
    five_xx = {"score": {"answered": 5, "server_errors": 1, "mismatches": 0, "connection_errors": 0,
                         "unexpected_status": 0, "cache_hits": 0},
               "repeat": {"answered": 1, "server_errors": 0, "mismatches": 0, "connection_errors": 0,
                          "unexpected_status": 0, "cache_hits": 0}}
    assert judge(samples([700] * 6), five_xx) == ["1 5xx answers", "no cache hit was seen"]
