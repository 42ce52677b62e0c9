"""The device benchmark script (python/tinyseek/gpu_bench.py) runs end to end on the CPU with
small shapes, so that the one call on a lent GPU does not fail on a script error."""
import json

from tinyseek import gpu_bench


def test_gpu_bench_quick_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    rc = gpu_bench.main(["--device", "cpu", "--quick", "--iters", "1", "--json", str(out)])
    data = json.loads(out.read_text())
    assert rc == 0 and data["failed"] == [], data
    ops = {r["op"] for r in data["rows"]}
    assert ops == {"fp8_gemm_nt", "moe_permute+unpermute", "grouped_gemm", "mla_decode", "rms_norm"}
    assert all(r["ours"] > 0 and r["base"] > 0 and r["ratio"] > 0 for r in data["rows"])
