"""`mnistkit optimize`: report.md and tradeoff.png of a search (deploy.json's content and candidates.json's)."""

from __future__ import annotations

from pathlib import Path

from .decide import SCREEN_KEEP, TOP


def plot(path: Path, table: dict, result: dict) -> Path | None:
    """Latency vs accuracy of every gated candidate, one panel per batch size, the Pareto front marked."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sizes = result["search"]["batch_sizes"]
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4.2), squeeze=False)
    runtimes = sorted({c["backend"] for c in table["candidates"]})
    colours = {r: plt.get_cmap("tab10")(i) for i, r in enumerate(runtimes)}
    for ax, b in zip(axes[0], sizes):
        pts = [(c["screen"][str(b)]["p50_ms"] * 1e3, c["accuracy"] * 100, c) for c in table["candidates"]
               if str(b) in c["screen"]]
        for r in runtimes:
            xs = [p[0] for p in pts if p[2]["backend"] == r]
            ys = [p[1] for p in pts if p[2]["backend"] == r]
            ax.scatter(xs, ys, s=22, color=colours[r], label=r, alpha=0.8)
        front = sorted(pareto([(p[0], p[1]) for p in pts]))
        if front:
            fx, fy = zip(*front)
            ax.plot(fx, fy, "k--", lw=1)
            ax.scatter(fx, fy, s=60, facecolors="none", edgecolors="black", linewidths=1, label="Pareto front")
        ch = result["choices"][str(b)]
        ax.scatter([ch["p50_ms"] * 1e3], [ch["accuracy"] * 100], s=140, facecolors="none", edgecolors="red",
                   linewidths=2, label="chosen (decision-round p50)")
        ax.set_xscale("log")
        ax.set_xlabel("p50 latency per call (µs, screening)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"batch {b}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"mnistkit optimize: latency vs accuracy ({result['environment'].get('cpu', '')})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both latency (lower) and accuracy (higher)."""
    return [p for p in points if not any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in points)]


def markdown(result: dict, table: dict, has_plot: bool) -> str:
    s = result["search"]
    env = result["environment"]
    lines = [f"# mnistkit optimize: {result['source']['export']}", "",
             f"Machine: {env.get('cpu', '?')}, {env.get('cores', '?')} usable cores; "
             f"search {s['seconds']:.1f} s of a {s['budget_s']:g} s budget; {s['candidates']} candidates, "
             f"{s['passed_gate']} passed parity and the accuracy budget ({s['max_accuracy_drop']:g} points "
             f"below PyTorch's {s['reference_accuracy']:.4f} on {s['test_images']:,} test images), "
             f"{s['pruned']} pruned or refused.", "",
             f"Timed: {s['timed']}. Screening times each candidate briefly; those within {SCREEN_KEEP}x of the "
             f"fastest are timed in interleaved blocks; the {TOP} fastest again, with mnistkit's configuration of "
             "each runtime default (its file, every core, no option changed), interleaved with the bare defaults; "
             "the decision uses that last round.", "", "## Choices", "",
             "| batch | chosen | p50 | p99 | accuracy (Δ) | vs fastest | runner-up (ratio) | within noise |",
             "|---|---|---|---|---|---|---|---|"]
    for b, c in result["choices"].items():
        ru = c["runner_up"]
        runner = f"{ru['label']} ({ru['ratio']:.3f}x)" if ru else "—"
        lines.append(f"| {b} | {c['label']} | {_us(c['p50_ms'])} | {_us(c['p99_ms'])} | {c['accuracy']:.4f} "
                     f"({c['accuracy_delta'] * 100:+.2f}) | {c['vs_fastest']:.3f}x | "
                     f"{runner} | "
                     f"{'; '.join(c['within_noise']) or '—'} (band {c['noise'] * 100:.1f} %) |")
    lines += ["", "## Against each runtime's defaults (same interleaved round)", "",
              "| batch | default | its p50 | chosen is faster by |", "|---|---|---|---|"]
    for b, c in result["choices"].items():
        for d in c["defaults"]:
            slower = '' if d['at_least_as_fast'] else ' (the choice is slower than this default beyond the noise band)'
            lines.append(f"| {b} | {d['name']} ({d['file']}) | {_us(d['p50_ms'])} | {d['speedup']:.2f}x{slower} |")
    for n in s["defaults_not_timed"]:
        lines.append(f"\n- {n}")
    if has_plot:
        lines += ["", "## Latency vs accuracy", "", "![latency vs accuracy](tradeoff.png)"]
    lines += ["", "## Every candidate that passed the gate (screening p50)", "",
              "| candidate | accuracy | " + " | ".join(f"batch {b}" for b in s["batch_sizes"]) + " |",
              "|---|---|" + "---|" * len(s["batch_sizes"])]
    for c in sorted(table["candidates"], key=lambda c: c["label"]):
        cells = " | ".join(_us(c["screen"][str(b)]["p50_ms"]) if str(b) in c["screen"] else "—"
                           for b in s["batch_sizes"])
        lines.append(f"| {c['label']} | {c['accuracy']:.4f} | {cells} |")
    lines += ["", "## Pruned or refused, and why", ""]
    by_reason: dict[str, list[str]] = {}
    for p in table["pruned"]:
        by_reason.setdefault(p["reason"], []).append(p["what"])
    for reason, whats in by_reason.items():
        lines.append(f"- {'; '.join(whats)}: {reason}")
    return "\n".join(lines) + "\n"


def _us(ms: float) -> str:
    return f"{ms * 1e3:,.1f} µs" if ms < 1 else f"{ms:,.3f} ms"
