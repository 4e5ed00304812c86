"""The comparison table (text, CSV, Markdown), PNG plots and one HTML page."""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

from computenet.sim.engine import SimResult
from computenet.sim.metrics import Summary

REFERENCE = "cheapest-first"
COLUMNS = (
    "policy",
    "jobs",
    "mean JCT h",
    "p95 JCT h",
    "mean wait h",
    "p95 wait h",
    "cost",
    "carbon t",
    "util %",
    "Jain",
    "JCT/LB",
    f"JCT vs {REFERENCE}",
    f"cost vs {REFERENCE}",
)


def _delta(value: float | Decimal, ref: float | Decimal | None) -> str:
    if ref is None or not ref:
        return ""
    return f"{(float(value) / float(ref) - 1) * 100:+.1f}%"


def rows(summaries: Sequence[Summary]) -> list[list[str]]:
    """One formatted row per policy, in COLUMNS order."""
    ref = next((s for s in summaries if s.policy == REFERENCE), None)
    out = []
    for s in summaries:
        out.append(
            [
                s.policy,
                str(s.jobs),
                f"{s.mean_jct_h:.1f}",
                f"{s.p95_jct_h:.1f}",
                f"{s.mean_wait_h:.2f}",
                f"{s.p95_wait_h:.2f}",
                f"{s.cost.quantize(Decimal('1'))}",
                f"{s.carbon_t:.1f}",
                f"{s.utilization * 100:.1f}",
                f"{s.jain_fairness:.3f}",
                f"{s.jct_over_lower_bound:.2f}",
                _delta(s.mean_jct_h, ref.mean_jct_h if ref else None),
                _delta(s.cost, ref.cost if ref else None),
            ]
        )
    return out


def markdown(summaries: Sequence[Summary]) -> str:
    """The table as GitHub Markdown."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(summaries)]
    return "\n".join(lines) + "\n"


def text(summaries: Sequence[Summary]) -> str:
    """The table as aligned plain text."""
    table = [list(COLUMNS), *rows(summaries)]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in table)


def write_all(out: Path, results: Sequence[SimResult], summaries: Sequence[Summary]) -> list[Path]:
    """Write the table (txt, csv, md), per-pool utilization, per-job records, plots, HTML."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "summary.txt", out / "summary.md", out / "summary.csv"]
    written[0].write_text(text(summaries) + "\n")
    written[1].write_text(markdown(summaries))
    with written[2].open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        w.writerows(rows(summaries))
    pools_csv = out / "pool_utilization.csv"
    with pools_csv.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["pool", *(s.policy for s in summaries)])
        for pool in summaries[0].pool_utilization:
            w.writerow([pool, *(f"{s.pool_utilization[pool]:.4f}" for s in summaries)])
    jobs_csv = out / "jobs.csv"
    with jobs_csv.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["policy", "job_id", "tenant", "pool", "arrival_s", "start_s", "end_s", "cost"])
        for res in results:
            for r in res.records:
                w.writerow(
                    [
                        res.policy,
                        r.job.job_id,
                        r.job.tenant,
                        r.pool.pool_id,
                        f"{r.job.arrival_s:.3f}",
                        f"{r.start_s:.3f}",
                        f"{r.end_s:.3f}",
                        f"{r.cost.quantize(Decimal('0.01'))}",
                    ]
                )
    plots = _plots(out, results, summaries)
    page = out / "index.html"
    page.write_text(_html(summaries, plots))
    return [*written, pools_csv, jobs_csv, *plots, page]


def _plots(out: Path, results: Sequence[SimResult], summaries: Sequence[Summary]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    names = [s.policy for s in summaries]
    paths: list[Path] = []

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    bars = (
        ("mean JCT (h)", [s.mean_jct_h for s in summaries]),
        ("total cost", [float(s.cost) for s in summaries]),
        ("carbon (t CO2)", [s.carbon_t for s in summaries]),
    )
    for ax, (title, values) in zip(axes, bars, strict=True):
        ax.bar(names, values, color=["C1" if n == REFERENCE else "C0" for n in names])
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    paths.append(out / "compare.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for res in results:
        jct = sorted(r.jct_s / 3600 for r in res.records)
        if jct:
            ax.plot(jct, [(i + 1) / len(jct) for i in range(len(jct))], label=res.policy)
    ax.set_xscale("log")
    ax.set_xlabel("job completion time (h, log scale)")
    ax.set_ylabel("fraction of jobs")
    ax.set_title("JCT distribution")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "jct_cdf.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    pools = list(summaries[0].pool_utilization)
    fig, ax = plt.subplots(figsize=(max(8, len(pools) * 0.3), 0.5 * len(names) + 2))
    grid = [[s.pool_utilization[p] * 100 for p in pools] for s in summaries]
    image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=100)
    ax.set_yticks(range(len(names)), names)
    ax.set_xticks(range(len(pools)), pools, rotation=90, fontsize=7)
    ax.set_title("utilization per pool (% of card-time while jobs arrive)")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    paths.append(out / "pool_utilization.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _html(summaries: Sequence[Summary], plots: Sequence[Path]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows(summaries)
    )
    images = "".join(
        f'<p><img alt="{p.stem}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"></p>'
        for p in plots
    )
    style = "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
    buf = io.StringIO()
    buf.write(f"<!doctype html><meta charset=utf-8><title>computenet sim</title><style>{style}")
    buf.write("</style><h1>computenet sim</h1>")
    buf.write(f"<table><tr>{head}</tr>{body}</table>{images}")
    return buf.getvalue()
