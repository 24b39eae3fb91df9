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
from .gate import Refused, check_budget

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
    """torch's weights_only allowlist (and what the user registered with torch.serialization.add_safe_globals)
    when torch is already imported, else the fixed core list; plus EXTRA_ALLOWED. The gate never imports torch
    itself: a refusal costs no torch import (~1.5 s and ~400 MB)."""
    import sys

    names = set(EXTRA_ALLOWED) | _FALLBACK_ALLOWED
    if "torch" in sys.modules:
        try:
            from torch import _weights_only_unpickler as w

            names.update(w._get_allowed_globals())
            names.update(w._get_user_allowed_globals())
        except Exception:  # its private helpers moved: the fixed core list
            pass
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


# Bytes per element of the storage types torch.save records (TypedStorage class names); an untyped
# storage counts bytes. Unknown types count 16 (the widest).
_STORAGE_BYTES = {"Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2, "Char": 1,
                  "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16, "QInt8": 1, "QUInt8": 1, "QInt32": 4,
                  "Untyped": 1}


class BadTensor(ValueError):
    """A tensor whose storage or view torch would read out of bounds."""


class _Storage(_Inert):
    """A storage the pickle references: its record key and its claimed size in elements."""

    def __init__(self, key, numel: int):
        self.key, self.numel = key, numel


class _TensorView(_Inert):
    """torch._utils._rebuild_tensor(_v2)(storage, offset, size, stride, ...): the view must lie inside its
    storage. torch's C++ readers (TorchScript's constants) do not check it: a view past a short storage is an
    out-of-bounds read, a segfault (found by the fuzz hunt on a .ts whose constant's record was emptied)."""

    def __init__(self, storage=None, offset=0, size=(), stride=(), *rest, **kwargs):
        if not isinstance(storage, _Storage):
            return
        if not (isinstance(offset, int) and isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list))
                and len(size) == len(stride) and all(isinstance(v, int) for v in (*size, *stride))):
            raise BadTensor("a tensor whose offset, size or stride is not a list of integers")
        if offset < 0 or any(v < 0 for v in (*size, *stride)):
            raise BadTensor(f"a tensor with a negative offset, size or stride ({offset}, {list(size)}, {list(stride)})")
        if all(size):
            last = offset + sum((n - 1) * st for n, st in zip(size, stride))
            if last >= storage.numel:
                raise BadTensor(f"a tensor of size {list(size)} (offset {offset}, stride {list(stride)}) reaching element "
                                 f"{last} of a storage of {storage.numel}")


_VIEWS = {"torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2"}


class _Simulator(pickle.Unpickler):
    def __init__(self, stream, allowed: frozenset[str]):
        super().__init__(stream)
        self.allowed = allowed
        self.storage_bytes = 0  # what the storages it references claim (torch allocates them)
        self.storages: dict[str, int] = {}  # record key -> the bytes the pickle says it holds

    def find_class(self, module, name):
        full = f"{module}.{name}"
        if full in self.allowed or full.startswith(ALLOWED_PREFIXES):
            base = _TensorView if full in _VIEWS else _Inert
            return type("Inert", (base,), {"_global": full})  # a class, so NEWOBJ's cls.__new__ works too
        raise RefusedGlobal(full)

    def persistent_load(self, pid):
        # torch.save's zip layout: ('storage', storage type, key, location, numel); the legacy layout adds
        # view metadata. Tensors are data, never code: what matters is the size each claims.
        if isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage":
            kind = getattr(pid[1], "_global", "")
            per = _STORAGE_BYTES.get(kind.rsplit(".", 1)[-1].removesuffix("Storage"), 16)
            numel = pid[4]
            if isinstance(numel, int) and numel >= 0:
                self.storage_bytes += numel * per
                self.storages[str(pid[2])] = max(self.storages.get(str(pid[2]), 0), numel * per)
                return _Storage(pid[2], numel)
            raise ValueError("a storage of no size")
        return _Inert()


# Legacy (non-zip) torch.save writes five pickles (magic number, protocol, system info, the object,
# the storage keys) and then raw storage bytes, which are not pickles and are not read as such.
LEGACY_PICKLES = 5


def check_pickle(data: bytes, allowed: frozenset[str] | None = None, max_pickles: int = 1) -> int:
    """Simulate unpickling `data`: up to `max_pickles` concatenated pickles, as torch would read them.

    Returns the bytes of tensor storage the pickles claim. Raises RefusedGlobal on the first global outside
    the allowlist and ValueError when the simulation cannot finish (malformed bytes, or a pickle that only
    works once real objects are built: an allowed `_codecs.encode` producing the name for a STACK_GLOBAL
    is how one attack reached posix.system). Either is a refusal: a check that cannot finish never lets
    the file through.
    """
    return _simulate(data, allowed, max_pickles)[0]


def _simulate(data: bytes, allowed: frozenset[str] | None, max_pickles: int) -> tuple[int, dict[str, int]]:
    """(storage bytes claimed, record key -> bytes claimed) of check_pickle's simulation."""
    allowed = allowed_globals() if allowed is None else allowed
    stream = io.BytesIO(data)
    total = 0
    storages: dict[str, int] = {}
    for _ in range(max_pickles):
        if stream.tell() >= len(data):
            break
        sim = _Simulator(stream, allowed)
        try:
            sim.load()
        except (RefusedGlobal, BadTensor):
            raise
        except RecursionError:
            raise ValueError("nested too deeply") from None
        except Exception as exc:  # malformed bytes: UnpicklingError, EOFError, struct errors, ...
            raise ValueError(f"{exc.__class__.__name__}: {exc}"[:160]) from None
        total += sim.storage_bytes
        storages.update(sim.storages)
    return total, storages


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, limit: int = MAX_PICKLE_BYTES) -> bytes:
    if info.file_size > limit:
        raise Refused(label, f"entry {info.filename} claims {info.file_size} bytes "
                            f"(at most {limit >> 20} MiB for what mnistkit reads to check it)")
    try:
        with zf.open(info) as f:
            data = f.read(limit + 1)
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError, ValueError) as exc:
        raise ArtifactError(f"{label}: corrupt archive entry {info.filename} ({exc})") from None
    if len(data) > limit:
        raise Refused(label, f"entry {info.filename} inflates past {limit >> 20} MiB")
    return data


class RefusedArtifact(Refused):
    """An archive whose pickles ask for a global outside the allowlist."""

    def __init__(self, label: str, entry: str, name: str):
        super().__init__(label, f"{entry} calls {name} (a model archive may unpickle only tensors and plain data)")
        self.label, self.entry, self.global_name = label, entry, name


def _check_pickle_entry(data: bytes, label: str, entry: str, allowed, max_pickles: int = 1,
                        records: dict | None = None) -> int:
    """The storage bytes the pickle claims; refuses a global outside the allowlist, a pickle the simulation cannot
    finish, and (`records`: the archive's members) a storage whose record is missing or shorter than claimed:
    torch.save and torch.jit.save write X.pkl's storages as X/<key>, and a short one is read out of bounds."""
    try:
        total, storages = _simulate(data, allowed, max_pickles)
        if records is not None:
            folder = entry.removesuffix(".pkl")
            for key, nbytes in storages.items():
                info = records.get(f"{folder}/{key}")
                if info is None:
                    raise BadTensor(f"its tensor storage {folder}/{key} is missing")
                if info.file_size < nbytes:
                    raise BadTensor(f"its tensor storage {folder}/{key} holds {info.file_size} bytes of the "
                                     f"{nbytes} it claims")
        return total
    except RefusedGlobal as exc:
        raise RefusedArtifact(label, entry, exc.name) from None
    except BadTensor as exc:
        raise Refused(label, f"{entry}: {exc} (a truncated or altered archive; torch would read past the data)") from None
    except ValueError as exc:
        raise Refused(label, f"{entry} is not a pickle the gate can check to its end ({exc}); "
                            "not a file torch.save wrote (torch would retry such a pickle without weights_only)") from None


# ---------------------------------------------------------------------------------------------
# A torch.export program's JSON: three more ways torch would run code from the file
#
# torch.export.load resolves each node's "target" by getattr from the `torch` module (so
# "torch.serialization.os.system" would reach os.system, called when the program runs), parses every
# symbolic-shape expression with sympy.sympify (which evaluates the string), and `.module()` execs the
# program's "guards_code". The gate admits only what torch.export itself writes for models of this kind.

_SAFE_OPERATOR = {"getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "neg", "pos", "abs", "eq", "ne",
                  "lt", "le", "gt", "ge", "and_", "or_", "not_"}
_SAFE_MATH = {"ceil", "floor", "trunc", "sqrt"}
# torch functions that exported graphs call for symbolic shapes and runtime checks
_SAFE_TORCH = {"sym_int", "sym_float", "sym_max", "sym_min", "sym_not", "sym_sqrt", "sym_ite", "sym_sum",
               "_sym_sqrt", "_check", "_check_is_size", "_assert_async", "_assert_scalar"}
# The names a sympy expression written by torch.export may use: sympy's constructors and assumptions,
# torch's sympy functions (torch.utils._sympy.functions), and symbol names (s0, u3, ...). No power and no
# shift: `2**2**34` is 2.9 GB and minutes of sympy arithmetic from 12 characters.
_SYMPY_NAMES = {
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Mod", "Max", "Min", "Abs", "Eq", "Ne", "Lt",
    "Le", "Gt", "Ge", "And", "Or", "Not", "true", "false", "True", "False", "oo", "zoo", "nan", "Piecewise",
    "floor", "ceiling", "FloorDiv", "CeilDiv", "CleanDiv", "ModularIndexing", "Where",
    "PythonMod", "IntTrueDiv", "FloatTrueDiv", "ToFloat", "TruncToInt", "TruncToFloat", "RoundToInt",
    "RoundDecimal", "FloorToInt", "CeilToInt", "IsNonOverlappingAndDenseIndicator", "Identity",
    "positive", "negative", "nonnegative", "nonpositive", "integer", "real", "finite", "infinite", "zero",
    "nonzero", "even", "odd", "prime", "composite", "rational", "commutative",
}
MAX_EXPR_NUMBER = 10 ** 12  # a dimension, a stride or an offset; larger is not a shape of a classifier
MAX_PROGRAM_BYTES = 32 << 20  # the CNN's program is ~40 KB; torchvision's resnet18 ~0.6 MB
_SYMBOL_NAME = None
_EXPR_TOKEN = None


def _expr_ok(text: str) -> bool:
    """A symbolic expression made only of sympy/torch names, symbol names, bounded numbers and operators
    (no `**` and no shifts: nothing sympy would spend minutes or gigabytes evaluating)."""
    import re

    global _SYMBOL_NAME, _EXPR_TOKEN
    if _EXPR_TOKEN is None:
        _SYMBOL_NAME = re.compile(r"[a-z]{1,3}\d+\Z")
        _EXPR_TOKEN = re.compile(r"\s+|'[A-Za-z0-9_]+'|\d+(?:\.\d+)?(?:e[-+]?\d+)?|[A-Za-z_][A-Za-z0-9_]*|[-+*/%(),=<>!&|~^]")
    if "__" in text or "**" in text or "<<" in text or ">>" in text or "^" in text or len(text) > 10_000:
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
        elif tok[0].isdigit():
            try:
                if float(tok) > MAX_EXPR_NUMBER:
                    return False
            except (ValueError, OverflowError):
                return False
        pos = m.end()
    return True


def _target_ok(target: str) -> bool:
    return _target_problem(target) is None


def _target_problem(target: str) -> str | None:
    """None when a node target is on the allowlist, else why not."""
    from .gate.torch_ops import ATEN_OPS, CONTROL_FLOW

    if "__" in target:
        return "is not an operator"
    head, _, rest = target.partition(".")
    if head == "torch" and rest.startswith("ops."):
        parts = rest.split(".")  # ops, namespace, name[, overload]
        if len(parts) in (3, 4) and parts[1] == "aten" and parts[2] in ATEN_OPS:
            return None
        if len(parts) >= 3 and (parts[1] == "higher_order" or parts[2] in CONTROL_FLOW):
            return "is control flow that can loop; mnistkit runs classifiers without it"
        return "is not on mnistkit's operator allowlist (what image classifiers use; nothing that touches " \
               "files, processes or the network)"
    if head == "torch" and rest in _SAFE_TORCH or head == "_operator" and rest in _SAFE_OPERATOR \
            or head == "math" and rest in _SAFE_MATH:
        return None
    return "is not a torch operator"


def _size_bytes(meta: dict, label: str, entry: str) -> int:
    """The bytes of one tensor a program or payload config declares (symbolic sizes evaluated with every
    symbol at 1: per image)."""
    sizes = meta.get("sizes") if isinstance(meta, dict) else None
    if not isinstance(sizes, list):
        return 0
    numel = 1
    for size in sizes:
        value = size.get("as_int") if isinstance(size, dict) else None
        if value is None and isinstance(size, dict) and isinstance(size.get("as_expr"), dict):
            value = _per_image(size["as_expr"].get("expr_str"))
        if not isinstance(value, int) or value < 0:
            raise Refused(label, f"{entry} declares a tensor size mnistkit cannot bound "
                                f"({str(size)[:60]})")
        numel *= value
    dtype = meta.get("dtype")
    return numel * _SCALAR_BYTES.get(dtype if isinstance(dtype, int) else -1, 16)


# torch.export's ScalarType (torch/_export/serde/schema.py) -> bytes per element; unknown counts 16
_SCALAR_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 2, 7: 4, 8: 8, 9: 4, 10: 8, 11: 16, 12: 1, 13: 2, 14: 1, 15: 1}


def _per_image(expr) -> int | None:
    """A size expression's value with every symbol at 1, for plain arithmetic (+, -, *, //, %, Max, Min);
    None otherwise."""
    import ast

    if not isinstance(expr, str) or len(expr) > 1000:
        return None
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return None

    def value(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and abs(node.value) <= MAX_EXPR_NUMBER:
            return node.value
        if isinstance(node, ast.Name):
            return 1
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Symbol":
            return 1  # Symbol('s77', positive=True, integer=True): a batch size, counted per image
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Integer" \
                and len(node.args) == 1:
            return value(node.args[0])
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod)):
            a, b = value(node.left), value(node.right)
            if isinstance(node.op, (ast.FloorDiv, ast.Mod)) and b == 0:
                raise ValueError
            out = {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}.get(type(node.op))
            if out is None:
                out = a // b if isinstance(node.op, ast.FloorDiv) else a % b
            if abs(out) > MAX_EXPR_NUMBER ** 2:
                raise ValueError
            return out
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                "Max", "Min", "FloorDiv", "CeilDiv") and len(node.args) >= 1 and not node.keywords:
            args = [value(a) for a in node.args]
            f = node.func.id
            if f in ("FloorDiv", "CeilDiv"):
                if len(args) != 2 or args[1] == 0:
                    raise ValueError
                return args[0] // args[1] if f == "FloorDiv" else -(-args[0] // args[1])
            return max(args) if f == "Max" else min(args)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        raise ValueError

    try:
        return value(tree.body)
    except (ValueError, RecursionError):
        return None


def _check_program_json(data: bytes, label: str, entry: str) -> int:
    """Refuse a program that would run code or loop; return the bytes its tensors declare (batch 1)."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise Refused(label, f"{entry} is not a readable program (JSON)") from None
    if not isinstance(doc, dict):
        raise Refused(label, f"{entry} is not a torch.export program")
    stack = [doc]
    seen = 0
    while stack:
        obj = stack.pop()
        seen += 1
        if seen > 5_000_000:
            raise Refused(label, f"{entry} is too large a program")
        if isinstance(obj, list):
            stack.extend(obj)
            continue
        if not isinstance(obj, dict):
            continue
        for key, value in obj.items():
            if key == "target" and isinstance(value, str):
                problem = _target_problem(value)
                if problem is not None:
                    raise Refused(label, f"{entry} calls {value}, which {problem}")
            if key == "expr_str" and isinstance(value, str) and not _expr_ok(value):
                raise Refused(label, f"{entry} holds a shape expression that is not "
                                    f"plain arithmetic ({value[:60]!r}); torch would evaluate it")
            if key == "range_constraints" and isinstance(value, dict):
                bad = next((k for k in value if not _expr_ok(str(k))), None)
                if bad is not None:
                    raise Refused(label, f"{entry} holds a shape symbol that is not "
                                        f"plain arithmetic ({str(bad)[:60]!r})")
            if key == "guards_code" and value:
                raise Refused(label, f"{entry} carries guard code "
                                    f"({len(value) if isinstance(value, list) else 1} line(s)) that torch would "
                                    "execute; mnistkit loads programs without it (as torch.export writes them "
                                    "for a dynamic batch)")
            if key == "custom_obj_values" and value:
                raise Refused(label, f"{entry} holds C++ objects registered with torch "
                                    "(custom_obj_values); mnistkit loads programs made of tensors")
            if isinstance(value, (dict, list)):
                stack.append(value)
    graph = (doc.get("graph_module") or {}).get("graph") if isinstance(doc.get("graph_module"), dict) else None
    values = graph.get("tensor_values") if isinstance(graph, dict) else None
    return sum(_size_bytes(meta, label, entry) for meta in values.values()) if isinstance(values, dict) else 0


# ---------------------------------------------------------------------------------------------
# Archives: what torch reads, checked before it does


# torch.export's archive layout (torch/export/pt2_archive/constants.py), as torch.export.load reads it
_PT2_MODELS, _PT2_SAMPLE = "models/", "data/sample_inputs/{}.pt"
_PT2_WEIGHTS, _PT2_WEIGHTS_CONFIG = "data/weights/", "data/weights/{}_weights_config.json"
_PT2_CONSTANTS, _PT2_CONSTANTS_CONFIG = "data/constants/", "data/constants/{}_constants_config.json"
_PT2_TENSOR_CONSTANT = "tensor_"


def _records(infos: list[zipfile.ZipInfo], label: str) -> dict[str, zipfile.ZipInfo]:
    """The archive's members by the record name torch reads them by (the archive's root folder removed)."""
    roots = {i.filename.split("/", 1)[0] for i in infos}
    if len(roots) != 1 or any("/" not in i.filename for i in infos):
        raise Refused(label, "its members are not all inside one root folder "
                             "(torch.save, torch.jit.save and torch.export.save write one)")
    records: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename.split("/", 1)[1]
        parts = PurePosixPath(name).parts
        if not name or name.startswith("/") or ".." in parts or "\\" in name:
            raise Refused(label, f"member {info.filename!r} has an unsafe path")
        if name in records:
            raise Refused(label, f"member {info.filename!r} appears twice (which copy "
                                "torch reads is not defined)")
        records[name] = info
    return records


def check_archive(path, label: str | None = None, allowed: frozenset[str] | None = None, _depth: int = 0,
                  _data: bytes | None = None) -> None:
    """Refuse a torch archive (checkpoint, TorchScript, .pt2, legacy torch.save file) that would run code, loop,
    or take more memory than the model budget.

    Every pickle torch reads is simulated against the allowlist (a refusal names the entry and the global),
    every TorchScript method is checked against the operator allowlist (gate.torchscript), a .pt2 is read the
    way torch.export.load reads it (its program's targets and shape expressions; its weights and constants
    from the one payload config torch reads; pickled payloads, compiled code and C++ objects refused), and the
    members' declared sizes and the tensors' claimed sizes are held to the model budget.
    """
    label = label or str(path)
    allowed = allowed_globals() if allowed is None else allowed
    head = _data
    if head is None:
        try:
            with open(path, "rb") as f:
                head = f.read(2)
                if head != b"PK":  # a legacy file: only its leading pickles are read, once
                    head += f.read(MAX_PICKLE_BYTES)
        except OSError as exc:
            raise ArtifactError(f"{label}: cannot read ({exc.strerror or exc})") from None
    if head[:2] != b"PK":  # legacy torch.save: five small pickles, then raw storage bytes
        if len(head) > MAX_PICKLE_BYTES:
            raise Refused(label, f"its pickles run past {MAX_PICKLE_BYTES >> 20} MiB")
        claimed = _check_pickle_entry(head, label, "the pickle", allowed, LEGACY_PICKLES)
        check_budget(label, claimed, "the tensors its pickle claims")
        return
    source = io.BytesIO(_data) if _data is not None else path
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ArtifactError(f"{label}: corrupt or truncated zip archive ({exc})") from None
    with zf:
        infos = zf.infolist()
        check_budget(label, sum(i.file_size for i in infos), "its archive members (uncompressed)")
        records = _records(infos, label)
        for name in records:
            parts = PurePosixPath(name).parts
            if "aotinductor" in parts or name.endswith((".so", ".dll", ".dylib", ".cpp", ".o")):
                raise Refused(label, f"{name} is compiled code (AOTInductor "
                                    "package); only torch.export programs without native code are loaded")
        claimed = 0
        for name, info in records.items():
            if name.endswith((".pkl", ".debug_pkl")):  # checkpoints' data.pkl; TorchScript's data/constants
                claimed += _check_nested(zf, info, label, name, allowed, _depth, records)
        if "archive_format" in records:
            claimed += _check_pt2(zf, records, label, allowed, _depth)
        code = {name: info for name, info in records.items() if name.startswith("code/") and name.endswith(".py")}
        if code:
            from .gate.torchscript import check_sources

            check_sources({name: _read_member(zf, info, label) for name, info in code.items()}, label)
        check_budget(label, claimed, "the tensors it declares")


def _check_nested(zf, info, label: str, entry: str, allowed, depth: int, records: dict | None = None) -> int:
    """One pickled member, or a torch.save zip inside the archive (sample inputs): the storage bytes it claims."""
    data = _read_member(zf, info, label)
    if data[:2] == b"PK":
        if depth >= MAX_NESTING:
            raise Refused(label, f"archives nested deeper than {MAX_NESTING}")
        try:
            check_archive(None, label, allowed, depth + 1, data)
        except RefusedArtifact as exc:  # name the entry of the outer archive, as torch sees it
            raise RefusedArtifact(label, entry, exc.global_name) from None
        except Refused as exc:
            raise Refused(label, f"{entry}: {exc.reason}") from None
        except ArtifactError as exc:  # a corrupt nested archive
            raise Refused(label, f"{entry}: {str(exc).removeprefix(f'{label}: ')}") from None
        return 0  # the nested archive held its own budget
    return _check_pickle_entry(data, label, entry, allowed, 1 if entry.endswith("pkl") else LEGACY_PICKLES,
                               records if entry.endswith(".pkl") else None)


def _check_pt2(zf, records: dict, label: str, allowed, depth: int) -> int:
    """A .pt2 as torch.export.load reads it: each program under models/, its sample inputs, and its weights
    and constants from the payload configs torch reads (no other member is read). mnistkit loads archives
    of one program named "model" (what torch.export.save writes and torch.export.load returns)."""
    programs = [name for name in records if name.startswith(_PT2_MODELS)]
    if programs != [f"{_PT2_MODELS}model.json"]:
        raise Refused(label, f"it holds programs {programs[:4]}; mnistkit loads "
                            "archives of one program, models/model.json")
    claimed = _check_program_json(_read_member(zf, records[programs[0]], label, MAX_PROGRAM_BYTES), label,
                                  programs[0])
    sample = _PT2_SAMPLE.format("model")
    if sample in records:
        claimed += _check_nested(zf, records[sample], label, sample, allowed, depth)
    for folder, config_name, kind in ((_PT2_WEIGHTS, _PT2_WEIGHTS_CONFIG, "weights"),
                                      (_PT2_CONSTANTS, _PT2_CONSTANTS_CONFIG, "constants")):
        if f"{folder}model.pt" in records:
            raise Refused(label, f"its {kind} are in the legacy layout ({folder}model.pt), "
                                "which torch unpickles without weights_only; re-save it with torch.export.save")
        config_name = config_name.format("model")
        if config_name not in records:
            continue  # torch refuses the archive in its own words
        try:
            config = json.loads(_read_member(zf, records[config_name], label)).get("config")
        except (ValueError, AttributeError, RecursionError):
            raise Refused(label, f"{config_name} is not a readable payload config") from None
        if not isinstance(config, dict):
            raise Refused(label, f"{config_name} is not a payload config")
        for fqn, meta in config.items():
            where = f"{config_name} ({str(fqn)[:60]})"
            if not isinstance(meta, dict) or not isinstance(meta.get("path_name"), str):
                raise Refused(label, f"{where} is malformed")
            if meta.get("use_pickle"):
                raise Refused(label, f"{where} is stored as a pickle, which torch "
                                    "unpickles without weights_only; mnistkit loads raw tensor payloads")
            if kind == "constants" and not meta["path_name"].startswith(_PT2_TENSOR_CONSTANT):
                raise Refused(label, f"{where} is a Python or C++ object, not a tensor "
                                    "(torch would unpickle it)")
            nbytes = _size_bytes(meta.get("tensor_meta"), label, where)
            payload = records.get(f"{folder}{meta['path_name']}")
            if payload is None or payload.file_size < nbytes:  # torch would build the tensor over missing bytes
                found = "is missing" if payload is None else f"holds {payload.file_size} bytes of the {nbytes} declared"
                raise Refused(label, f"{where}: its payload {folder}{meta['path_name']} {found} (a truncated or "
                                     "altered archive)")
            claimed += nbytes
    return claimed
