"""Shared plumbing of the PyTorch-family backends (eager, TorchScript, ExportedProgram)."""

from __future__ import annotations

import threading

import numpy as np

from ..errors import ArtifactError, BackendUnavailableError, InvalidInputError, first_line
from .base import Backend


def torch_device(device: str, auto: bool = False):
    """The torch.device for "cpu", "cuda" or (with `auto`, training's default) "auto": CUDA when usable.
    CUDA that cannot run is one BackendUnavailableError line saying why."""
    import torch

    if device == "auto" and auto:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no usable CUDA GPU was found"
            raise BackendUnavailableError(f"--device cuda: {why} (torch {torch.__version__}); use --device cpu"
                                          + (" or auto" if auto else ""))
        return torch.device("cuda")
    return torch.device("cpu")


def pin_tf32(enabled: bool) -> None:
    """TF32 off by default: with it on, CUDA matmuls differ from fp32 references by ~1e-3."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


class TorchBackend(Backend):
    """Subclasses implement `_load_module() -> (callable, ModelInfo)`.

    Options: tf32 (bool, default False; CUDA only).
    """

    def _load(self):
        import torch

        self._torch = torch
        self._lock = threading.Lock()
        self._dev = torch_device(self.device)
        if self.threads:
            torch.set_num_threads(self.threads)
        self.threads = torch.get_num_threads()
        if self._dev.type == "cuda":
            pin_tf32(bool(self.options.get("tf32", False)))
            self.provider = f"cuda:{torch.cuda.get_device_name(0)}" + (" (tf32)" if self.options.get("tf32") else "")
        else:
            self.provider = "cpu"
        self._module, info = self._load_module()
        return info

    def _load_module(self):
        raise NotImplementedError

    def _load_archive(self, loader, what: str):
        """(object, ModelInfo) from a TorchScript or .pt2 archive; its metadata is in extra/mnistkit.json."""
        import warnings

        from ..artifacts import archive_metadata, check_model, info_from_metadata
        from ..capture import captured_output
        from ..gate import UnsafeLoad, no_unsafe_loads

        check_model(self.path)  # the gate: pickles, TorchScript code, program nodes, sizes
        meta = archive_metadata(self.path)
        try:
            # torch.jit's FutureWarnings are said once, at export; torch's loggers print straight to
            # stderr (a malformed archive even made one raise inside logging): keep it for the message.
            # no_unsafe_loads: should the gate ever miss a pickle, torch's unpickling of it raises instead.
            with warnings.catch_warnings(), captured_output(), no_unsafe_loads():
                warnings.simplefilter("ignore")
                obj = loader(str(self.path))
        except UnsafeLoad as exc:
            raise ArtifactError(f"{self.path}: refuses to load: torch asked to unpickle part of it without "
                                f"weights_only ({exc.what}); nothing from it was run") from None
        except Exception as exc:
            raise ArtifactError(f"{self.path}: not a loadable {what} ({first_line(exc, 200)})") from None
        return obj, info_from_metadata(self.path, self.name, meta)

    def _forward(self, x):
        return self._module(x)

    def _infer(self, x: np.ndarray) -> np.ndarray:
        # One call at a time: MKL sizes its thread split by what else is running, so concurrent
        # calls are not bit-identical to serial ones (measured: ~4e-8 differences from 8 threads).
        # Each call still uses every intra-op thread, so serializing costs little throughput.
        # The thread count is per calling thread (an OpenMP setting): pin it, or a call from a new
        # thread would run with the default count and another split of the arithmetic.
        with self._lock:
            if self._torch.get_num_threads() != self.threads:
                self._torch.set_num_threads(self.threads)
            return self._infer_locked(x)

    def _infer_locked(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            t = torch.from_numpy(x)
            if self._dev.type == "cuda":
                t = t.to(self._dev, non_blocking=False)
            try:
                out = self._forward(t)
            except InvalidInputError:
                raise
            except Exception as exc:  # guards of an exported program, shape errors of user models
                first = first_line(exc)
                raise InvalidInputError(f"{self.name} rejected input {list(x.shape)} {x.dtype}: {first[:200]}") from None
            if isinstance(out, (tuple, list)):
                out = out[0]
            out = out.float()
            if out.device.type != "cpu":
                out = out.cpu()
            # fresh memory: the output tensor is new on every call, its numpy view owns nothing else
            return out.numpy()

    def _close(self):
        self._module = None

    def device_resident(self, batch: np.ndarray, cuda_graph: bool = False):
        """Return (call, sync) running on an input already on the device (no host copies).

        With cuda_graph, the forward pass is captured once and replayed (CUDA only).
        """
        torch = self._torch
        x = torch.from_numpy(self.to_native(batch)).to(self._dev)
        sync = torch.cuda.synchronize if self._dev.type == "cuda" else (lambda: None)
        if cuda_graph:
            if self._dev.type != "cuda":
                raise BackendUnavailableError("CUDA graphs need --device cuda")
            static_in = x.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), torch.inference_mode():
                for _ in range(3):  # warm-up on a side stream before capture, as the docs require
                    self._forward(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                static_out = self._forward(static_in)

            def call():
                graph.replay()

            call._keepalive = (static_in, static_out, graph)
            return call, sync

        def call():
            with torch.inference_mode():
                return self._forward(x)

        return call, sync
