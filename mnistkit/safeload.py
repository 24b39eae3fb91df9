"""The loading gate for torch archives: no code from a checkpoint, .ts or .pt2 ever runs.

torch deserializes with pickle in several places that a caller cannot configure: `torch.export.load`
unpickles pickled weights, constants and `data/sample_inputs/*.pt` with `weights_only=False`, and
AOTInductor packages carry shared libraries that it loads. So before torch reads any archive, every
pickle inside it is run through a *simulating* unpickler: each global the pickle asks for is checked
against one allowlist (below), and nothing is ever imported or called — allowed globals become inert
placeholders, so even an allowed name cannot do anything during the check. A pickle that asks for
anything else is refused with one line naming the archive entry and the global, e.g.

    model.pt2: refuses to load: data/sample_inputs/model.pt calls posix.system

Simulating (rather than scanning opcodes) sees every global however the pickle builds its name
(STACK_GLOBAL from memoised strings, EXT codes). Torch-free: pickle, zipfile and json only; the
allowlist takes torch's own weights_only list when torch is importable.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import PurePosixPath

from .errors import ArtifactError

# No pickle in a model archive of this toolkit's size comes near this; a member that claims more is
# refused before it is read, so a zip bomb cannot exhaust memory (checked: MLP/CNN pickles < 10 KB).
MAX_PICKLE_BYTES = 64 << 20
MAX_NESTING = 2  # a torch.save zip inside a .pt2 is one level; deeper nesting is refused

# Globals a model archive may legitimately name, beyond torch's own weights_only allowlist, each
# with its reason. Anything else is refused.
EXTRA_ALLOWED = {
    # TorchScript's C++ unpickler builds lists/tuples of ints etc. through these helpers
    "torch.jit._pickle.build_intlist": "TorchScript: list[int] constants",
    "torch.jit._pickle.build_tensorlist": "TorchScript: list[Tensor] constants",
    "torch.jit._pickle.build_doublelist": "TorchScript: list[float] constants",
    "torch.jit._pickle.build_boollist": "TorchScript: list[bool] constants",
    "torch.jit._pickle.build_genericlist": "TorchScript: generic list constants",
    "torch.jit._pickle.restore_type_tag": "TorchScript: typed containers",
    "builtins.set": "weights_only admits it; sets of names in metadata",
    "builtins.frozenset": "as set",
    "builtins.slice": "plain data",
    "builtins.range": "plain data",
}
# TorchScript archives name their own module classes as `__torch__.<path>`: torch.jit.load resolves
# them against the TorchScript code compiled from the archive (which cannot call Python), never by
# importing Python modules.
ALLOWED_PREFIXES = ("__torch__.",)

# Core of torch's weights_only list, used when torch cannot be imported (inspect on a machine with
# the core install). The full list, when torch is there, is torch._weights_only_unpickler's.
_FALLBACK_ALLOWED = {
    "collections.OrderedDict", "collections.Counter", "builtins.bytearray", "builtins.complex", "_codecs.encode",
    "torch.Size", "torch.device", "torch.Tensor", "torch.nn.parameter.Parameter", "torch.storage.TypedStorage",
    "torch.storage.UntypedStorage", "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3", "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_qtensor", "torch._tensor._rebuild_from_type_v2", "torch.serialization._get_layout",
    *(f"torch.{t}Storage" for t in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char",
                                    "Byte", "Bool", "ComplexFloat", "ComplexDouble", "QInt8", "QUInt8", "QInt32")),
    *(f"torch.{d}" for d in ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8",
                             "uint8", "bool", "complex64", "complex128", "qint8", "quint8", "qint32",
                             "per_tensor_affine", "per_channel_affine", "per_tensor_symmetric",
                             "per_channel_symmetric")),
}


def allowed_globals() -> frozenset[str]:
    """torch's weights_only allowlist (and what the user registered with torch.serialization.add_safe_globals),
    plus EXTRA_ALLOWED."""
    names = set(EXTRA_ALLOWED)
    try:
        from torch import _weights_only_unpickler as w

        names.update(w._get_allowed_globals())
        names.update(w._get_user_allowed_globals())
    except Exception:  # no torch, or its private helpers moved: the fixed core list
        names.update(_FALLBACK_ALLOWED)
    return frozenset(names)


class RefusedGlobal(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _Inert:
    """What every allowed global becomes during the check: accepts any use, does nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Inert()

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass

    def add(self, value):
        pass


class _Simulator(pickle.Unpickler):
    def __init__(self, stream, allowed: frozenset[str]):
        super().__init__(stream)
        self.allowed = allowed

    def find_class(self, module, name):
        full = f"{module}.{name}"
        if full in self.allowed or full.startswith(ALLOWED_PREFIXES):
            return type("Inert", (_Inert,), {})  # a class, so NEWOBJ's cls.__new__ works too
        raise RefusedGlobal(full)

    def persistent_load(self, pid):
        return _Inert()  # tensor storages: data, never code


# Legacy (non-zip) torch.save writes five pickles (magic number, protocol, system info, the object,
# the storage keys) and then raw storage bytes, which are not pickles and are not read as such.
LEGACY_PICKLES = 5


def check_pickle(data: bytes, allowed: frozenset[str] | None = None, max_pickles: int = 1) -> None:
    """Simulate unpickling `data`: up to `max_pickles` concatenated pickles, as torch would read them.

    Raises RefusedGlobal on the first global outside the allowlist and ValueError when the bytes are
    not a well-formed pickle (torch would fail on them too).
    """
    allowed = allowed_globals() if allowed is None else allowed
    stream = io.BytesIO(data)
    for _ in range(max_pickles):
        if stream.tell() >= len(data):
            break
        try:
            _Simulator(stream, allowed).load()
        except RefusedGlobal:
            raise
        except RecursionError:
            raise ValueError("nested too deeply") from None
        except Exception as exc:  # malformed bytes: UnpicklingError, EOFError, struct errors, ...
            raise ValueError(f"{exc.__class__.__name__}: {exc}"[:160]) from None


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> bytes:
    if info.file_size > MAX_PICKLE_BYTES:
        raise ArtifactError(f"{label}: refuses to load: entry {info.filename} claims {info.file_size} bytes "
                            f"(a model pickle is at most {MAX_PICKLE_BYTES >> 20} MiB)")
    try:
        with zf.open(info) as f:
            data = f.read(MAX_PICKLE_BYTES + 1)
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError, ValueError) as exc:
        raise ArtifactError(f"{label}: corrupt archive entry {info.filename} ({exc})") from None
    if len(data) > MAX_PICKLE_BYTES:
        raise ArtifactError(f"{label}: refuses to load: entry {info.filename} inflates past "
                            f"{MAX_PICKLE_BYTES >> 20} MiB")
    return data


class RefusedArtifact(ArtifactError):
    """An archive whose pickles ask for a global outside the allowlist."""

    def __init__(self, label: str, entry: str, name: str):
        super().__init__(f"{label}: refuses to load: {entry} calls {name} (a model archive may unpickle only "
                         "tensors and plain data)")
        self.label, self.entry, self.global_name = label, entry, name


def _check_pickle_entry(data: bytes, label: str, entry: str, allowed, max_pickles: int = 1,
                        complete: bool = True) -> None:
    """`complete`: False when `data` is only the first MAX_PICKLE_BYTES of what torch would read."""
    try:
        check_pickle(data, allowed, max_pickles)
    except RefusedGlobal as exc:
        raise RefusedArtifact(label, entry, exc.name) from None
    except ValueError:
        # Malformed bytes. The real unpickler walks the same opcodes (inert placeholders never fail
        # where real objects would succeed), so it stops at the same place having met only allowed
        # globals: safe to let torch report the corruption in its own words. Unless the bytes were
        # cut short here: then what follows was never checked.
        if not complete:
            raise ArtifactError(f"{label}: refuses to load: its pickles run past "
                                f"{MAX_PICKLE_BYTES >> 20} MiB") from None


def _raw_payloads(zf: zipfile.ZipFile, names: list[str], label: str) -> set[str]:
    """Members of a .pt2 that torch reads as raw tensor bytes (use_pickle false in a payload config)."""
    raw: set[str] = set()
    for name in names:
        if not name.endswith("_config.json") or "/data/" not in f"/{name}":
            continue
        try:
            config = json.loads(_read_member(zf, zf.getinfo(name), label)).get("config", {})
        except (ValueError, AttributeError):
            raise ArtifactError(f"{label}: corrupt payload config {name}") from None
        folder = str(PurePosixPath(name).parent)
        for meta in config.values() if isinstance(config, dict) else ():
            if isinstance(meta, dict) and not meta.get("use_pickle") and isinstance(meta.get("path_name"), str):
                raw.add(f"{folder}/{meta['path_name']}")
    return raw


# ---------------------------------------------------------------------------------------------
# A torch.export program's JSON: three more ways torch would run code from the file
#
# torch.export.load resolves each node's "target" by getattr from the `torch` module (so
# "torch.serialization.os.system" would reach os.system, called when the program runs), parses every
# symbolic-shape expression with sympy.sympify (which evaluates the string), and `.module()` execs the
# program's "guards_code". The gate admits only what torch.export itself writes for models of this kind.

_SAFE_OPERATOR = {"getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "neg", "pos", "abs", "eq", "ne",
                  "lt", "le", "gt", "ge", "and_", "or_", "not_", "pow"}
_SAFE_MATH = {"ceil", "floor", "trunc", "sqrt", "log", "exp"}
# torch functions that exported graphs call for symbolic shapes and runtime checks
_SAFE_TORCH = {"sym_int", "sym_float", "sym_max", "sym_min", "sym_not", "sym_sqrt", "sym_ite", "sym_sum",
               "_sym_sqrt", "_check", "_check_is_size", "_assert_async", "_assert_scalar"}
# The names a sympy expression written by torch.export may use: sympy's constructors and assumptions,
# torch's sympy functions (torch.utils._sympy.functions), and symbol names (s0, u3, ...).
_SYMPY_NAMES = {
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs", "Eq", "Ne", "Lt",
    "Le", "Gt", "Ge", "And", "Or", "Not", "true", "false", "True", "False", "oo", "zoo", "nan", "Piecewise",
    "floor", "ceiling", "sqrt", "log", "exp", "FloorDiv", "CeilDiv", "CleanDiv", "ModularIndexing", "Where",
    "PythonMod", "IntTrueDiv", "FloatTrueDiv", "ToFloat", "TruncToInt", "TruncToFloat", "RoundToInt",
    "RoundDecimal", "FloorToInt", "CeilToInt", "IsNonOverlappingAndDenseIndicator", "Identity", "OpaqueUnaryFn",
    "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or", "PowByNatural", "FloatPow", "LShift", "RShift",
    "positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite", "infinite", "zero",
    "nonzero", "even", "odd", "prime", "composite", "rational", "commutative",
}
_SYMBOL_NAME = None
_EXPR_TOKEN = None


def _expr_ok(text: str) -> bool:
    """A symbolic expression made only of sympy/torch names, symbol names, numbers and operators."""
    import re

    global _SYMBOL_NAME, _EXPR_TOKEN
    if _EXPR_TOKEN is None:
        _SYMBOL_NAME = re.compile(r"[a-z]{1,3}\d+\Z")
        _EXPR_TOKEN = re.compile(r"\s+|'[A-Za-z0-9_]+'|\d+(?:\.\d+)?(?:e[-+]?\d+)?|[A-Za-z_][A-Za-z0-9_]*|[-+*/%(),=<>!&|~^]")
    if "__" in text or len(text) > 10_000:
        return False
    pos = 0
    while pos < len(text):
        m = _EXPR_TOKEN.match(text, pos)
        if m is None:
            return False
        tok = m.group()
        if tok[0].isalpha() or tok[0] == "_":
            if tok not in _SYMPY_NAMES and not _SYMBOL_NAME.match(tok):
                return False
        pos = m.end()
    return True


def _target_ok(target: str) -> bool:
    if "__" in target:
        return False
    head, _, rest = target.partition(".")
    if head == "torch":
        return rest.startswith("ops.") or rest in _SAFE_TORCH
    if head == "_operator":
        return rest in _SAFE_OPERATOR
    if head == "math":
        return rest in _SAFE_MATH
    return False


def _check_program_json(data: bytes, label: str, entry: str) -> None:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return  # torch cannot read it either, and reports it in its own words
    stack = [doc]
    seen = 0
    while stack:
        obj = stack.pop()
        seen += 1
        if seen > 5_000_000:
            raise ArtifactError(f"{label}: refuses to load: {entry} is too large a program")
        if isinstance(obj, list):
            stack.extend(obj)
            continue
        if not isinstance(obj, dict):
            continue
        for key, value in obj.items():
            if key == "target" and isinstance(value, str) and not _target_ok(value):
                raise ArtifactError(f"{label}: refuses to load: {entry} calls {value} (an exported program may "
                                    "call torch operators only)")
            if key == "expr_str" and isinstance(value, str) and not _expr_ok(value):
                raise ArtifactError(f"{label}: refuses to load: {entry} holds a shape expression that is not "
                                    f"plain arithmetic ({value[:60]!r}); torch would evaluate it")
            if key == "range_constraints" and isinstance(value, dict):
                bad = next((k for k in value if not _expr_ok(str(k))), None)
                if bad is not None:
                    raise ArtifactError(f"{label}: refuses to load: {entry} holds a shape symbol that is not "
                                        f"plain arithmetic ({str(bad)[:60]!r})")
            if key == "guards_code" and value:
                raise ArtifactError(f"{label}: refuses to load: {entry} carries guard code "
                                    f"({len(value) if isinstance(value, list) else 1} line(s)) that torch would "
                                    "execute; mnistkit loads programs without it (as torch.export writes them "
                                    "for a dynamic batch)")
            if isinstance(value, (dict, list)):
                stack.append(value)


def check_archive(path, label: str | None = None, allowed: frozenset[str] | None = None, _depth: int = 0,
                  _data: bytes | None = None) -> None:
    """Refuse a torch archive (checkpoint, TorchScript, .pt2, legacy torch.save file) that would run code.

    Raises ArtifactError naming the entry and the global; returns None when every pickle inside is
    made of tensors and plain data. Archives holding compiled code (AOTInductor shared libraries)
    are refused outright.
    """
    label = label or str(path)
    allowed = allowed_globals() if allowed is None else allowed
    head = _data
    if head is None:
        try:
            with open(path, "rb") as f:
                head = f.read(2)
                if head != b"PK":  # a legacy file: only its leading pickles are read, once
                    head += f.read(MAX_PICKLE_BYTES - 1)
                    complete = not f.read(1)
        except OSError as exc:
            raise ArtifactError(f"{label}: cannot read ({exc.strerror or exc})") from None
    else:
        complete = len(head) <= MAX_PICKLE_BYTES
    if head[:2] != b"PK":  # legacy torch.save: five small pickles, then raw storage bytes
        _check_pickle_entry(head[:MAX_PICKLE_BYTES], label, "the pickle", allowed, LEGACY_PICKLES, complete)
        return
    source = io.BytesIO(_data) if _data is not None else path
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ArtifactError(f"{label}: corrupt or truncated zip archive ({exc})") from None
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        is_pt2 = any(n.endswith("/archive_format") or n == "archive_format" for n in names)
        raw = _raw_payloads(zf, names, label) if is_pt2 else set()
        for info in infos:
            name = info.filename
            parts = PurePosixPath(name).parts
            inner = "/".join(parts[1:]) if len(parts) > 1 else name  # without the archive's root folder
            if "aotinductor" in parts or name.endswith((".so", ".dll", ".dylib", ".cpp", ".o")):
                raise ArtifactError(f"{label}: refuses to load: {inner} is compiled code (AOTInductor "
                                    "package); only torch.export programs without native code are loaded")
            if is_pt2 and "models" in parts[:-1] and name.endswith(".json"):
                _check_program_json(_read_member(zf, info, label), label, inner)
                continue
            pickled = name.endswith((".pkl", ".debug_pkl"))
            if is_pt2 and "data" in parts[:-1] and not name.endswith(".json") and name not in raw \
                    and ".data" not in parts:
                pickled = True  # pickled weights/constants, sample inputs, legacy payloads: torch unpickles them
            if not pickled:
                continue
            data = _read_member(zf, info, label)
            if data[:2] == b"PK":  # a torch.save zip inside the archive (sample inputs, pickled weights)
                if _depth >= MAX_NESTING:
                    raise ArtifactError(f"{label}: refuses to load: archives nested deeper than {MAX_NESTING}")
                try:
                    check_archive(None, label, allowed, _depth + 1, data)
                except RefusedArtifact as exc:  # name the entry of the outer archive, as torch sees it
                    raise RefusedArtifact(label, inner, exc.global_name) from None
                continue
            _check_pickle_entry(data, label, inner, allowed, 1 if name.endswith("pkl") else LEGACY_PICKLES)
