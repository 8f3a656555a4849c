"""DP overhead per model: an Opacus DP-SGD step vs. a plain step, for each grad-sample mode.

``hooks`` uses fedfer's Conv3d grad sampler (fer_models/privacy/grad_samplers.py, registered by
fer_models.privacy.dp_sgd); ``hooks-opacus`` is the same mode with Opacus' own Conv3d sampler put back,
measured in the same run for a before/after under the same machine load.

Every mode is first checked for correctness: with zero noise, the clipped, averaged gradient
Opacus produces must equal the one computed sample by sample by hand. Timings: median of
repeated steps at batch 64 (fixed batches), T = 1 and T = 3, after warm-up.

``--noise`` measures what the grid leaves out (it runs with zero noise): the cost of the Gaussian
noise itself in fedfer's default mode (``ew``, noise multiplier 1), drawn as Opacus draws it (a
torch CPU generator: fedfer's generator before the CSPRNG) and from fedfer's AES-256-CTR source
(fer_models/privacy/secure_random.py: four float64 draws per value, as Opacus' secure mode), same run.

    python benchmarks/dp_overhead.py [--threads 2] [--steps 20] [--noise]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_results  # noqa: E402
from fer_models.models import create_model, list_models  # noqa: E402
from fer_models.privacy import dp_sgd as privacy  # noqa: E402,F401  registers fedfer's grad samplers, as training does

warnings.filterwarnings("ignore")
MODES = ("hooks-opacus", "hooks", "functorch", "ew", "ghost")
CLIP = 1.0


@contextlib.contextmanager
def _sampler_for(mode: str):
    """``hooks-opacus``: Opacus' stock Conv3d grad sampler for the duration; other modes: as registered."""
    if mode != "hooks-opacus":
        yield
        return
    from opacus.grad_sample import GradSampleModule
    from opacus.grad_sample.conv import compute_conv_grad_sample

    ours = GradSampleModule.GRAD_SAMPLERS[torch.nn.Conv3d]
    GradSampleModule.GRAD_SAMPLERS[torch.nn.Conv3d] = compute_conv_grad_sample
    try:
        yield
    finally:
        GradSampleModule.GRAD_SAMPLERS[torch.nn.Conv3d] = ours


def _opacus_mode(mode: str) -> str:
    return "hooks" if mode == "hooks-opacus" else mode


def _private(model, mode: str, batch: int, data):
    from opacus import PrivacyEngine

    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    engine = PrivacyEngine()
    out = engine.make_private(module=model, optimizer=opt, data_loader=loader, noise_multiplier=0.0,
                              max_grad_norm=CLIP, poisson_sampling=False, grad_sample_mode=_opacus_mode(mode),
                              criterion=torch.nn.CrossEntropyLoss())
    if mode == "ghost":
        dp_model, dp_opt, criterion, _ = out
        return dp_model, dp_opt, criterion
    dp_model, dp_opt, _ = out
    return dp_model, dp_opt, torch.nn.CrossEntropyLoss()


def _manual_clipped_mean(model, x, y) -> list[torch.Tensor]:
    total = [torch.zeros_like(p) for p in model.parameters()]
    for i in range(x.shape[0]):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        grads = [p.grad.detach().clone() for p in model.parameters()]
        norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
        scale = min(1.0, CLIP / (float(norm) + 1e-6))
        for t, g in zip(total, grads):
            t += g * scale
    return [t / x.shape[0] for t in total]


def check_mode(name: str, mode: str, clip_len: int) -> bool:
    torch.manual_seed(0)
    model = create_model(name, dropout=0.0)  # no dropout: both computations must see the same function
    x, y = torch.randn(8, clip_len, 1, 48, 48), torch.randint(0, 7, (8,))
    # The reference in float64: a float32 batch-of-1 pass is itself off by up to ~3e-4 on some CPUs
    # (seen on a Xeon for cnn, T=3, while Opacus' float32 result was within 3e-8 of float64).
    expected = _manual_clipped_mean(copy.deepcopy(model).double(), x.double(), y)
    dp_model, dp_opt, criterion = _private(model, mode, 8, torch.utils.data.TensorDataset(x, y))
    dp_opt.zero_grad()
    criterion(dp_model(x), y).backward()
    dp_opt.pre_step()
    got = [p.grad for p in dp_model.parameters()]
    return all(torch.allclose(g.double(), e, atol=1e-5, rtol=1e-3) for g, e in zip(got, expected))


def time_steps(step, steps: int) -> float:
    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _plain_ms(model, x, y, steps: int) -> float:
    """Median ms of a plain (non-private) SGD step of ``model`` on the batch ``(x, y)``."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    return 1000 * time_steps(functools.partial(_dp_step, model, opt, x, y), steps)


def bench(name: str, clip_len: int, steps: int, batch: int = 64) -> dict:
    torch.manual_seed(0)
    x, y = torch.randn(batch, clip_len, 1, 48, 48), torch.randint(0, 7, (batch,))
    plain = create_model(name)
    row = {"model": name, "T": clip_len, "plain_ms": _plain_ms(plain, x, y, steps)}
    for mode in MODES:
        try:
            with _sampler_for(mode):
                row[mode] = _bench_mode(name, mode, clip_len, steps, x, y)
            row[mode]["overhead"] = row[mode]["ms"] / row["plain_ms"]
        except Exception as exc:  # noqa: BLE001 - a mode a model does not support is a result too
            row[mode] = {"error": f"{type(exc).__name__}: {str(exc)[:120]}"}
    return row


def _bench_mode(name: str, mode: str, clip_len: int, steps: int, x, y) -> dict:
    ok = check_mode(name, mode, clip_len)
    dp_model, dp_opt, criterion = _private(create_model(name), mode, x.shape[0], torch.utils.data.TensorDataset(x, y))

    def dp_step():
        dp_opt.zero_grad()
        criterion(dp_model(x), y).backward()
        dp_opt.step()

    return {"correct": ok, "ms": 1000 * time_steps(dp_step, steps)}


def bench_noise(name: str, clip_len: int, steps: int, batch: int = 64) -> dict:
    """ms per ew DP step with noise multiplier 1: Opacus' torch-generator noise vs fedfer's secure noise."""
    from opacus import PrivacyEngine

    from fer_models.privacy.secure_random import SecureRandom

    torch.manual_seed(0)
    x, y = torch.randn(batch, clip_len, 1, 48, 48), torch.randint(0, 7, (batch,))
    plain = create_model(name)
    row = {"model": name, "T": clip_len, "params": sum(p.numel() for p in plain.parameters()),
           "plain_ms": _plain_ms(plain, x, y, steps)}
    dp_steps = {}
    for source in ("torch", "secure"):
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)
        model = create_model(name)
        dp_model, dp_opt, _ = PrivacyEngine().make_private(
            module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01), data_loader=loader,
            noise_multiplier=1.0, max_grad_norm=CLIP, poisson_sampling=False, grad_sample_mode="ew")
        if source == "secure":
            privacy.use_secure_noise(dp_opt, source=SecureRandom())
        dp_steps[source] = functools.partial(_dp_step, dp_model, dp_opt, x, y)
    # alternate the two steps, so that both see the same machine load
    times: dict[str, list[float]] = {k: [] for k in dp_steps}
    for i in range(steps + 3):
        for source, step in dp_steps.items():
            t = time.perf_counter()
            step()
            if i >= 3:
                times[source].append(time.perf_counter() - t)
    row.update({f"{k}_ms": 1000 * statistics.median(v) for k, v in times.items()})
    return row


def _dp_step(model, opt, x, y) -> None:
    """One step of ``opt`` on the batch (plain or Opacus-wrapped alike)."""
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


def _noise_table(rows: list[dict]) -> str:
    lines = ["| model | T | params | plain ms/step | ew + torch noise | ew + secure noise | secure / torch |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['T']} | {r['params']:,} | {r['plain_ms']:.0f} | "
                     f"{r['torch_ms']:.0f} ms ({r['torch_ms'] / r['plain_ms']:.2f}x) | "
                     f"{r['secure_ms']:.0f} ms ({r['secure_ms'] / r['plain_ms']:.2f}x) | "
                     f"{r['secure_ms'] / r['torch_ms']:.3f} |")
    return "\n".join(lines)


def _loadavg() -> str:
    """1, 5 and 15-minute load averages (Linux), or 'n/a'."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--models", nargs="*", default=list_models())
    ap.add_argument("--noise", action="store_true", help="only the noise cost: torch-generator vs secure noise")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_start = _loadavg()
    if args.noise:
        rows = [bench_noise(m, t, args.steps) for m in args.models for t in (1, 3)]
        table = _noise_table(rows)
        print(table)
        write_results("dp_noise_overhead", results=rows, table=table,
                      notes=f"batch 64, {args.threads} torch threads, median of {args.steps} steps after 3 warm-up "
                            "steps, grad-sample-mode ew, noise multiplier 1; 'torch noise' = Opacus' draw from a torch "
                            "CPU generator (fedfer before the CSPRNG), 'secure noise' = fedfer's AES-256-CTR source "
                            "(fer_models/privacy/secure_random.py). Load average at the start: "
                            f"{load_start}, at the end: {_loadavg()} (compare columns of one row).")
        return
    rows = [bench(m, t, args.steps) for m in args.models for t in (1, 3)]
    lines = ["| model | T | plain ms/step | " + " | ".join(f"{m} (x)" for m in MODES) + " | fastest correct |",
             "|---|---|---|" + "---|" * len(MODES) + "---|"]
    for r in rows:
        cells, best = [], None
        for m in MODES:
            c = r[m]
            if "error" in c:
                cells.append("unsupported")
            else:
                cells.append(f"{c['ms']:.0f} ms ({c['overhead']:.2f}x){'' if c['correct'] else ' WRONG'}")
                if c["correct"] and (best is None or c["ms"] < r[best]["ms"]):
                    best = m
        r["fastest_correct"] = best
        lines.append(f"| {r['model']} | {r['T']} | {r['plain_ms']:.0f} | " + " | ".join(cells) + f" | {best} |")
    table = "\n".join(lines)
    print(table)
    write_results("dp_overhead", results=rows, table=table,
                  notes=f"batch 64, {args.threads} torch threads, median of {args.steps} steps after 3 warm-up "
                        "steps; 'x' = DP step time / plain step time; correctness = clipped mean gradient "
                        "equal (atol 1e-5) to a per-sample computation by hand in float64 with zero noise. hooks = "
                        "fedfer's per-frame Conv3d grad sampler (fer_models/privacy/grad_samplers.py); hooks-opacus = "
                        f"Opacus' own Conv3d sampler, same run. Load average at the start: {load_start}, at the "
                        f"end: {_loadavg()} (other jobs share the machine: compare columns of one row).")


if __name__ == "__main__":
    main()
