"""A user's model class, taken from their own script without running the script. Torch-free.

Tutorial scripts train at import: `model = Net(); train(model); torch.save(model.state_dict(), "cnn.pth")`
at the top level, with no `if __name__ == "__main__":` guard. Importing such a file to get `Net`
retrains the model and overwrites the checkpoint the user wanted to export. So mnistkit reads the
file's source (Python's `ast` and `symtable`) and executes only what defines the class: the imports
it uses, the top-level classes and functions it depends on, and simple constant assignments
(literals, arithmetic, attribute lookups: nothing that calls anything). Top-level expressions,
loops, calls and `__main__` blocks never run. A class that needs a value the script computes at
run time is refused with the name, the line, and how to fix it; the whole script is never run
as a fallback. Anything the class definition prints goes to stderr.

The same reading finds the user's preprocessing: a `transforms.Normalize(mean, std)` with literal
arguments gives the normalization the model was trained with.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import importlib
import importlib.util
import symtable
import sys
import types
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidInputError, first_line
from .fileio import sha256_file

# Expression nodes a "simple constant" may contain: no calls, no comprehensions, no lambdas.
_STATIC_NODES = (ast.Constant, ast.Name, ast.Load, ast.Attribute, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare,
                 ast.Tuple, ast.List, ast.Set, ast.Dict, ast.IfExp, ast.Subscript, ast.Slice, ast.JoinedStr,
                 ast.FormattedValue, ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.expr_context)
_BUILTINS = set(dir(builtins)) | {"__name__", "__file__", "__doc__", "__builtins__", "__spec__", "__loader__"}
GUARD_HINT = ("move the class into its own file, or put the script's top-level work under "
              "`if __name__ == \"__main__\":`")


def _is_static(node: ast.AST) -> bool:
    return all(isinstance(n, _STATIC_NODES) for n in ast.walk(node))


def _is_main_guard(stmt: ast.stmt) -> bool:
    if not isinstance(stmt, ast.If):
        return False
    t = stmt.test
    return (isinstance(t, ast.Compare) and isinstance(t.left, ast.Name) and t.left.id == "__name__"
            and len(t.comparators) == 1 and isinstance(t.comparators[0], ast.Constant)
            and t.comparators[0].value == "__main__")


def _bound_names(stmt: ast.stmt) -> set[str]:
    """Names a top-level statement binds in the module namespace."""
    names: set[str] = set()
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        for alias in stmt.names:
            names.add(alias.asname or alias.name.split(".")[0])
        return names
    if isinstance(stmt, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        return {stmt.name}
    for node in ast.walk(stmt):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {a.asname or a.name.split(".")[0] for a in node.names}
    return names


def _what(stmt: ast.stmt) -> str:
    if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        return "an assignment that calls code"
    if isinstance(stmt, (ast.For, ast.AsyncFor, ast.While)):
        return "a loop"
    if isinstance(stmt, ast.If):
        return "an if block"
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        return "a with block"
    if isinstance(stmt, ast.Try):
        return "a try block"
    return type(stmt).__name__.lower()


def _global_refs(table: symtable.SymbolTable) -> set[str]:
    """Module-level names a class or function (and everything nested in it) refers to."""
    refs = {s.get_name() for s in table.get_symbols()
            if s.is_referenced() and (s.is_global() or (table.get_type() == "class" and not s.is_assigned()
                                                          and not s.is_local()))}
    for child in table.get_children():
        refs |= _global_refs(child)
    return refs


def _expr_names(nodes) -> set[str]:
    return {n.id for node in nodes if node is not None for n in ast.walk(node)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


@dataclass
class ClassSource:
    """Where a class came from: for the manifest, and to notice later that the file changed."""

    spec: str
    file: Path | None
    sha256: str | None


def load_class(spec: str) -> tuple[type, ClassSource]:
    """'path/to/file.py:Name' (read, not run) or 'package.module:Name' (imported): the model's class, or a
    function that builds the model (a factory: `torchvision.models:resnet18`, `train.py:make_model`).
    Raises InvalidInputError."""
    if ":" not in spec:
        raise InvalidInputError(f"--model-class {spec!r}: expected FILE.py:Class or package.module:Class "
                                "(or a function that builds the model)")
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where)
        if not path.is_file():
            raise InvalidInputError(f"--model-class {spec!r}: {path} is not a file")
        sha = sha256_file(path)
        return _class_from_file(path, name, spec, sha), ClassSource(spec, path.resolve(), sha)
    # an installed package: a library, imported as Python imports it (its prints go to stderr)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            module = importlib.import_module(where)
    except Exception as exc:
        raise InvalidInputError(f"--model-class {spec!r}: importing {where} failed: "
                                f"{exc.__class__.__name__}: {first_line(exc, 200)}") from None
    cls = getattr(module, name, None)
    if not callable(cls):
        raise InvalidInputError(f"--model-class {spec!r}: {where} defines no class or function {name!r}")
    origin = getattr(module, "__file__", None)
    return cls, ClassSource(spec, Path(origin).resolve() if origin else None, sha256_file(origin) if origin else None)


def _read_source(path: Path, spec: str) -> tuple[str, ast.Module]:
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"--model-class {spec!r}: cannot read {path} ({first_line(exc, 120)})") from None
    try:
        return text, ast.parse(text, str(path))
    except SyntaxError as exc:
        raise InvalidInputError(f"--model-class {spec!r}: {path}:{exc.lineno}: syntax error ({exc.msg})") from None


def _class_from_file(path: Path, name: str, spec: str, sha: str) -> type:
    text, tree = _read_source(path, spec)
    definers: dict[str, ast.stmt] = {}  # name -> the static statement that defines it
    runtime: dict[str, ast.stmt] = {}  # name -> a statement that binds it by running code
    for stmt in tree.body:
        if _is_main_guard(stmt):
            continue
        names = _bound_names(stmt)
        static = isinstance(stmt, (ast.Import, ast.ImportFrom, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
            static = _is_static(stmt.value)
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            static = _is_static(stmt.value)
        for n in names:
            if static:
                definers[n] = stmt
                runtime.pop(n, None)
            else:
                runtime[n] = stmt
                definers.pop(n, None)
    target = definers.get(name)
    if not isinstance(target, (ast.ClassDef, ast.FunctionDef)):
        if name in runtime:
            raise InvalidInputError(f"--model-class {spec!r}: {path.name}:{runtime[name].lineno} creates {name} inside "
                                    f"{_what(runtime[name])}; {GUARD_HINT}")
        raise InvalidInputError(f"--model-class {spec!r}: {path.name} defines no class or function {name!r} at its "
                                "top level")

    module_table = symtable.symtable(text, str(path), "exec")
    tables = {t.get_name(): t for t in module_table.get_children()}
    needed: list[str] = []
    queue = [name]
    while queue:
        n = queue.pop()
        if n in needed:
            continue
        needed.append(n)
        stmt = definers[n]
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(stmt, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            refs = _global_refs(tables[n]) if n in tables else set()
            outer = [*stmt.decorator_list]
            if isinstance(stmt, ast.ClassDef):
                outer += [*stmt.bases, *(k.value for k in stmt.keywords)]
            else:
                outer += [*stmt.args.defaults, *(d for d in stmt.args.kw_defaults if d is not None), stmt.returns]
                outer += [a.annotation for a in (*stmt.args.args, *stmt.args.kwonlyargs) if a.annotation]
            refs |= _expr_names(outer)
        else:
            refs = _expr_names([stmt.value] + ([stmt.annotation] if isinstance(stmt, ast.AnnAssign) else []))
        for ref in sorted(refs):
            if ref in definers:
                queue.append(ref)
            elif ref in runtime:
                s = runtime[ref]
                raise InvalidInputError(
                    f"--model-class {spec!r}: {name} needs {ref}, which {path.name}:{s.lineno} computes at run time "
                    f"({_what(s)}), and mnistkit never runs a script's top-level code; {GUARD_HINT}")
            # builtins, and names only the script's run-time code would provide, fail at definition below
    keep = [s for s in tree.body if any(definers.get(n) is s for n in needed)
            or (isinstance(s, ast.ImportFrom) and s.module == "__future__")]
    code = compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec")
    mod_name = f"_mnistkit_user_{path.stem}_{sha[:8]}"
    module = types.ModuleType(mod_name)
    module.__file__ = str(path.resolve())
    sys.modules[mod_name] = module
    folder = str(path.resolve().parent)
    added = folder not in sys.path
    if added:  # as when the script runs: its own folder is importable (models/layers.py next to it)
        sys.path.insert(0, folder)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            exec(code, module.__dict__)  # noqa: S102 - only the definitions, see the module docstring
    except Exception as exc:
        sys.modules.pop(mod_name, None)
        missing = f" (the name is not defined by the definitions mnistkit runs; {GUARD_HINT})" \
            if isinstance(exc, NameError) else ""
        raise InvalidInputError(f"--model-class {spec!r}: defining {name} from {path.name} failed: "
                                f"{exc.__class__.__name__}: {first_line(exc, 160)}{missing}") from None
    finally:
        if added:
            sys.path.remove(folder)
    return module.__dict__[name]


# ---------------------------------------------------------------------------------------------
# The user's preprocessing


@dataclass
class Normalization:
    mean: float | tuple[float, ...]  # one value for every channel, or one per channel
    std: float | tuple[float, ...]
    origin: str  # "main.py:113", "--mean/--std", or the default's description

    def record(self) -> dict:
        """As metadata records it: {"mean": [...], "std": [...]}."""
        as_list = lambda v: [float(x) for x in v] if isinstance(v, tuple) else [float(v)]  # noqa: E731
        return {"mean": as_list(self.mean), "std": as_list(self.std)}

    def text(self) -> str:
        show = lambda v: ", ".join(f"{x:g}" for x in v) if isinstance(v, tuple) else f"{v:g}"  # noqa: E731
        return f"mean {show(self.mean)}, std {show(self.std)}"


DEFAULT_ORIGIN = "default: ToTensor's pixels / 255 (no Normalize(...) found)"


def channel_values(value) -> float | tuple[float, ...] | None:
    """A Normalize argument's value: one float (every channel alike), a tuple (one per channel), else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, (tuple, list)) and value and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return float(value[0]) if len(set(value)) == 1 else tuple(float(v) for v in value)
    return None


def _literal_channel(node: ast.AST | None):
    if node is None:
        return None
    try:
        return channel_values(ast.literal_eval(node))
    except (ValueError, SyntaxError, TypeError):
        return None


def _calls(path: Path, names: set[str]):
    """Every call of a function or class named in `names` (bare or as an attribute) in a file's source."""
    try:
        tree = ast.parse(path.read_bytes().decode("utf-8"), str(path))
    except (OSError, UnicodeDecodeError, SyntaxError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name in names:
                yield name, node


def find_normalize(path: Path) -> list[tuple[int, object, object]]:
    """Every `Normalize(mean, std)` call in a file: (line, mean, std), None where not a literal."""
    found = []
    for _, node in _calls(path, {"Normalize"}):
        kw = {k.arg: k.value for k in node.keywords}
        mean = node.args[0] if len(node.args) > 0 else kw.get("mean")
        std = node.args[1] if len(node.args) > 1 else kw.get("std")
        found.append((node.lineno, _literal_channel(mean), _literal_channel(std)))
    return found


def _positive(v) -> bool:
    return all(x > 0 for x in v) if isinstance(v, tuple) else v > 0


def user_normalization(class_source: ClassSource | None, mean=None, std=None) -> Normalization:
    """The normalization a user's model was trained with: flags first, else the script's Normalize(...)."""
    if mean is not None or std is not None:
        return Normalization(channel_values(mean) if mean is not None else 0.0,
                             channel_values(std) if std is not None else 1.0, "--mean/--std")
    if class_source is None or class_source.file is None:
        return Normalization(0.0, 1.0, DEFAULT_ORIGIN)
    name = class_source.file.name
    calls = find_normalize(class_source.file)
    if not calls:
        return Normalization(0.0, 1.0, DEFAULT_ORIGIN)
    unreadable = [line for line, m, s in calls if m is None or s is None]
    if unreadable:
        raise InvalidInputError(f"{name}:{unreadable[0]}: Normalize(...) with values mnistkit cannot read from the "
                                "source (not literal numbers); pass --mean and --std")
    distinct = list(dict.fromkeys((m, s) for _, m, s in calls))
    if len(distinct) > 1:
        listed = "; ".join(f"{name}:{line}: {Normalization(m, s, '').text()}" for line, m, s in calls)
        raise InvalidInputError(f"{name} holds {len(distinct)} different Normalize(...) calls ({listed}); "
                                "pass the one the model was trained with as --mean and --std")
    m, s = distinct[0]
    if not _positive(s):
        raise InvalidInputError(f"{name}:{calls[0][0]}: Normalize {Normalization(m, s, '').text()}: std must be > 0")
    return Normalization(m, s, f"{name}:{calls[0][0]}")


@dataclass
class ScriptTransforms:
    """The geometric steps of a script's preprocessing that decide the model's input size and channels, in the
    order they appear: ("pad", n) / ("resize", (h, w)) / ("crop", (h, w)) / ("gray", channels)."""

    steps: list
    origin: str  # "train.py:12" of the first step


def _size(node, square: bool = True):
    """A size argument: (h, w); an int as (n, n) where it means a square (CenterCrop), as is for Resize (its
    shorter side)."""
    try:
        v = ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return None
    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return (v, v) if square else v
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(x, int) and x > 0 for x in v):
        return int(v[0]), int(v[1])
    return None


def find_transforms(path: Path) -> ScriptTransforms | None:
    """`transforms.Pad(p)`, `Resize(s)`, `CenterCrop(s)` and `Grayscale(n)` calls with literal arguments, in source
    order (Pad with one int pads every side). None when the script has none. A call whose argument is not a literal
    makes the whole reading None: a guess would be worse than asking for --input-shape."""
    steps = []
    first = None
    for name, node in sorted(_calls(path, {"Pad", "Resize", "CenterCrop", "Grayscale"}),
                             key=lambda c: (c[1].lineno, c[1].col_offset)):
        kw = {k.arg: k.value for k in node.keywords}
        arg = node.args[0] if node.args else kw.get({"Pad": "padding", "Grayscale": "num_output_channels"}.get(
            name, "size"))
        if name == "Grayscale":
            try:
                n = ast.literal_eval(arg) if arg is not None else 1
            except (ValueError, SyntaxError, TypeError):
                return None
            if n not in (1, 3):
                return None
            steps.append(("gray", n))
        elif name == "Pad":
            try:
                n = ast.literal_eval(arg)
            except (ValueError, SyntaxError, TypeError):
                return None
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                return None
            steps.append(("pad", n))
        else:
            size = _size(arg, square=name != "Resize")
            if size is None:
                return None
            steps.append(("resize" if name == "Resize" else "crop", size))
        first = first or node.lineno
    return ScriptTransforms(steps, f"{path.name}:{first}") if steps else None


# torchvision's dataset classes -> mnistkit's dataset names
TORCHVISION_DATASETS = {"MNIST": "mnist", "FashionMNIST": "fashion-mnist", "KMNIST": "kmnist"}


@dataclass
class ScriptData:
    dataset: str
    root: Path | None  # the folder the script loads from, when it names one that exists here
    origin: str  # "train.py:30"


def find_dataset(path: Path) -> ScriptData | None:
    """The dataset a script trains on, from its `datasets.MNIST("data", ...)`-style calls.

    None when it names none, or several different ones (then nothing is guessed). A literal root
    folder is resolved against the script's own folder, then the current one, as torchvision would
    from either place.
    """
    try:
        tree = ast.parse(path.read_bytes().decode("utf-8"), str(path))
    except (OSError, UnicodeDecodeError, SyntaxError):
        return None
    found: list[tuple[str, int, str | None]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        cls = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        if cls not in TORCHVISION_DATASETS:
            continue
        root_node = node.args[0] if node.args else {k.arg: k.value for k in node.keywords}.get("root")
        root = root_node.value if isinstance(root_node, ast.Constant) and isinstance(root_node.value, str) else None
        found.append((TORCHVISION_DATASETS[cls], node.lineno, root))
    if not found or len({name for name, _, _ in found}) != 1:
        return None
    name, line, _ = found[0]
    root = None
    for _, _, r in found:
        if r is None:
            continue
        for base in (path.resolve().parent, Path.cwd()):
            candidate = (base / r).expanduser()
            if candidate.is_dir():
                root = candidate
                break
        if root is not None:
            break
    return ScriptData(name, root, f"{path.name}:{line}")
