#!/usr/bin/env python3
"""PyTorch SDPA on the decode and prefill shapes of bench/gpu_bench.

The baseline beside latentkv's paged attention (tools/gpu_check.sh prints the
two side by side, joined by case name):
  decode/d{128,64}/bf16/b{32,64}/ctx{4096,8192}: one query row per sequence,
      32 query heads over 8 KV heads (GQA), bf16. torch reads a contiguous
      KV cache [batch, 8, ctx, d] (no page table), which favours torch.
  prefill/d{128,64}/bf16/q2048/ctx2048: one sequence, causal.
fp8 KV has no SDPA path, so those cases are absent here.
GB/s counts the K and V bytes read per call (latentkv also counts its 4-byte
slot positions); times are the median of 7 repetitions, each of enough calls
to take about 25 ms, timed with torch.cuda.Event after 3 warm-up calls. The
device-to-device copy bandwidth (bytes read + written) is measured in the
same run as the HBM reference.

Usage (on the GPU machine, the python3 that has torch):
  python3 tools/bench/sdpa_bench.py [--out sdpa_bench.json] [--small]
Exits 0 with a message (and {"skipped": reason} in --out) when torch or a
CUDA device is missing; exits 1 if a case failed.
"""
import argparse
import json
import statistics
import sys


def write(path, obj):
    if path:
        with open(path, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")


def time_ms(torch, fn, reps=7):
    """Median milliseconds of one call of fn (see the module docstring)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    calls = max(1, min(1000, int(25.0 / max(start.elapsed_time(end), 1e-3))))
    times = []
    for _ in range(reps):
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def sdpa_call(torch, q, k, v, causal, variant):
    """A closure running SDPA with GQA natively, or on expanded K/V."""
    sdpa = torch.nn.functional.scaled_dot_product_attention
    if variant == "enable_gqa":
        return lambda: sdpa(q, k, v, is_causal=causal, enable_gqa=True)
    group = q.shape[1] // k.shape[1]
    ke = k.repeat_interleave(group, dim=1)
    ve = v.repeat_interleave(group, dim=1)
    return lambda: sdpa(q, ke, ve, is_causal=causal)


def run_case(torch, name, batch, ctx, q_rows, d, heads=32, kv_heads=8):
    dev, dt = "cuda", torch.bfloat16
    q = torch.randn(batch, heads, q_rows, d, device=dev, dtype=dt)
    k = torch.randn(batch, kv_heads, ctx, d, device=dev, dtype=dt)
    v = torch.randn(batch, kv_heads, ctx, d, device=dev, dtype=dt)
    causal = q_rows > 1
    out, variant = None, None
    for variant in ("enable_gqa", "expanded"):
        try:
            fn = sdpa_call(torch, q, k, v, causal, variant)
            out = fn()
            break
        except (TypeError, RuntimeError) as e:  # no enable_gqa in this torch
            print(f"{name}: {variant} failed: {e}", file=sys.stderr)
    if out is None:
        raise RuntimeError("no SDPA variant ran")
    finite = bool(torch.isfinite(out).all().item())
    ms = time_ms(torch, fn)
    kv_bytes = 2.0 * batch * kv_heads * ctx * d * 2
    visible = sum(ctx - q_rows + i + 1 for i in range(q_rows))
    row = {
        "name": name,
        "batch": batch,
        "ctx": ctx,
        "q_rows": q_rows,
        "head_dim": d,
        "variant": variant,
        "ms": ms,
        "bytes": kv_bytes,
        "gbs": kv_bytes / (ms * 1e-3) / 1e9,
        "ok": finite,
    }
    if q_rows > 1:
        row["tflops"] = 4.0 * d * heads * visible * batch / (ms * 1e-3) / 1e12
    del q, k, v, out, fn
    torch.cuda.empty_cache()
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="", help="JSON results file")
    ap.add_argument("--small", action="store_true", help="tiny shapes")
    args = ap.parse_args()
    try:
        import torch
    except ImportError as e:
        msg = f"torch is not importable ({e})"
        print(f"sdpa_bench: skipped: {msg}")
        write(args.out, {"skipped": msg})
        return 0
    if not torch.cuda.is_available():
        msg = f"torch {torch.__version__} sees no CUDA device"
        print(f"sdpa_bench: skipped: {msg}")
        write(args.out, {"skipped": msg})
        return 0

    res = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cases": [],
        "errors": [],
    }
    n = (256 << 20) if not args.small else (1 << 20)
    src = torch.randn(n, device="cuda", dtype=torch.float32)
    dst = torch.empty_like(src)
    copy_ms = time_ms(torch, lambda: dst.copy_(src))
    res["hbm_copy_gbs"] = 2.0 * src.numel() * 4 / (copy_ms * 1e-3) / 1e9
    del src, dst
    torch.cuda.empty_cache()
    print(f"device {res['device']}, torch {res['torch']}, "
          f"copy bandwidth {res['hbm_copy_gbs']:.0f} GB/s")

    shapes = [(2, 256), (3, 128)] if args.small else [
        (32, 4096), (32, 8192), (64, 4096), (64, 8192)]
    full = 32 if args.small else 128
    prefill = 64 if args.small else 2048
    cases = []
    for d in (full, full // 2):
        for batch, ctx in shapes:
            cases.append((f"decode/d{d}/bf16/b{batch}/ctx{ctx}",
                          batch, ctx, 1, d))
    for d in (full, full // 2):
        cases.append((f"prefill/d{d}/bf16/q{prefill}/ctx{prefill}",
                      1, prefill, prefill, d))
    for name, batch, ctx, q_rows, d in cases:
        try:
            row = run_case(torch, name, batch, ctx, q_rows, d)
        except Exception as e:  # record and go on with the next case
            res["errors"].append(f"{name}: {e}")
            print(f"ERROR {name}: {e}", file=sys.stderr)
            torch.cuda.empty_cache()
            continue
        row["pct_hbm"] = 100.0 * row["gbs"] / res["hbm_copy_gbs"]
        res["cases"].append(row)
        print(f"{name:36s} {row['ms']:9.4f} ms {row['gbs']:7.0f} GB/s "
              f"{row['pct_hbm']:5.1f}% HBM  {row['variant']}"
              f"{'' if row['ok'] else '  NON-FINITE'}", flush=True)
        write(args.out, res)
    write(args.out, res)
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
