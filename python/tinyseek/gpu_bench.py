"""Kernel benchmarks for the device machine, each against a baseline timed in the same run.

    python -m tinyseek.gpu_bench                 # on a GPU: the issues' shapes and targets
    python -m tinyseek.gpu_bench --device cpu --quick   # the same code path, small shapes, CPU

Prints one Markdown table (op, shape, ours, baseline, ratio, target) and writes it as JSON with
--json. Times are CUDA-event medians on a GPU and wall-clock medians on the CPU. The rows:

- fp8_gemm_nt (1x128 / 128x128 scales, promotion in fp32) in TFLOP/s at 4096 x 7168 x 16384 and
  DeepSeek-V3's projection shapes, against a bf16 matmul and against torch._scaled_mm with the
  same blockwise scales where this torch supports them (else row-wise scales);
- moe_permute + moe_unpermute bandwidth against a device copy of the same bytes (target 80%);
- grouped_gemm against a per-expert loop of matmul and one dense matmul of the same FLOPs;
- mla_decode (absorbed, paged latent cache) against decompress-then-SDPA;
- rms_norm against the torch composition.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import tinyseek  # noqa: F401  (registers torch.ops.tinyseek)

ops = torch.ops.tinyseek


def timeit(fn, device: torch.device, iters: int, warmup: int = 2) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize()
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Table:
    def __init__(self):
        self.rows = []

    def add(self, op, shape, ours, base_name, base, unit, higher_is_better, target=""):
        ratio = (ours / base) if higher_is_better else (base / ours)
        self.rows.append(dict(op=op, shape=shape, ours=ours, baseline=base_name, base=base, unit=unit,
                              ratio=ratio, target=target))
        print(f"  {op} {shape}: {ours:.4g} vs {base_name} {base:.4g} {unit} -> {ratio:.2f}x", flush=True)

    def markdown(self) -> str:
        out = ["| op | shape | tinyseek | baseline | baseline value | unit | ratio | target |",
               "|---|---|---:|---|---:|---|---:|---|"]
        for r in self.rows:
            out.append(f"| {r['op']} | {r['shape']} | {r['ours']:.4g} | {r['baseline']} | {r['base']:.4g} | {r['unit']} "
                       f"| {r['ratio']:.2f}x | {r['target']} |")
        return "\n".join(out)


def bench_fp8_gemm(t: Table, dev, quick, iters):
    shapes = [(256, 256, 512)] if quick else [(4096, 7168, 16384), (4096, 2112, 7168), (4096, 24576, 1536),
                                              (4096, 7168, 2048), (4096, 4096, 7168)]
    for M, N, K in shapes:
        a = torch.randn(M, K, device=dev)
        b = torch.randn(N, K, device=dev)
        aq, sa = ops.fp8_quantize_tilewise(a)
        bq, sb = ops.fp8_quantize_blockwise(b)
        out_dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
        flops = 2.0 * M * N * K
        ours = timeit(lambda: ops.fp8_gemm_nt(aq, sa, bq, sb, out_dtype), dev, iters)
        a16, b16 = a.to(torch.bfloat16), b.to(torch.bfloat16)
        bf16 = timeit(lambda: a16 @ b16.T, dev, iters)
        shape = f"{M}x{N}x{K}"
        t.add("fp8_gemm_nt", shape, flops / ours / 1e12, "bf16 matmul", flops / bf16 / 1e12, "TFLOP/s", True,
              ">= 1100 TFLOP/s (H800 DeepGEMM 1358-1550)" if shape == "4096x7168x16384" else "")
        if dev.type != "cuda" or not hasattr(torch, "_scaled_mm"):
            continue
        # torch._scaled_mm wants B column-major; blockwise scales where supported, else row-wise.
        bt = bq.T
        for label, scales in [("torch._scaled_mm blockwise", (sa, sb.T.contiguous().T)),
                              # timing only: row-wise scales of the same shapes, not the same numbers
                              ("torch._scaled_mm rowwise", (sa.amax(1, keepdim=True).float(),
                                                            sb.amax(1).repeat_interleave(128)[:N].reshape(1, N).float()))]:
            try:
                fn = lambda: torch._scaled_mm(aq, bt, scale_a=scales[0], scale_b=scales[1], out_dtype=torch.bfloat16)
                fn()
                base = timeit(fn, dev, iters)
            except Exception as e:  # this torch does not take these scales
                print(f"  ({label} unavailable: {type(e).__name__}: {str(e).splitlines()[0][:120]})")
                continue
            t.add("fp8_gemm_nt", shape, flops / ours / 1e12, label, flops / base / 1e12, "TFLOP/s", True)
            break


def bench_moe(t: Table, dev, quick, iters):
    T, H, E, K = (1024, 256, 8, 2) if quick else (32768, 7168, 256, 8)
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    x = torch.randn(T, H, device=dev, dtype=dt)
    ids = torch.rand(T, E, device=dev).topk(K, dim=1).indices  # K distinct experts per token
    w = torch.rand(T, K, device=dev)

    def pair():
        xs, s2t, offs = ops.moe_permute(x, ids, E)
        return ops.moe_unpermute(xs, s2t, w)

    ours = timeit(pair, dev, iters)
    moved = x.element_size() * (T * H + 2 * T * K * H + T * H)  # read x, write+read x_sorted, write y
    big = torch.empty(T * K * H, device=dev, dtype=dt)
    dst = torch.empty_like(big)
    copy = timeit(lambda: dst.copy_(big), dev, iters)
    copy_bw = 2 * big.numel() * big.element_size() / copy
    t.add("moe_permute+unpermute", f"T{T} H{H} E{E} K{K}", moved / ours / 1e9, "device copy", copy_bw / 1e9, "GB/s",
          True, ">= 80% of copy bandwidth")

    M, N, Hh, Eg = (1024, 128, 128, 8) if quick else (32768, 4096, 7168, 32)
    xs = torch.randn(M, Hh, device=dev, dtype=dt)
    wg = torch.randn(Eg, N, Hh, device=dev, dtype=dt)
    offs = torch.arange(Eg + 1, device=dev, dtype=torch.long) * (M // Eg)
    ours = timeit(lambda: ops.grouped_gemm(xs, wg, offs), dev, iters)
    bounds = offs.tolist()
    loop = timeit(lambda: [xs[bounds[e]:bounds[e + 1]] @ wg[e].T for e in range(Eg)], dev, iters)
    wd = wg[0]
    dense = timeit(lambda: xs @ wd.T, dev, iters)
    flops = 2.0 * M * N * Hh
    shape = f"M{M} E{Eg} N{N} H{Hh}"
    t.add("grouped_gemm", shape, flops / ours / 1e12, "per-expert matmul loop", flops / loop / 1e12, "TFLOP/s", True)
    t.add("grouped_gemm", shape, flops / ours / 1e12, "one dense matmul", flops / dense / 1e12, "TFLOP/s", True,
          ">= 0.9x dense")


def bench_mla(t: Table, dev, quick, iters):
    # The baseline materializes K and V for every head: B = 16 keeps it to ~5 GB on the GPU.
    B, H, dc, dr, dv, ctx, bs = (2, 16, 512, 64, 128, 256, 64) if quick else (16, 128, 512, 64, 128, 4096, 64)
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    nb = (ctx + bs - 1) // bs
    cache = torch.randn(B * nb, bs, 1, dc + dr, device=dev, dtype=dt)
    table = torch.arange(B * nb, device=dev, dtype=torch.int32).view(B, nb)
    lens = torch.full((B,), ctx, device=dev, dtype=torch.int32)
    q = torch.randn(B, 1, H, dc + dr, device=dev, dtype=dt)
    scale = (128 + dr) ** -0.5
    ours = timeit(lambda: ops.mla_decode(q, cache, table, lens, dc, scale), dev, iters)
    w_uk = torch.randn(H, 128, dc, device=dev, dtype=dt) * dc ** -0.5
    w_uv = torch.randn(H, dv, dc, device=dev, dtype=dt) * dc ** -0.5
    q_nope = torch.randn(B, H, 1, 128, device=dev, dtype=dt)
    q_rope = torch.randn(B, H, 1, dr, device=dev, dtype=dt)

    def decompress():
        lat = cache.view(B, nb * bs, dc + dr)[:, :ctx]
        c, kr = lat[..., :dc], lat[..., dc:]
        k = torch.einsum("btc,hdc->bhtd", c, w_uk)
        v = torch.einsum("btc,hdc->bhtd", c, w_uv)
        k = torch.cat([k, kr.unsqueeze(1).expand(B, H, ctx, dr)], -1)
        return torch.nn.functional.scaled_dot_product_attention(torch.cat([q_nope, q_rope], -1), k, v, scale=scale)

    base = timeit(decompress, dev, iters)
    cache_bytes = B * ctx * (dc + dr) * cache.element_size()
    t.add("mla_decode", f"B{B} H{H} ctx{ctx}", ours * 1e3, "decompress + SDPA", base * 1e3, "ms", False, ">= 4x")
    print(f"  mla_decode reads the cache at {cache_bytes / ours / 1e9:.1f} GB/s", flush=True)


def bench_rms_norm(t: Table, dev, quick, iters):
    R, C = (1024, 1024) if quick else (16384, 7168)
    dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    x = torch.randn(R, C, device=dev, dtype=dt)
    wt = torch.randn(C, device=dev, dtype=dt)
    ours = timeit(lambda: ops.rms_norm(x, wt, 1e-6), dev, iters)
    base = timeit(lambda: (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)).to(dt) * wt,
                  dev, iters)
    t.add("rms_norm", f"{R}x{C}", ours * 1e3, "torch composition", base * 1e3, "ms", False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="small shapes (a smoke test of this script)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--only", default="fp8,moe,mla,rms_norm")
    a = p.parse_args(argv)
    dev = torch.device(a.device)
    torch.manual_seed(0)
    t = Table()
    benches = {"fp8": bench_fp8_gemm, "moe": bench_moe, "mla": bench_mla, "rms_norm": bench_rms_norm}
    failed = []
    for name in a.only.split(","):
        print(f"{name}:", flush=True)
        try:
            benches[name](t, dev, a.quick, a.iters)
        except Exception as e:  # one broken benchmark must not hide the others
            failed.append(name)
            print(f"  {name} failed: {type(e).__name__}: {e}", flush=True)
    print()
    print(t.markdown())
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": str(dev), "rows": t.rows, "failed": failed}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
