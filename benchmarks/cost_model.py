#!/usr/bin/env python3
"""A cost model of a DHO2 mode S step, of a curvature estimate, and of a data-parallel Adam step.

    python3 benchmarks/cost_model.py            # prints the markdown tables BENCHMARKS.md shows
    python3 benchmarks/cost_model.py --svg F    # also draws predicted step time vs P (SVG, no deps)

The model (MLP 784-256-256-10, n = 269,322 float parameters, K = 10, m = 40 Lanczos steps, a new
estimate every T = 800 steps; one rank per core or per machine, one thread each):

  compute    gradient and HVP time proportional to the rank's samples, corrected for the GEMMs'
             efficiency at that batch (bench_mlp_step's GFLOP/s); update time proportional to
             the rank's shard n/P (per-entry costs measured by bench_hvp and bench_fosi_step);
             Lanczos work outside the HVPs proportional to n/P (re-orthogonalisation streams the
             sharded basis); on this 2-core machine P > 2 ranks share the cores: compute × P/2.
  network    collectives in the alpha-beta model, P ranks, s bytes, with the latency of recursive
             halving / doubling (what MPI libraries pick for small messages; the bandwidth term is
             the ring's, optimal for large ones):
               reduce-scatter, all-gather  ceil(log2 P)·alpha + (P-1)/P · s / beta
               all-reduce                  2 × that
             on this machine alpha and beta are fitted to bench_mpi_collectives (np 2, shared memory)
             at 1e3 and 1e5 floats; for clusters they are assumptions (stated below).
  step       Adam:  gradient(B/P) + Adam update(n/P) + RS(n) + AG(n) + AR(5 values)
             DHO2:  gradient(B/P) + FOSI update(n/P) + RS(n) + AG(n) + 2 AR(K + 5 values)
                    + estimate / T, where an estimate is m × [HVP(B/P) + AG(n) + RS(n) + 4 small
                    AR] + the Lanczos work outside the HVPs.
             split: the same DHO2 step on P - 1 trainers with no estimate in it (the curvature rank
                    estimates beside them; non-stalling, so a late estimate costs no time).

What it leaves out: the stop vote's all-reduce (one small collective per step for both), overlap
of communication with computation (none in DHO2 today), and the time-sharing costs of
oversubscription beyond compute × P/2 (context switches inside collectives), which is why it
under-predicts P = 8 on this machine (see the error table).
"""

from __future__ import annotations

import argparse
import math

N = 269_322   # parameters (float)
K = 10        # retained eigenpairs
M = 40        # Lanczos steps per estimate
T = 800       # steps between estimates
CORES = 2     # this machine

# Measured on this machine, one thread (README "Measured here" and BENCHMARKS.md):
GRAD_PER_SAMPLE = 2.03e-3 / 128   # bench_hvp: gradient at batch 128
HVP_PER_SAMPLE = 3.94e-3 / 128    # bench_hvp: exact HVP at batch 128
# bench_mlp_step: GFLOP/s of the MLP step at batch 32 / 128 / 512 (smaller batches run the GEMMs
# less efficiently); per-sample costs at another batch scale by 66 / GFLOP/s there (log-linear
# between the measured batches, constant outside).
GFLOPS_AT = ((32, 45.0), (128, 66.0), (512, 60.0))


def per_sample_factor(batch: float) -> float:
    """Cost per sample at `batch` relative to batch 128."""
    pts = GFLOPS_AT
    if batch <= pts[0][0]:
        g = pts[0][1]
    elif batch >= pts[-1][0]:
        g = pts[-1][1]
    else:
        for (b0, g0), (b1, g1) in zip(pts, pts[1:]):
            if b0 <= batch <= b1:
                w = (math.log(batch) - math.log(b0)) / (math.log(b1) - math.log(b0))
                g = g0 + w * (g1 - g0)
                break
    return 66.0 / g


def gradient_seconds(samples: float) -> float:
    return GRAD_PER_SAMPLE * samples * per_sample_factor(samples)


def hvp_seconds(samples: float) -> float:
    return HVP_PER_SAMPLE * samples * per_sample_factor(samples)
# Lanczos outside the HVPs at P = 2: 0.43 ms per step amortised over T = 800 (the MLP task's
# end-to-end profile), i.e. per estimate; it scales with the shard n/P.
LANCZOS_OTHER_AT_2 = 0.43e-3 * 800
# Update per entry through the optimizer (bench_fosi_step, BM_adam_update, BM_fosi_adam_update/k:10):
# at the revision of the measured step times below (95057d2 micro table) and now (fused update).
UPDATE_THEN = {"adam": 158e-6 / N, "dho2": 1241e-6 / N}
UPDATE_NOW = {"adam": 114e-6 / N, "dho2": 931e-6 / N}


def fit(t_small: float, t_large: float, n_small: float, n_large: float) -> tuple[float, float]:
    """alpha, beta of a P = 2 ring collective from its times at two sizes (floats)."""
    half = 0.5 * 4.0  # (P - 1)/P × 4 bytes per float at P = 2
    beta = half * (n_large - n_small) / (t_large - t_small)
    return t_small - half * n_small / beta, beta


# bench_mpi_collectives (np 2, shared memory): medians at 1e3 and 1e5 floats.
SHM = {"rs": fit(2.19e-6, 50.28e-6, 1e3, 1e5), "ag": fit(1.64e-6, 25.41e-6, 1e3, 1e5),
       "ar": (2.23e-6 / 2, math.inf)}
# Clusters (assumptions): 10 Gb/s Ethernet with alpha = 25 us; 100 Gb/s (InfiniBand-class) with
# alpha = 3 us. Bandwidths are the line rates in bytes/s.
NETS = {"10 Gb/s": {k: (25e-6, 1.25e9) for k in ("rs", "ag", "ar")},
        "100 Gb/s": {k: (3e-6, 12.5e9) for k in ("rs", "ag", "ar")}}


def ring(net: dict, kind: str, p: int, nbytes: float) -> float:
    if p == 1:
        return 0.0
    alpha, beta = net[kind]
    t = math.ceil(math.log2(p)) * alpha + (p - 1) / p * nbytes / beta
    return 2.0 * t if kind == "ar" else t


def slow(p: int, cores: int | None) -> float:
    return 1.0 if cores is None else max(1.0, p / cores)


def estimate_seconds(p: int, batch: float, net: dict, cores: int | None) -> float:
    per_step = (hvp_seconds(batch / p) * slow(p, cores) + ring(net, "ag", p, 4 * N)
                + ring(net, "rs", p, 4 * N) + 4 * ring(net, "ar", p, 8 * 2))
    return M * per_step + LANCZOS_OTHER_AT_2 * 2 / p * slow(p, cores)


def step_seconds(kind: str, p: int, batch: float, net: dict, cores: int | None,
                 update: dict, amortise: float = T) -> float:
    """Seconds per step of `kind` (adam, dho2, split) at P ranks on a global batch `batch`."""
    if kind == "split":
        return step_seconds("dho2", p - 1, batch, net, cores, update, amortise=math.inf)
    s = slow(p, cores)
    t = gradient_seconds(batch / p) * s + ring(net, "rs", p, 4 * N) + ring(net, "ag", p, 4 * N)
    if kind == "adam":
        return t + update["adam"] * N / p * s + ring(net, "ar", p, 8 * 5)
    t += update["dho2"] * N / p * s + 2 * ring(net, "ar", p, 8 * (K + 5))
    if math.isfinite(amortise):
        t += estimate_seconds(p, batch, net, cores) / amortise
    return t


def memory_per_rank(kind: str, p: int) -> float:
    """Peak optimizer-side bytes per rank: state, and for DHO2 the Lanczos basis (double)."""
    shard = N / p
    if kind == "adam":
        return 2 * 4 * shard
    return 2 * 4 * shard + 8 * (M + 1) * shard + 4 * K * shard


# Measured s/step (benchmarks/results/e2e_memory.csv, MLP, batch 128, 120 steps holding one
# estimate, revision 76be784; P = 4 and 8 oversubscribe the 2 cores).
MEASURED = {("dho2", 1): 0.009645, ("dho2", 2): 0.005732, ("dho2", 4): 0.006883,
            ("dho2", 8): 0.0140, ("adam", 1): 0.00222, ("adam", 2): 0.0021,
            ("adam", 4): 0.00254, ("adam", 8): 0.00996}


def error_table() -> list[str]:
    out = ["| optimizer | P | measured ms/step | model ms/step | model / measured |", "|---|---|---|---|---|"]
    for (kind, p), measured in MEASURED.items():
        model = step_seconds(kind, p, 128, SHM, CORES, UPDATE_THEN, amortise=120)
        out.append(f"| {kind} | {p}{' (oversubscribed)' if p > CORES else ''} | {measured * 1e3:.2f} "
                   f"| {model * 1e3:.2f} | {model / measured:.2f} |")
    return out


def prediction_table(per_rank_batch: int) -> list[str]:
    out = ["| network | P | Adam ms/step | DHO2 mode S ms/step | DHO2 / Adam | split ms/step | "
           "split / Adam | DHO2 MB/rank (Adam) |", "|---|---|---|---|---|---|---|---|"]
    for name, net in NETS.items():
        for p in (8, 16, 32, 64):
            b = per_rank_batch * p
            adam = step_seconds("adam", p, b, net, None, UPDATE_NOW)
            dho2 = step_seconds("dho2", p, b, net, None, UPDATE_NOW)
            split = step_seconds("split", p, b, net, None, UPDATE_NOW)
            out.append(f"| {name} | {p} | {adam * 1e3:.2f} | {dho2 * 1e3:.2f} | {dho2 / adam:.2f} "
                       f"| {split * 1e3:.2f} | {split / adam:.2f} | "
                       f"{memory_per_rank('dho2', p) / 2**20:.2f} ({memory_per_rank('adam', p) / 2**20:.2f}) |")
    return out


def svg(path: str, per_rank_batch: int) -> None:
    ps = [2, 4, 8, 16, 32, 64]
    series = []
    for name, net in NETS.items():
        for kind, dash in (("adam", ""), ("dho2", "6,3"), ("split", "2,3")):
            ys = [step_seconds(kind, p, per_rank_batch * p, net, None, UPDATE_NOW) * 1e3 for p in ps]
            series.append((f"{kind}, {name}", dash, "#1f77b4" if name == "10 Gb/s" else "#d62728", ys))
    width, height, left, bottom = 640, 400, 60, 50
    ymax = max(max(s[3]) for s in series) * 1.1

    def x(p):
        return left + (math.log2(p) - 1) / (math.log2(64) - 1) * (width - left - 180)

    def y(v):
        return height - bottom - v / ymax * (height - bottom - 20)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<line x1="{left}" y1="{y(0)}" x2="{x(64)}" y2="{y(0)}" stroke="black"/>',
             f'<line x1="{left}" y1="{y(0)}" x2="{left}" y2="20" stroke="black"/>',
             f'<text x="{left}" y="14">predicted ms per step (MLP, {per_rank_batch} samples per rank)</text>']
    for p in ps:
        parts.append(f'<text x="{x(p) - 6}" y="{y(0) + 16}">{p}</text>')
    parts.append(f'<text x="{(left + x(64)) / 2}" y="{height - 10}">ranks P</text>')
    for i in range(5):
        v = ymax * i / 4
        parts.append(f'<text x="8" y="{y(v) + 4}">{v:.1f}</text>')
    for i, (label, dash, colour, ys) in enumerate(series):
        pts = " ".join(f"{x(p):.1f},{y(v):.1f}" for p, v in zip(ps, ys))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                     f'stroke-dasharray="{dash}" points="{pts}"/>')
        ly = 30 + 16 * i
        parts.append(f'<line x1="{width - 170}" y1="{ly}" x2="{width - 140}" y2="{ly}" '
                     f'stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>')
        parts.append(f'<text x="{width - 135}" y="{ly + 4}">{label}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--svg", help="write the predicted step time vs P as an SVG file")
    ap.add_argument("--per-rank-batch", type=int, default=64, help="samples per rank (weak scaling)")
    args = ap.parse_args()
    fitted = ", ".join(f"{k}: alpha {a * 1e6:.2f} us, beta {b / 1e9:.2f} GB/s"
                       for k, (a, b) in SHM.items() if math.isfinite(b))
    print(f"Shared-memory MPI fit (np 2): {fitted}; small all-reduce {SHM['ar'][0] * 2e6:.2f} us.\n")
    print("Model against the measured points (120 steps holding one estimate):\n")
    print("\n".join(error_table()) + "\n")
    print(f"Predictions, {args.per_rank_batch} samples per rank, estimate every T = {T} steps:\n")
    print("\n".join(prediction_table(args.per_rank_batch)))
    if args.svg:
        svg(args.svg, args.per_rank_batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
