"""Score many images with one artifact: Parquet out, exactly one row per input, on Ray Data or in-process.

The work is cut into *shards* planned from file headers only (an IDX or .npy file's header, a Parquet
file's footer, a folder's listing): a range of images of one array file, one Parquet row group, or up
to IMAGE_SHARD_FILES image files. The driver never reads a pixel. Each shard is scored by a worker
that loaded the artifact once through mnistkit's backend contract (any runtime) and writes the
shard's rows to its own part file, `part-<shard key>.parquet`, under a temporary name renamed into
place when complete. So:

- a retried shard (Ray restarts a worker that died and re-runs its task) rewrites the same part:
  retries are idempotent, never duplicates;
- `--resume` skips the shards whose part is already there (its footer names the shard and the model);
- before anything says success, the driver checks every part against its shard (row count from the
  footer, then the ids themselves, part by part) and writes `_SUCCESS.json` with the counts.

Why not Ray Data's own readers and `write_parquet`: `read_numpy` and `read_parquet` yield rows
without their position in the file, so no stable id (file + index) can be made, and `write_parquet`
names files by block, so a retried or resumed block cannot be matched to what it replaces. Ray Data
does what it is good at here: distributing the shards over an actor pool, restarting dead actors and
retrying their tasks, streaming results back. Without Ray the same shards run in-process, one after
another, in bounded memory.
"""

# The package, by job: shards.py (planning from headers, the pixel Layout), read.py (a shard read chunk by chunk in
# the worker), worker.py (the Scorer: one artifact, shards into part files), output.py (the output folder: its lock,
# --resume, the one-row-per-input check), run.py (the run: in-process or on Ray).

from .output import SUMMARY, check_output, output_lock  # noqa: E402
from .run import ScoreConfig, ray_installed, score  # noqa: E402
from .shards import IMAGE_SHARD_FILES, SHARD_ROWS, Layout, Shard, plan  # noqa: E402
from .worker import StrictError  # noqa: E402

__all__ = ["IMAGE_SHARD_FILES", "SHARD_ROWS", "SUMMARY", "Layout", "ScoreConfig", "Shard", "StrictError", "check_output",
           "output_lock", "plan", "ray_installed", "score"]
