"""Predict labels for image files with any model file on any backend.

On an .onnx with the onnxruntime backend this imports neither torch nor torchvision: the core
install (onnxruntime, numpy, pillow) is enough.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from .compare import probabilities
from .errors import InvalidInputError
from .preprocess import load_inputs


DEFAULT_TOP_K = 3  # the classes shown per input


def predict(model, inputs, backend: str | None = None, device: str = "cpu", top_k: int = DEFAULT_TOP_K,
            allow_fallback: bool = False, threads: int | None = None) -> dict:
    """Run `model` on every input file; return {"predictions": [...], "backend", "provider", ...}.

    `model` may be a deploy folder (`mnistkit optimize`): the configuration chosen for the batch size nearest
    the number of images runs them."""
    from .backends import create_backend
    from .deploy import deploy_choice, is_deploy_folder, load_deployment, read_deploy

    if top_k < 1:
        raise InvalidInputError(f"--top-k {top_k}: expected >= 1")
    if not inputs:
        raise InvalidInputError("no input files given")
    deploy = is_deploy_folder(model)
    if deploy and (backend is not None or device != "cpu" or threads is not None):
        raise InvalidInputError(f"{model}: a deploy folder runs the configuration it records; --backend, --device "
                                "and --threads go with a model file")
    options = {"allow_fallback": allow_fallback} if allow_fallback else {}
    recorded = read_deploy(model) if deploy else None
    b = load_deployment(model, None, recorded) if deploy else \
        create_backend(model, backend, device, threads=threads, **options)
    with contextlib.ExitStack() as stack:
        b.load()
        stack.callback(lambda: b.close())  # late-bound: closes whichever backend `b` is at the end
        info = b.info
        samples = [s for path in inputs for s in load_inputs(path, info.recipe, info.geometry, info.transforms)]
        if deploy and deploy_choice(recorded, len(samples))[0] != b.deployment["batch_size"]:
            b.close()  # the choice for this many images (the largest batch's was opened to read the recipe)
            b = load_deployment(model, len(samples), recorded)
            info = b.info
        results: dict[int, np.ndarray] = {}
        for form in ("uint8", "float"):
            idx = [i for i, s in enumerate(samples) if s.form == form]
            if idx:
                batch = np.stack([samples[i].array for i in idx])
                out = b.run(batch)
                if not isinstance(out, np.ndarray) or out.ndim != 2 or len(out) != len(batch):
                    shape = list(out.shape) if isinstance(out, np.ndarray) else type(out).__name__
                    raise InvalidInputError(f"{model}: the model's output is {shape} for a batch of {len(batch)}; "
                                            "expected logits [N,C]")
                for i, row in zip(idx, out):
                    results[i] = row
        logits = np.stack([results[i] for i in range(len(samples))])
        bad = [samples[i].name for i in np.flatnonzero(~np.isfinite(logits).all(axis=1))]
        if bad:  # a NaN has no argmax worth reporting: never turn it into a label
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            raise InvalidInputError(f"{model}: the model's outputs are not finite (NaN or infinite logits) for "
                                    f"{bad[0]}{more}; expected finite logits, so no label is given")
        if not info.described and logits.shape[1] != info.num_classes:  # a model from elsewhere: classes by index
            info.labels = [str(i) for i in range(logits.shape[1])]
        if logits.shape[1] != info.num_classes:
            raise InvalidInputError(
                f"{model}: the model has {logits.shape[1]} outputs but {info.num_classes} labels")
        probs = probabilities(logits.astype(np.float64))
        k = min(top_k, info.num_classes)
        predictions = []
        for s, p in zip(samples, probs):
            order = np.argsort(-p, kind="stable")[:k]
            predictions.append({
                "input": s.name,
                "label": info.labels[int(order[0])],
                "index": int(order[0]),
                "probabilities": {lab: float(x) for lab, x in zip(info.labels, p)},
                "top_k": [{"label": info.labels[int(j)], "probability": float(p[j])} for j in order],
            })
        return {
            "model": str(Path(model)),
            "kind": info.kind,
            "backend": b.name,
            "device": b.device,
            "provider": b.provider,
            "recipe": info.recipe,
            "notes": list(b.notes),
            **({"deployment": {k: b.deployment[k] for k in ("batch_size", "label", "file", "backend", "threads",
                                                             "options")}} if deploy else {}),
            "predictions": predictions,
        }
