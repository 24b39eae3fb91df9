"""`mnistkit optimize`: the fastest verified deployment of a model for each batch size, and `deploy/`.

The search, in four steps, each narrowing the one before (all in one process, on the same cores):

1. Plan: every artifact of the export (exporting the formats missing) x every CPU runtime that opens it x
   threads (1 .. usable cores) x the runtime options that matter, as each backend file says
   (`BackendSpec.plan_options`: ONNX Runtime's spinning and graph levels, OpenVINO's hint and bf16 precision
   where the CPU has it, LiteRT's XNNPACK delegate on int8 files). Combinations that cannot differ, runtimes
   not to deploy, and formats the table says are not CPU formats are pruned by reasoning before anything
   runs, each with its reason, stated in the report.
2. Gate: every candidate runs the full test split; it must pass its format's parity tolerance against
   PyTorch and the accuracy budget (`--max-accuracy-drop`) before it is timed.
3. Screen: each candidate is timed briefly at each batch size; those within SCREEN_KEEP of the fastest go on.
4. Decide: the survivors are timed in interleaved blocks (bench's harness), then the three fastest are timed
   again, with mnistkit's own configuration of each runtime default (same file, every core, no option changed),
   interleaved with each runtime's own defaults (a bare session as a user would write it). The noise
   band is measured: how far the same candidates' medians moved between the two interleaved rounds
   (at least MIN_NOISE, at most MAX_NOISE). Among the candidates within the band of the fastest the simplest
   is chosen (fp32 over int8, fewer threads, the core install, default options); so the choice is within
   1 + MAX_NOISE = 1.05x of the fastest measured, and the decision is a pure function of the measurements
   (`choose`).

What is timed: `backend.unchecked()(batch)` of mnistkit's backend configured as the candidate says, numpy in and
out, on the artifact's native input form (normalized float32, or uint8 pixels for app-ready files): the
configuration's own cost. The defaults it must beat are bare runtime calls, which check nothing either;
`run()`'s input checks (a dot product over the batch for finiteness: ~7 % at batch 1024 on 2 cores) are the same
for every float candidate, so they would only blur the ranking; they are timed for the choice, beside it
(`checked_run_p50_ms`).
"""

# The package, by job: candidates.py (1. the plan), qualify.py (2. the gate), defaults.py (each runtime's own
# defaults), decide.py (3-4. timings, the noise band, the decision), search.py (the command, within its budget),
# folders.py (the export folder searched, the deploy folder written), report.py (report.md, tradeoff.png).

from .search import DEFAULT_BATCH_SIZES, DEFAULT_BUDGET, DEFAULT_DEPLOY_DIR, MIN_BUDGET, optimize

__all__ = ["DEFAULT_BATCH_SIZES", "DEFAULT_BUDGET", "DEFAULT_DEPLOY_DIR", "MIN_BUDGET", "optimize"]
