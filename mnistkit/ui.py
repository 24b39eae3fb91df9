"""Rich renderings of library progress callbacks (the library itself never prints)."""

from __future__ import annotations

from .console import note, out, stdout_is_tty


class _Bar:
    """A transient rich progress bar, entered and left with the object (subclasses give the columns)."""

    enabled = False
    _progress = None
    _task = None

    def _make(self):
        raise NotImplementedError

    def __enter__(self):
        if self.enabled:
            self._progress = self._make()
            self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)
        return False


class TrainProgress(_Bar):
    """A rich progress bar over training steps and a line per epoch, on a terminal only.

    Silent when disabled (--json) or when stdout is not a terminal; `log` notes still reach stderr
    unless disabled.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and stdout_is_tty()
        self.quiet = not enabled
        self._epochs = 0

    def _make(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=out(), transient=True)

    def log(self, message: str) -> None:
        if not self.quiet:
            note(message)

    # Callback protocol (mnistkit.train.Callback)
    def start(self, config, steps_per_epoch, device):
        self._epochs = config.epochs
        if self._progress is not None:
            self._task = self._progress.add_task(
                f"epoch 1/{config.epochs}", total=steps_per_epoch, status=f"{config.model} on {device}")

    def step(self, steps):
        if self._progress is not None:
            self._progress.update(self._task, completed=steps)

    def epoch_end(self, stats):
        line = (f"epoch {stats.epoch:>3}/{self._epochs}  loss {stats.loss:.4f}  "
                f"test acc {stats.test_accuracy:.4f}  {stats.seconds:.2f} s")
        if self._progress is not None:
            self._progress.console.print(line)
            self._progress.update(self._task, completed=0, description=f"epoch {stats.epoch + 1}/{self._epochs}",
                                  status=f"acc {stats.test_accuracy:.4f}")


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def validation_line(v) -> str:
    """One export validation (validate.Validation) as its ✓/✗ line."""
    mark = "✓" if v.passed else "✗"
    if v.comparison is None:
        return f"{mark} {v.format:<17} {v.file:<23} {v.error}"
    c = v.comparison
    tol = "n/a" if c.tolerance.max_abs is None else f"{c.tolerance.max_abs:.0e}"
    s = f"{mark} {v.format:<17} {v.file:<23} max_abs {c.max_abs:.2e} (tol {tol}) top-1 {c.top1_agreement:.2%}"
    if c.tolerance.max_accuracy_drop is not None and c.accuracy is not None:
        enforced = c.n >= c.tolerance.accuracy_min_images
        s += (f" acc {c.accuracy:.4f} ({c.accuracy_delta * 100:+.2f} points, budget "
              f"-{c.tolerance.max_accuracy_drop * 100:.2f}"
              + ("" if enforced else f", enforced from {c.tolerance.accuracy_min_images} images") + ")")
    s += f" on {v.images} {v.data}"
    if v.data == "random images":  # never quietly: no accuracy was measured, only agreement
        s += " (NO REAL TEST DATA FOUND: agreement with PyTorch only; pass --dataset/--data-dir)"
    if v.batch_sizes:
        s += f"; batch {'/'.join(map(str, v.batch_sizes))} ok"
    if not v.passed:
        s += " — " + "; ".join(c.failures + ([v.error] if v.error else []))
    return s


def print_export(result) -> None:
    """The export's ✓/✗ validation lines and what was written."""
    con = out()
    for v in result.validation:
        con.print(("[green]" if v.passed else "[red]") + _esc(validation_line(v)) + "[/]")
    for a in result.artifacts:
        extra = (f", opset {a['opset']}, IR {a['ir_version']}, onnxruntime >= {a['min_onnxruntime']}"
                 if "opset" in a else "")
        companions = a.get("companions") or []
        size = a["bytes"] + sum(c["bytes"] for c in companions)
        with_ = "".join(f" + {c['file']}" for c in companions)
        con.print(f"wrote {result.out_dir / a['file']}{with_} ({size / 1e6:.2f} MB{extra})")
    if result.app_bundle:
        con.print(f"wrote {result.app_bundle}/ (model.onnx, labels.json, README.md)")
    con.print(f"manifest: {result.manifest}")


def print_verify(report) -> None:
    """The parity table (one row per artifact x backend x device) and the verdict line."""
    from pathlib import Path

    from rich.table import Table

    table = Table(title=f"parity vs pytorch/cpu on {report.images} {report.dataset} test images "
                        f"(reference accuracy {report.reference['accuracy']:.4f})", title_justify="left")
    for col in ("artifact", "backend/device", "provider", "n", "max_abs", "max_rel", "mean_abs",
                "top-1", "acc (Δ)", "tol", ""):
        table.add_column(col, justify="left" if col in ("artifact", "backend/device", "provider", "") else "right")
    for p in report.pairs:
        c = p.comparison
        name = Path(p.artifact).name + ("" if p.origin == "this machine" else f" ({p.origin})")
        where = f"{p.backend}/{p.device}"
        if p.skipped:
            table.add_row(name, where, "-", "-", *["-"] * 6, "[yellow]skipped: " + _esc(p.skipped) + "[/]")
            continue
        if c is None:
            table.add_row(name, where, p.provider or "-", str(p.images), *["-"] * 6, "[red]✗ " + _esc(p.error) + "[/]")
            continue
        tol = "n/a" if c.tolerance.max_abs is None else f"{c.tolerance.max_abs:.0e}"
        table.add_row(name, where, p.provider or "-", str(p.images), f"{c.max_abs:.2e}", f"{c.max_rel:.2e}",
                      f"{c.mean_abs:.2e}", f"{c.top1_agreement:.2%}", f"{c.accuracy:.4f} ({c.accuracy_delta:+.4f})",
                      tol, "[green]✓[/]" if p.passed else "[red]✗ " + _esc("; ".join(c.failures)) + "[/]")
    con = out()
    con.print(table)
    con.print(("[green]" if report.passed else "[red]") + _esc(report.verdict()) + "[/]")


class BenchProgress(_Bar):
    """A rich progress bar over benchmark cases (stderr, so it never mixes with --json)."""

    def __init__(self, enabled: bool = True, title: str = "bench"):
        from .console import err

        self.enabled = enabled and err().is_terminal  # a bar in a log file is noise
        self.title = title

    def _make(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from .console import err

        return Progress(TextColumn(f"[bold]{self.title}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                        TimeElapsedColumn(), console=err(), transient=True)

    def update(self, label: str, done: int, total: int) -> None:
        if self._progress is None:
            return
        if self._task is None:
            self._task = self._progress.add_task(label, total=total)
        self._progress.update(self._task, completed=done, description=label)


class ScoreProgress(_Bar):
    """A rich progress bar over images scored, with images/s (stderr, so it never mixes with --json)."""

    def __init__(self, enabled: bool = True):
        from .console import err

        self.enabled = enabled and err().is_terminal

    def _make(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn
        from rich.progress import TimeElapsedColumn, TimeRemainingColumn

        from .console import err

        return Progress(TextColumn("[bold]score"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=err(), transient=True)

    def update(self, done: int, total: int) -> None:
        if self._progress is None:
            return
        if self._task is None:
            self._task = self._progress.add_task("images", total=total, rate="")
        task = self._progress.tasks[0]
        rate = f"{task.speed:,.0f} images/s" if task.speed else ""
        self._progress.update(self._task, completed=done, rate=rate)


def print_score(summary: dict) -> None:
    """score's summary: where the rows went, how many, how fast, and the completeness check."""
    from .report import fmt_num

    s = summary
    rate = f", {fmt_num(s['images_per_second'])} images/s" if s.get("images_per_second") else ""
    threads = f"{s['threads_per_worker']} thread" + ("s" if s['threads_per_worker'] > 1 else "")
    where = f"Ray ({s['workers']} worker{'s' if s['workers'] > 1 else ''} × {threads}" + \
        (f", {s['address']})" if s.get("address") else ", local)") if s["engine"] == "ray" else "in-process"
    out().print(f"✓ {s['rows']:,} rows for {s['images']:,} images → {_esc(s['out'])} "
                f"({s['scored_now']:,} scored in {s['seconds']:.1f} s{rate}; {where}; {s['backend']})")
    if s["skipped_by_resume"]:
        out().print(f"  {s['skipped_by_resume']:,} rows were already written (--resume)")
    c = s["check"]
    out().print(f"  checked: one row per input, {c['rows']:,} rows, no duplicates, none missing "
                f"({s['shards']} parts)")
    if s["errors"]:
        out().print(f"  [yellow]{s['errors']:,} inputs could not be scored (their rows carry an error), e.g.[/]")
        for e in s["first_errors"]:
            out().print(f"    {_esc(e)}")


def print_bench(obj: dict) -> None:
    """The bench results as a rich table."""
    from rich.table import Table

    from .report import fmt_num

    table = Table(title="latency per call (host-to-host unless marked), " + obj["environment"].get("cpu", ""),
                  title_justify="left")
    for col in ("file", "backend/device", "mode", "thr", "batch", "p50 µs", "p99 µs", "images/s", "roofline",
                "vs bare p50/p99 (unchecked p50)", ""):
        table.add_column(col, justify="left" if col in ("file", "backend/device", "mode", "") else "right")
    for r in obj["results"]:
        where = f"{r['backend']}/{r['device']}"
        if r["status"] != "ok":
            table.add_row(r["file"], where, r.get("mode", ""), str(r.get("threads") or "-"), str(r["batch_size"]),
                          *["-"] * 5, f"[red]{_esc(r['status'])}: {_esc(r.get('reason', ''))}[/]")
            continue
        over = f"{r['overhead_p50']:.2f}/{r['overhead_p99']:.2f}" if r.get("overhead_p50") else "-"
        if r.get("unchecked_overhead_p50"):
            over += f" ({r['unchecked_overhead_p50']:.2f})"
        rf = f"{r['roofline_fraction']:.2f}" if r.get("roofline_fraction") else "-"
        note = "[yellow]" + _esc("; ".join(r["warnings"])) + "[/]" if r.get("warnings") else ""
        if r.get("split"):
            note = f"split: {_esc(r['split'])}" + (f"; {note}" if note else "")
        table.add_row(r["file"], where, r["mode"], str(r["threads"]), str(r["batch_size"]),
                      f"{r['p50_ms'] * 1e3:,.1f}", f"{r['p99_ms'] * 1e3:,.1f}", fmt_num(r["throughput_per_s"]), rf,
                      over, note)
    out().print(table)
    for t, rl in obj["baselines"].get("matmul", {}).items():
        out().print(f"MatMul roofline ({t} threads): {rl['gflops']:.0f} GFLOP/s; "
                    f"model: {obj['baselines'].get('flop_per_image') or '?'} FLOP/image")
    if obj.get("files"):
        out().print(f"wrote {', '.join(str(p) for p in obj['files'].values())}")


def print_predict(result: dict, top_k: int) -> None:
    """predict's labels and top-k probabilities, one row per input."""
    from rich.table import Table

    title = f"{result['model']} · {result['backend']} · {result['provider']}"
    if result.get("deployment"):
        d = result["deployment"]
        title = f"{result['model']} · chosen for batch {d['batch_size']}: {d['label']}"
    table = Table(title=_esc(title), title_justify="left")
    table.add_column("input")
    table.add_column("label", style="bold")
    table.add_column(f"top-{top_k}")
    for p in result["predictions"]:
        table.add_row(_esc(p["input"]), _esc(p["label"]),
                      "  ".join(f"{_esc(t['label'])} {t['probability']:.3f}" for t in p["top_k"]))
    out().print(table)


def print_inspect(file: str, info: dict) -> None:
    """inspect's description of a file or export folder, one row per fact."""
    import json

    from rich.table import Table

    table = Table(show_header=False, title=_esc(f"{file} ({info['kind']})"), title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    skip = {"metadata", "artifacts", "kind", "path"}
    for key, value in info.items():
        if key in skip:
            continue
        table.add_row(key, _esc(value if isinstance(value, str) else json.dumps(value)))
    for a in info.get("artifacts", []):
        table.add_row(_esc(f"artifact {a['file']}"), _esc(f"{a['format']}, {a['bytes']} bytes, sha256 {a['sha256'][:16]}…"))
    out().print(table)


def print_doctor(report: dict) -> None:
    """doctor's checks with their status and fixes."""
    from rich.table import Table

    style = {"ok": "[green]ok[/]", "info": "[blue]info[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}
    table = Table("check", "status", "detail", "fix")
    for c in report["checks"]:
        table.add_row(c["name"], style[c["status"]], _esc(c["detail"]), _esc(c["fix"]))
    out().print(table)


def print_train(result) -> None:
    """The trained model's one-line summary."""
    out().print(f"[green]✓[/green] {_esc(result.model)} on {_esc(result.dataset)}: test accuracy "
                f"{result.test_accuracy:.4f} after {result.epochs} epochs, "
                f"{result.seconds_per_epoch:.2f} s/epoch on {result.device} → {_esc(str(result.checkpoint))}")


def print_report(summary: dict) -> None:
    out().print(f"{summary['rows']} rows from {summary['machines']} machines → " + ", ".join(summary["files"].values()))


def print_serving(server) -> None:
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    model = server.RequestHandlerClass.keywords["model"]
    out().print(f"serving the demo page at [bold]{url}[/bold] with {_esc(str(model))} (Ctrl-C stops)")


def print_optimize(result: dict, out_dir: str) -> None:
    """optimize's choices: one row per batch size, with the runner-up and each runtime's default."""
    from rich.table import Table

    s = result["search"]
    table = Table(title=f"deployment per batch size · {result['environment'].get('cpu', '')}", title_justify="left")
    for col in ("batch", "chosen", "p50 µs", "p99 µs", "accuracy (Δ pts)", "runner-up (its p50 / chosen)",
                "defaults' p50 / chosen"):
        table.add_column(col, justify="right" if col in ("batch", "p50 µs", "p99 µs") else "left")
    for b, c in result["choices"].items():
        ru = c["runner_up"]
        defaults = ", ".join(f"{d['name'].split(' defaults')[0]} {d['speedup']:.2f}×" for d in c["defaults"])
        table.add_row(b, _esc(c["label"]), f"{c['p50_ms'] * 1e3:,.1f}", f"{c['p99_ms'] * 1e3:,.1f}",
                      f"{c['accuracy']:.4f} ({c['accuracy_delta'] * 100:+.2f})",
                      f"{ru['ratio']:.2f}×: {_esc(ru['label'])}" if ru else "—", defaults)
    out().print(table)
    out().print(f"✓ {s['passed_gate']} of {s['candidates']} candidates passed parity and the accuracy budget; "
                f"searched in {s['seconds']:.1f} s (budget {s['budget_s']:g} s) → {_esc(out_dir)} "
                f"(deploy.json, report.md, tradeoff.png)")
    for b, c in result["choices"].items():
        if c["within_noise"]:
            out().print(f"  batch {b}: within noise ({c['noise'] * 100:.1f} %) of the choice: "
                        f"{_esc('; '.join(c['within_noise']))}; the simpler was kept")
    for b, c in result["choices"].items():
        for d in c["defaults"]:
            if not d["at_least_as_fast"]:
                out().print(f"  [yellow]batch {b}: {_esc(d['name'])} ran {1 / d['speedup']:.2f}× faster than the choice in "
                            f"the deciding round, beyond its {c['noise'] * 100:.1f} % noise band (a noisy machine?)[/]")
    if not s["within_budget"]:
        out().print(f"  [yellow]the search took {s['seconds']:.1f} s, over its {s['budget_s']:g} s budget[/]")
