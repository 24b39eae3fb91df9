"""Tables and plots from bench result files, across machines (`mnistkit report`)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from .errors import InvalidInputError, MissingDependencyError
from .formats import EXTERNAL_DEVICE_KIND, FORMATS

DEFAULT_REPORT_DIR = "models/report"


def load_results(paths) -> list[dict]:
    """Read bench result JSON files (or folders holding results.json)."""
    from .fileio import read_json

    out = []
    for p in paths:
        p, obj = read_json(p, "results.json", "a results.json from mnistkit bench")
        if not isinstance(obj, dict) or "results" not in obj or "environment" not in obj:
            raise InvalidInputError(f"{p}: not a mnistkit bench result (no 'environment' and 'results')")
        obj["_source"] = str(p)
        out.append(obj)
    if not out:
        raise InvalidInputError("no result files given")
    return out


def merged_rows(reports: list[dict]) -> list[dict]:

    rows = []
    for rep in reports:
        label = machine_label(rep["environment"])
        for r in rep["results"]:
            rows.append({**r, "machine": label})
    return rows


def series_key(r: dict) -> str:
    fmt = r.get("format", "")
    key = f"{r['backend']}/{r['device']}"
    if r.get("mode", "host") != "host":
        key += f" [{r['mode']}]"
    spec = FORMATS.get(fmt)
    if spec is not None and spec.app and spec.precision == "fp32":
        key += " (app)"
    elif fmt and (spec is None or fmt != spec.kind):  # the plain format of its kind goes without saying
        key += f" ({fmt})"
    if r.get("threads") is not None:
        key += f" t{r['threads']}"
    return key


def _base(key: str) -> str:
    """A series key without its thread count: the runtime, which gets one colour."""
    parts = key.split(" · ")
    head = parts[0].rsplit(" t", 1)[0] if " t" in parts[0] else parts[0]
    return " · ".join([head, *parts[1:]])


def plot_all(reports: list[dict], out_dir: Path) -> dict[str, Path]:
    """latency.png (p50 vs batch, log-log), throughput.png, cdf_batch1.png. {} without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    rows = [r for r in merged_rows(reports) if r.get("status") == "ok"]
    multi = len({r["machine"] for r in rows}) > 1
    series: dict[str, list[dict]] = {}
    for r in rows:
        key = series_key(r) + (f" · {r['machine']}" if multi else "")
        series.setdefault(key, []).append(r)
    # one colour per runtime, one line style per thread count; baselines thin and dashed
    bases = sorted({_base(k) for k in series})
    cmap = plt.get_cmap("tab10" if len(bases) <= 10 else "tab20")
    colour = {b: cmap(i % cmap.N) for i, b in enumerate(bases)}
    thread_styles = {}

    def style(key: str) -> dict:
        t = key.rsplit(" t", 1)[-1].split(" ")[0] if " t" in key else ""
        ls = thread_styles.setdefault(t, ["-", ":", "-.", (0, (5, 1))][len(thread_styles) % 4])
        bare = "bare" in key
        return {"color": colour[_base(key)], "linestyle": "--" if bare else ls, "linewidth": 1.0 if bare else 1.8,
                "marker": None if bare else "o", "markersize": 4}

    out_dir = Path(out_dir)
    files = {}
    for name, field, ylabel, title in (
        ("latency", "p50_ms", "p50 latency per call (ms)", "Latency vs batch size"),
        ("throughput", "throughput_per_s", "images / s", "Throughput vs batch size"),
    ):
        fig, ax = plt.subplots(figsize=(9, 5.5))
        for key, pts in sorted(series.items()):
            pts = sorted(pts, key=lambda r: r["batch_size"])
            ax.plot([p["batch_size"] for p in pts], [p[field] for p in pts], label=key, **style(key))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_title(title + " (host-to-host unless marked)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files[name] = path
    cdf_rows = [r for r in rows if r["batch_size"] == 1 and r.get("samples_ms")]
    if cdf_rows:
        fig, ax = plt.subplots(figsize=(9, 5.5))
        for r in sorted(cdf_rows, key=series_key):
            xs = sorted(r["samples_ms"])
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            key = series_key(r) + (f" · {r['machine']}" if multi else "")
            st = style(key)
            st.pop("marker")
            ax.plot([x * 1e3 for x in xs], ys, label=key, **st)
        ax.set_xscale("log")
        ax.set_xlabel("latency per call at batch 1 (µs)")
        ax.set_ylabel("fraction of calls")
        ax.set_title("Latency CDF at batch 1")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = out_dir / "cdf_batch1.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files["cdf"] = path
    devices = plot_devices(rows, out_dir / "devices.png")
    if devices is not None:
        files["devices"] = devices
    return files


# the files every device runs (the JavaScript runtimes run ONNX; fp16 is a GPU format), in the table's order
CROSS_DEVICE_FORMATS = tuple(f.name for f in FORMATS.values() if f.kind == EXTERNAL_DEVICE_KIND and f.precision != "fp16")


def device_table(rows: list[dict]) -> list[str]:
    """Markdown rows comparing the devices on the ONNX files they all run, one row per (file, runtime/device,
    threads), one column per batch size; [] unless rows come from more than one device."""
    ok = [r for r in rows if r.get("status") == "ok" and not r.get("baseline") and r.get("mode", "host") == "host"
          and r.get("format") in CROSS_DEVICE_FORMATS]
    if len({r["device"] for r in ok}) < 2:
        return []
    batches = sorted({r["batch_size"] for r in ok})
    cells: dict[tuple, dict[int, float]] = {}
    for r in ok:
        key = (r["format"], r["file"], f"{r['backend']}/{r['device']}", r.get("threads"), r.get("machine", ""))
        cells.setdefault(key, {})[r["batch_size"]] = r["p50_ms"]
    order = {"cpu": 0, "cuda": 1, "node": 2, "browser": 3}
    out = ["| file | runtime/device | threads | " + " | ".join(f"b={b}" for b in batches) + " |",
           "|---|---|---|" + "---|" * len(batches)]
    for key in sorted(cells, key=lambda k: (CROSS_DEVICE_FORMATS.index(k[0]), order.get(k[2].split("/")[-1], 9),
                                             k[2], k[3] or 0)):
        fmt, file, runtime, threads, machine = key
        out.append(f"| {file} | {runtime}{' · ' + machine if machine and len({k[4] for k in cells}) > 1 else ''} | "
                   f"{threads if threads is not None else '-'} | "
                   + " | ".join(_us(cells[key].get(b)) for b in batches) + " |")
    return out


def plot_devices(rows: list[dict], path: Path) -> Path | None:
    """devices.png: p50 vs batch size of model.onnx on every runtime/device and thread count (None: one device)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("status") == "ok" and not r.get("baseline") and r.get("format") == EXTERNAL_DEVICE_KIND
          and r.get("mode", "host") == "host"]
    if len({r["device"] for r in ok}) < 2:
        return None
    series: dict[str, list[dict]] = {}
    for r in ok:
        series.setdefault(f"{r['backend']}/{r['device']} t{r.get('threads')}", []).append(r)
    fig, ax = plt.subplots(figsize=(8, 5))
    devices = sorted({r["device"] for r in ok})
    colours = {d: plt.get_cmap("tab10")(i) for i, d in enumerate(devices)}
    for key, pts in sorted(series.items()):
        pts = sorted(pts, key=lambda r: r["batch_size"])
        device = pts[0]["device"]
        ax.plot([p["batch_size"] for p in pts], [p["p50_ms"] * 1e3 for p in pts], marker="o", label=key,
                color=colours[device], linestyle="-" if key.endswith("t1") else "--")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("p50 latency per call (µs)")
    ax.set_title("model.onnx across devices: Python (ONNX Runtime), Node (onnxruntime-node), browser (onnxruntime-web)")
    ax.title.set_fontsize(9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _us(ms) -> str:
    return "-" if ms is None else f"{ms * 1e3:,.1f}"


def summary_table(rows: list[dict]) -> list[str]:
    """p50 latency (µs) per series and batch size, plus throughput at the largest batch."""

    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        return []
    batches = sorted({r["batch_size"] for r in ok})
    multi = len({r["machine"] for r in ok}) > 1
    series: dict[str, dict[int, dict]] = {}
    for r in ok:
        key = (f"{r['machine']} · " if multi else "") + series_key(r)
        series.setdefault(key, {})[r["batch_size"]] = r
    head = "| runtime | " + " | ".join(f"b={b} p50 µs" for b in batches) + f" | images/s at b={batches[-1]} | roofline |"
    lines = [head, "|" + "---|" * (len(batches) + 3)]
    for key in sorted(series):
        by = series[key]
        last = by.get(batches[-1], {})
        lines.append(f"| {key} | " + " | ".join(_us(by[b]["p50_ms"]) if b in by else "-" for b in batches)
                     + f" | {fmt_num(last.get('throughput_per_s'))} | "
                     + (f"{last['roofline_fraction']:.2f}" if last.get("roofline_fraction") else "-") + " |")
    return lines


def format_table(rows: list[dict]) -> list[str]:
    """Size, accuracy and latency side by side, one line per artifact on each runtime (the table users
    choose a format from). Latency at the smallest and largest batch, on the most threads measured."""
    ok = [r for r in rows if r.get("status") == "ok" and not r.get("baseline")]
    if not ok:
        return []
    batches = sorted({r["batch_size"] for r in ok})
    lo, hi = batches[0], batches[-1]
    multi = len({r["machine"] for r in ok}) > 1
    groups: dict[tuple, dict[int, dict]] = {}
    for r in ok:
        key = (r["machine"], r["file"], r["backend"], r["device"], r.get("mode", "host"))
        best = groups.setdefault(key, {})
        prev = best.get(r["batch_size"])
        if prev is None or (r.get("threads") or 0) > (prev.get("threads") or 0):
            best[r["batch_size"]] = r
    lines = ["| " + ("machine | " if multi else "") + f"file | runtime | size | accuracy | b={lo} p50 µs | "
             f"b={hi} p50 µs | images/s at b={hi} |", "|" + "---|" * (7 + multi)]
    for key in sorted(groups, key=lambda k: (k[0], k[2], k[1])):
        by = groups[key]
        any_row = next(iter(by.values()))
        size = f"{any_row['bytes'] / 1e6:.2f} MB" if any_row.get("bytes") else "-"
        acc = f"{any_row['accuracy']:.4f}" if isinstance(any_row.get("accuracy"), (int, float)) else "-"
        runtime = f"{key[2]}/{key[3]}" + ("" if key[4] == "host" else f" [{key[4]}]")
        lines.append("| " + (f"{key[0]} | " if multi else "") + f"{key[1]} | {runtime} | {size} | {acc} | "
                     f"{_us(by[lo]['p50_ms']) if lo in by else '-'} | {_us(by[hi]['p50_ms']) if hi in by else '-'} | "
                     + (f"{by[hi]['throughput_per_s']:,.0f}" if hi in by else "-") + " |")
    return lines


def markdown_report(reports: list[dict], plots: dict | None = None, title: str = "mnistkit bench") -> str:

    rows = merged_rows(reports)
    lines = [f"# {title}", ""]
    lines += ["## Machines", "", "| machine | date | cores | GPU | versions | threads |", "|---|---|---|---|---|---|"]
    for rep in reports:
        env = rep["environment"]
        versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
        lines.append(f"| {machine_label(env)} | {env.get('date', '')} | {env.get('cores')} | {env.get('gpu') or '-'} | "
                     f"{versions} | {env.get('torch_threads', '-')} |")
    lines += ["", "## What is timed", ""]
    timed = reports[0].get("config", {}).get("timed", {})
    for k, v in timed.items():
        lines.append(f"- `{k}`: {v}")
    cfg = reports[0].get("config", {})
    lines.append(f"- warm-up {cfg.get('warmup_s')} s, then calls timed one by one for at least "
                 f"{cfg.get('min_time_s')} s and {cfg.get('min_reps')} calls per case; percentiles are numpy's "
                 "(linear); throughput = batch / mean latency")
    lines.append(f"- parity gate before timing: {cfg.get('parity_images')} {cfg.get('parity_data')} against the "
                 "PyTorch reference (where none is known, against an independent runtime on the same file: each "
                 "row's `parity.against`)")
    lines += ["", "## Baselines measured in the same run", ""]
    for rep in reports:
        b = rep.get("baselines", {})
        for threads, rl in (b.get("matmul") or {}).items():
            lines.append(f"- {machine_label(rep['environment'])}: ONNX Runtime MatMul {rl['shape'][0]}x{rl['shape'][1]} "
                         f"by {rl['shape'][1]}x{rl['shape'][2]}, {threads} threads: **{rl['gflops']:.0f} GFLOP/s** "
                         f"(p50 {rl['p50_ms']:.3f} ms)")
        if b.get("flop_per_image"):
            lines.append(f"- model: {b['flop_per_image']:,} FLOP per image (from the ONNX graph)")
    overhead = [r for r in rows if r.get("overhead_p50")]
    if overhead:
        lines += ["", "## mnistkit's backend vs the bare runtime call (e.g. `InferenceSession.run`), timed interleaved",
                  "", "`run` checks its input; `unchecked()` is the same call without the checks.", "",
                  "| file | backend | threads | batch | p50 ratio | p99 ratio | p50 ratio, unchecked |",
                  "|---|---|---|---|---|---|---|"]
        for r in overhead:
            unchecked = f"{r['unchecked_overhead_p50']:.3f}" if r.get("unchecked_overhead_p50") else "—"
            lines.append(f"| {r['file']} | {r['backend']} | {r['threads']} | {r['batch_size']} | "
                         f"{r['overhead_p50']:.3f} | {r['overhead_p99']:.3f} | {unchecked} |")
    across = device_table(rows)
    if across:
        lines += ["", "## Across devices (Python, Node, browser; p50 µs per call, same file and parity gate)", ""]
        lines += across
    lines += ["", "## Formats side by side (size, accuracy, latency)", ""] + format_table(rows)
    lines += ["", "## Summary (p50 latency per call, µs)", ""] + summary_table(rows)
    if plots:
        lines += ["", "## Plots", ""]
        for name, path in plots.items():
            lines.append(f"![{name}]({Path(path).name})")
    lines += ["", "## All results", "",
              "| machine | file | backend | device | provider | mode | threads | batch | p50 ms | p90 ms | p99 ms | "
              "p99.9 ms | mean ms | cv | images/s | roofline | status |",
              "|" + "---|" * 17]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['machine']} | {Path(r['artifact']).name} | {r['backend']} | {r['device']} | "
                         f"{r.get('provider') or '-'} | {r.get('mode')} | {r.get('threads')} | {r['batch_size']} | "
                         + "- | " * 8 + f"- | {r['status']}: {r.get('reason', '')} |")
            continue
        rf = f"{r['roofline_fraction']:.2f}" if r.get("roofline_fraction") else "-"
        warn = " ⚠ " + "; ".join(r["warnings"]) if r.get("warnings") else ""
        batch = f"{r['batch_size']} (split: {r['split']})" if r.get("split") else r["batch_size"]
        lines.append(f"| {r['machine']} | {Path(r['artifact']).name} | {r['backend']} | {r['device']} | "
                     f"{r.get('provider') or '-'} | {r.get('mode')} | {r.get('threads')} | {batch} | "
                     f"{fmt_num(r['p50_ms'])} | {fmt_num(r['p90_ms'])} | {fmt_num(r['p99_ms'])} | "
                     f"{fmt_num(r['p999_ms'])} | {fmt_num(r['mean_ms'])} | {r['cv']:.2f} | "
                     f"{fmt_num(r['throughput_per_s'])} | {rf} | ok{warn} |")
    return "\n".join(lines) + "\n"


def build_report(paths, out_dir, create_parents: bool = False) -> dict:
    """Fold result files from several machines into one table and one set of plots."""
    from .fileio import atomic_write_bytes, check_writable_dir

    reports = load_results(paths)
    out_dir = Path(out_dir)
    if create_parents:
        out_dir.mkdir(parents=True, exist_ok=True)
    check_writable_dir(out_dir, "--out-dir")
    plots = plot_all(reports, out_dir)
    md = markdown_report(reports, plots, "mnistkit benchmarks across machines")
    files = {"markdown": atomic_write_bytes(out_dir / "report.md", md.encode()),
             "csv": atomic_write_bytes(out_dir / "results.csv", to_csv(merged_rows(reports)).encode()), **plots}
    if not plots:
        raise MissingDependencyError("plots need matplotlib: pip install 'mnistkit[plot]' (report.md and "
                                     "results.csv were written)")
    return {"files": {k: str(v) for k, v in files.items()}, "machines": len(reports),
            "rows": len(merged_rows(reports))}


# ---------------------------------------------------------------------------------------------
# Shared by bench (its outputs) and report (several machines): bench imports these, never the reverse


CSV_FIELDS = ["artifact", "format", "bytes", "accuracy", "backend", "device", "provider", "mode", "batch_size",
              "threads", "status",
              "p50_ms", "p90_ms", "p99_ms", "p999_ms", "mean_ms", "stdev_ms", "min_ms", "max_ms", "cv", "reps",
              "throughput_per_s", "roofline_fraction", "overhead_p50", "overhead_p99", "unchecked_overhead_p50",
              "load_ms", "first_ms",
              "reason", "machine"]


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def machine_label(env: dict) -> str:
    gpu = env.get("gpu")
    base = f"{env.get('cpu', '?')} x{env.get('cores', '?')}"
    return f"{base} + {gpu.split(',')[0]}" if gpu else base


def fmt_num(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


def write_outputs(report_json: dict, out_dir: Path, title: str = "mnistkit bench",
                  create_parents: bool = False) -> dict[str, Path]:
    """results.json, results.csv, report.md and PNG plots (when matplotlib is installed).

    `create_parents` is for default folders (models/bench): a user's --out-dir must have a parent."""
    from .fileio import atomic_write_bytes, check_writable_dir

    out_dir = Path(out_dir)
    if create_parents:
        out_dir.mkdir(parents=True, exist_ok=True)
    check_writable_dir(out_dir, "--out-dir")
    files = {}
    files["json"] = atomic_write_bytes(out_dir / "results.json", (json.dumps(report_json, indent=1) + "\n").encode())
    files["csv"] = atomic_write_bytes(out_dir / "results.csv", to_csv(report_json["results"]).encode())
    plots = plot_all([report_json], out_dir)
    files.update(plots)
    files["markdown"] = atomic_write_bytes(out_dir / "report.md", markdown_report([report_json], plots, title).encode())
    return files
