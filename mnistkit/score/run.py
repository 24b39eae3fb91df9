"""`mnistkit score`: the run. The model (or a deploy folder's choice) probed once, the shards planned, then scored
on Ray Data's actor pool or in-process, checked, and _SUCCESS.json written."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


from ..errors import InvalidInputError, MissingDependencyError, first_line
from ..signals import publishing
from .output import SUMMARY, check_output, output_lock, prepare_out
from .shards import SHARD_ROWS, Layout, Shard, plan
from .worker import Scorer, _RayScorer


MAX_ERRORS_LISTED = 5


@dataclass
class ScoreConfig:
    model: str
    inputs: list[str]
    out: str
    backend: str | None = None
    batch_size: int = 1024
    top_k: int = 3
    workers: int | None = None  # Ray actors; None: cores // threads
    threads_per_worker: int = 1
    address: str | None = None  # a Ray cluster ("auto", "ray://host:10001"); None: a local Ray
    engine: str = "auto"  # "ray", "local" or "auto" (Ray when installed)
    resume: bool = False
    overwrite: bool = False
    strict: bool = False
    column: str | None = None
    shard_rows: int = SHARD_ROWS


def _model_or_deployment(config: ScoreConfig) -> tuple[str, str | None, dict, dict | None]:
    """(model file, backend, backend options, the deployment used or None). A deploy folder (`mnistkit optimize`)
    gives the file, runtime and options it chose for the batch size nearest --batch-size; threads stay
    --threads-per-worker (the choice's threads were measured for one process, workers x threads share the cores)."""
    from ..deploy import deploy_choice, is_deploy_folder, read_deploy

    if not is_deploy_folder(config.model):
        return config.model, config.backend, {}, None
    if config.backend is not None:
        raise InvalidInputError(f"{config.model}: a deploy folder runs the runtime it records; --backend goes with "
                                "a model file")
    b, c = deploy_choice(read_deploy(config.model), config.batch_size)
    return (str(Path(config.model) / c["file"]), c["backend"], dict(c["options"]),
            {"folder": str(config.model), "batch_size": b, "label": c["label"], "chosen_threads": c["threads"]})


def ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.data") is not None


def score(config: ScoreConfig, progress: Callable[[int, int], None] | None = None, log=None) -> dict:
    """Score every input into config.out; return the summary (also written as _SUCCESS.json)."""
    from ..backends import create_backend
    from ..fileio import atomic_write_json, sha256_file

    if config.batch_size < 1 or config.top_k < 1 or config.threads_per_worker < 1:
        raise InvalidInputError("--batch-size, --top-k and --threads-per-worker must be >= 1")
    if (config.engine == "ray" or config.address) and not ray_installed():
        raise MissingDependencyError("Ray is not installed: pip install 'mnistkit[scale]' (or run without --address "
                                     "to score in-process)")
    model, backend, options, deployment = _model_or_deployment(config)
    with create_backend(model, backend, "cpu", threads=1, **options) as probe:  # a bad model fails here, once
        info, backend_name = probe.info, probe.name
    sha = sha256_file(model)
    shards = plan(config.inputs, config.column, config.shard_rows, layout=Layout.of(info))
    out = Path(config.out)
    with output_lock(out):  # one score at a time per output folder: a --resume would delete a live run's parts
        done = prepare_out(out, shards, sha, config.resume, config.overwrite)
        todo = [s for s in shards if s.key not in done]
        total, skipped = sum(s.size for s in shards), sum(s.size for s in shards if s.key in done)
        cores = os.cpu_count() or 1
        threads = config.threads_per_worker
        workers = config.workers or max(1, cores // threads)
        kwargs = dict(model=str(Path(model).absolute()), out=str(out.absolute()), model_sha256=sha,
                      backend=backend, threads=threads, batch_size=config.batch_size, top_k=config.top_k,
                      strict=config.strict, options=options)
        t0 = time.perf_counter()
        counted = [skipped]
        first: list = []  # (time, rows) of the first rows written: what comes after is the steady state

        def advance(n: int) -> None:
            counted[0] += n
            if n and not first:
                first.append((time.perf_counter(), n))
            if progress:
                progress(counted[0], total)

        advance(0)
        engine = config.engine
        if engine == "auto":
            engine = "ray" if config.address or ray_installed() and len(todo) > 1 else "local"
            if engine == "local" and len(todo) == 1 and ray_installed() and log:
                # one shard is one worker's work: Ray's start (~6 s on 2 cores) would only add to it
                log(f"{todo[0].size:,} images are one shard: scoring in-process (Ray pays off from two shards, "
                    f"{config.shard_rows:,} images each)")
        if not todo:
            results = []
        elif engine == "ray":
            workers = min(workers, len(todo))  # an actor without a shard would only cost its start
            results = _run_ray(todo, kwargs, workers, threads, config.address, advance)
        else:
            if log and not ray_installed():
                log("Ray is not installed: scoring in-process, one shard after another (pip install 'mnistkit[scale]' "
                    "parallelizes it over cores or a cluster)")
            workers = 1
            results = _run_local(todo, kwargs, advance)
        end = time.perf_counter()
        seconds = end - t0
        check = check_output(out, shards)
        check_seconds = time.perf_counter() - end
        scored = sum(r["rows"] for r in results)
        steady = None
        if first and scored > first[0][1] and end > first[0][0]:
            steady = round((scored - first[0][1]) / (end - first[0][0]), 1)
        errors = check["error_rows"]
        first_errors = [r["first_error"] for r in results if r["first_error"]][:MAX_ERRORS_LISTED]
        summary = {
            "model": str(model), "model_sha256": sha, "kind": info.kind, "backend": backend_name,
            **({"deployment": deployment} if deployment else {}),
            "labels": list(info.labels), "engine": "ray" if engine == "ray" else "in-process",
            "address": config.address, "workers": workers,
            "threads_per_worker": threads, "batch_size": config.batch_size, "inputs": [str(i) for i in config.inputs],
            "images": total, "rows": check["rows"], "errors": errors, "first_errors": first_errors,
            "scored_now": scored, "skipped_by_resume": skipped, "shards": len(shards), "seconds": round(seconds, 3),
            "images_per_second": round(scored / seconds, 1) if seconds > 0 and scored else None,
            # Ray's start, the workers' start and the first shard, then the rate once every worker is busy
            "seconds_to_first_rows": round(first[0][0] - t0, 3) if first else None,
            "steady_images_per_second": steady, "check_seconds": round(check_seconds, 3),
            "check": check, "out": str(out),
        }
        with publishing(str(out)):
            atomic_write_json(out / SUMMARY, summary)
        return summary


def _run_local(todo: list[Shard], kwargs: dict, advance) -> list[dict]:
    scorer = Scorer(**kwargs)
    try:
        return [scorer.score_shard(s, advance) for s in todo]
    finally:
        scorer.close()


QUIET_LOGGERS = (  # Ray's start-up and Ray Data's execution notes; errors still show
    "ray", "ray.data", "ray._private.authentication.authentication_token_setup", "ray.data._internal.progress",
    "ray.data._internal.execution.streaming_executor")


def _run_ray(todo: list[Shard], kwargs: dict, workers: int, threads: int, address: str | None, advance) -> list[dict]:
    import logging
    import warnings

    from ..capture import native_stderr_captured

    # Ray's processes inherit fd 2 and print start-up notes from C++ (one per actor about how Ray Data passes
    # its arguments): kept off the terminal; every Ray log stays in its session folder, and errors come back
    # as exceptions
    with warnings.catch_warnings(), native_stderr_captured():
        warnings.simplefilter("ignore", DeprecationWarning)  # Ray Data's own deprecated settings, read at start
        # JAX (imported by an export earlier in this process) warns of any fork; Ray's fork is followed by exec
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        import ray
        import ray.data

        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        started = not ray.is_initialized()  # a Ray the caller started is theirs to keep; one started here stops
        if started:
            _check_reachable(address)
            cpus = None if address else max(os.cpu_count() or 1, workers * threads)
            from ..signals import keep_signal_handlers

            try:
                with keep_signal_handlers():  # Ray's driver handler would exit 15 without a line
                    ray.init(address=address, num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                             logging_level=logging.ERROR, configure_logging=False)
            except Exception as exc:
                from ..errors import BackendUnavailableError

                raise BackendUnavailableError(f"Ray did not start{f' at {address}' if address else ''}: "
                                              f"{first_line(exc, 200)}") from None
        try:
            return _run_dataset(todo, kwargs, workers, threads, advance)
        finally:
            if started:
                ray.shutdown()


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when a cluster address (host:port, ray://host:port) does not answer:
    ray.init keeps retrying an unreachable GCS for a long time."""
    import socket

    if not address or address == "auto" or address.startswith("local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidInputError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        from ..errors import BackendUnavailableError

        raise BackendUnavailableError(f"--address {address}: no Ray cluster answers there "
                                      f"({exc.strerror or exc}); start one with `ray start --head`, or leave "
                                      "--address out to use this machine") from None


def _run_dataset(todo: list[Shard], kwargs: dict, workers: int, threads: int, advance) -> list[dict]:
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    sizes = {s.key: s.size for s in todo}
    ds = ray.data.from_items([{"shard": s.to_json()} for s in todo], override_num_blocks=len(todo))
    job = type("_RayScorer", (_RayScorer,), {"KWARGS": kwargs, "__module__": __name__})
    ds = ds.map_batches(job, batch_size=1, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads)
    results = []
    try:
        for row in ds.iter_rows():
            r = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            results.append(r)
            advance(sizes.get(r["key"], r["rows"]))
    except Exception as exc:
        raise _unwrap(exc) from None
    return results


def _unwrap(exc: BaseException) -> BaseException:
    """A worker's own error (a --strict row, a bad input) out of Ray's wrapping, else one line."""
    from ..errors import MnistkitError

    seen, e = set(), exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, InvalidInputError):
            return type(e)(str(e))
        cause = getattr(e, "cause", None)
        e = cause if isinstance(cause, BaseException) else (e.__cause__ or e.__context__)
    return MnistkitError(f"the Ray job failed: {first_line(exc, 300)}")
