"""PNGs for --sweep: latency against throughput, and the latency distribution (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

INSTALL_HINT = (
    "--sweep draws PNGs with matplotlib, which is not installed: "
    "pip install 'proctor[bench]'  (or: pip install matplotlib==3.11.2)"
)


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_vs_throughput(points: list[dict[str, Any]], path: Path, title: str,
                          floor: list[dict[str, Any]] | None = None) -> Path:
    """p50 and p99 (ms, log scale) against achieved throughput, one marker per swept rate.

    Each p99 marker is labelled with its offered rate as a share of the base; past
    saturation the achieved throughput can fall while latency climbs, so the line
    may curl back.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for series, style, label in ((points, "-", "proctor"), (floor or [], "--", "floor")):
        if not series:
            continue
        xs = [p["throughput_per_s"] for p in series]
        ax.plot(xs, [p["p50_us"] / 1000 for p in series], "o" + style, label=f"{label} p50")
        ax.plot(xs, [p["p99_us"] / 1000 for p in series], "s" + style, label=f"{label} p99")
        for p in series:
            ax.annotate(f"{p['fraction']:.0%}", (p["throughput_per_s"], p["p99_us"] / 1000),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel("achieved throughput (calls/s)")
    ax.set_ylabel("latency from intended send (ms)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def latency_histogram(series: dict[str, list[tuple[float, int]]], path: Path, title: str) -> Path:
    """Share of calls per log-spaced latency bucket, one step line per run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for label, bins in series.items():
        total = sum(c for _, c in bins) or 1
        ax.step([b / 1000 for b, _ in bins], [c / total for _, c in bins], where="pre",
                label=label)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("share of calls")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
