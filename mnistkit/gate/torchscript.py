"""The gate for TorchScript code: the `code/**/*.py` members of a .ts archive, checked before torch.jit.load
compiles them (it runs `__setstate__` while loading, so checking the loaded graph would be too late).

TorchScript's serializer writes Python syntax: builtin operators as `torch.<op>(...)` and `ops.<ns>.<op>(...)`,
the archive's own functions and modules as `__torch__.<qualified name>`, submodule methods as
`(module).forward(...)`. Every method of every class is checked, `__setstate__` included:

- `torch.*` and `ops.*` names must be on the operator allowlist (gate.torch_ops); `torch` and `ops` may not
  be used any other way (as a value, through getattr);
- a call is to an allowed builtin, to a function the code bound locally (from `__torch__`), or to a method
  the archive itself defines;
- no `while` loop; `for` only over a container value or `range` of a literal (at most MAX_RANGE) or of a
  container's length: every loop ends;
- `__torch__.torch.classes.*` (C++ objects registered with torch) are refused.
"""

from __future__ import annotations

import ast

from . import Refused
from .torch_ops import ATEN_OPS, TORCHSCRIPT_BUILTINS, TORCHSCRIPT_PRIM

MAX_RANGE = 4096
MAX_CODE_BYTES = 8 << 20
_TORCH = ATEN_OPS | TORCHSCRIPT_BUILTINS
_OPS = {"aten": ATEN_OPS | TORCHSCRIPT_BUILTINS, "prim": TORCHSCRIPT_PRIM}
_BUILTIN_CALLS = frozenset({"annotate", "unchecked_cast", "getattr", "range", "isinstance", "uninitialized",
                            "int", "float", "bool", "str", "len", "hasattr", "print"})
_TYPE_NAMES = frozenset({"Tensor", "Optional", "List", "Tuple", "Dict", "Final", "int", "float", "bool", "str",
                         "NoneType", "Module", "Any", "Union", "NamedTuple", "Device", "Enum"})


def check_sources(sources: dict[str, bytes], label) -> None:
    """`sources`: archive member name -> its bytes, for every code/*.py member."""
    trees = {}
    for name, data in sources.items():
        if len(data) > MAX_CODE_BYTES:
            raise Refused(label, f"{name} is {len(data)} bytes of TorchScript code (at most {MAX_CODE_BYTES})")
        try:
            trees[name] = ast.parse(data.decode("utf-8"), filename=name)
        except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError, MemoryError):
            raise Refused(label, f"{name} is not TorchScript code mnistkit can check") from None
    methods = {node.name for tree in trees.values() for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    for name, tree in trees.items():
        _Checker(label, name, methods).check_module(tree)


class _Checker:
    def __init__(self, label, member: str, methods: set[str]):
        self.label, self.member, self.methods = label, member, methods

    def refuse(self, node, what: str):
        line = getattr(node, "lineno", "?")
        raise Refused(self.label, f"{self.member}:{line}: {what}")

    # ---- structure: module -> classes/functions -> methods
    def check_module(self, tree: ast.Module) -> None:
        for stmt in tree.body:
            if isinstance(stmt, ast.ClassDef):
                self.check_class(stmt)
            elif isinstance(stmt, ast.FunctionDef):
                self.check_function(stmt)
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.Expr)) and self.plain_value(stmt.value):
                continue
            elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in stmt.names] + ([stmt.module] if isinstance(stmt, ast.ImportFrom) else [])
                if not all(n and n.split(".")[0] in ("__torch__", "torch") for n in names):
                    self.refuse(stmt, "imports a Python module")
            else:
                self.refuse(stmt, f"a {type(stmt).__name__} statement outside any method")

    def check_class(self, cls: ast.ClassDef) -> None:
        for stmt in cls.body:
            if isinstance(stmt, ast.FunctionDef):
                self.check_function(stmt)
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and (stmt.value is None or self.plain_value(stmt.value)):
                continue
            elif isinstance(stmt, ast.Expr) and self.plain_value(stmt.value) or isinstance(stmt, ast.Pass):
                continue
            else:
                self.refuse(stmt, f"a {type(stmt).__name__} statement in the body of class {cls.name}")

    def plain_value(self, value) -> bool:
        """Constants, type names and `__torch__` names: what class bodies hold (annotations, Final values)."""
        if value is None:
            return True
        for node in ast.walk(value):
            if isinstance(node, (ast.Constant, ast.List, ast.Tuple, ast.Dict, ast.Load, ast.UnaryOp, ast.USub,
                                 ast.Subscript)):
                continue
            if isinstance(node, ast.Name) and (node.id in _TYPE_NAMES or node.id == "__torch__"):
                continue
            if isinstance(node, ast.Attribute) and self.dotted(node).startswith("__torch__."):
                self.check_qualified(node)
                continue
            return False
        return True

    # ---- function bodies
    def check_function(self, fn: ast.FunctionDef) -> None:
        local = {a.arg for a in (*fn.args.args, *fn.args.kwonlyargs)}
        for node in ast.walk(fn):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    local.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
            elif isinstance(node, ast.For):
                local.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
        roots = {id(n.value) for n in ast.walk(fn) if isinstance(n, ast.Attribute)}
        for node in ast.walk(fn):
            self.check_node(node, local, fn, roots)

    def check_node(self, node, local: set[str], fn: ast.FunctionDef, roots: set[int]) -> None:
        if isinstance(node, ast.While):
            self.refuse(node, f"a while loop in {fn.name} (control flow that can loop forever)")
        if isinstance(node, (ast.Lambda, ast.GeneratorExp, ast.ListComp, ast.DictComp, ast.SetComp, ast.Global,
                             ast.Nonlocal, ast.AsyncFunctionDef, ast.Await, ast.Yield, ast.YieldFrom, ast.Try,
                             ast.With, ast.ClassDef, ast.Starred)):
            self.refuse(node, f"a {type(node).__name__} in {fn.name}, which TorchScript's serializer never writes")
        if isinstance(node, ast.FunctionDef) and node is not fn:
            self.refuse(node, f"a nested function in {fn.name}")
        if isinstance(node, ast.For):
            self.check_loop(node, fn)
        if isinstance(node, ast.Attribute) and id(node) not in roots:  # the whole chain, once
            root = self.root(node)
            if root in ("torch", "ops"):
                self.check_operator(node)
            elif root == "__torch__":
                self.check_qualified(node)
        if isinstance(node, ast.Name) and node.id in ("torch", "ops", "__torch__"):
            if id(node) not in roots:
                self.refuse(node, f"uses {node.id} as a value in {fn.name}")
        if isinstance(node, ast.Name) and node.id.startswith("__") and node.id != "__torch__":
            self.refuse(node, f"names {node.id} in {fn.name}")
        if isinstance(node, ast.Call):
            self.check_call(node, local, fn)

    def check_loop(self, loop: ast.For, fn) -> None:
        it = loop.iter
        if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id == "range":
            if not it.args or len(it.args) > 3 or not all(self.bounded(a) for a in it.args):
                self.refuse(loop, f"a for loop in {fn.name} over a range mnistkit cannot bound "
                                  f"(literals up to {MAX_RANGE} or a container's length)")
            return
        if isinstance(it, (ast.Name, ast.Attribute, ast.Tuple, ast.List)):
            return  # a container value: the loop ends with it
        self.refuse(loop, f"a for loop in {fn.name} over something other than a container or a bounded range")

    def bounded(self, arg) -> bool:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, int):
            return abs(arg.value) <= MAX_RANGE
        if isinstance(arg, ast.UnaryOp) and isinstance(arg.op, ast.USub):
            return self.bounded(arg.operand)
        if isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute) and self.dotted(arg.func) in (
                "torch.len", "torch.sub", "torch.add", "torch.dim"):
            name = self.dotted(arg.func)
            if name in ("torch.len", "torch.dim"):
                return True
            return len(arg.args) == 2 and all(self.bounded(a) for a in arg.args)
        return False

    def check_call(self, call: ast.Call, local: set[str], fn) -> None:
        func = call.func
        if isinstance(func, ast.Name):
            if func.id in _BUILTIN_CALLS or func.id in local:
                if func.id in ("getattr", "hasattr") and not (len(call.args) >= 2 and isinstance(call.args[1], ast.Constant)
                                                             and isinstance(call.args[1].value, str)
                                                             and not call.args[1].value.startswith("__")):
                    self.refuse(call, f"{func.id} with a computed or dunder name in {fn.name}")
                return
            self.refuse(call, f"calls {func.id}(), which is neither a TorchScript builtin nor bound in {fn.name}")
        elif isinstance(func, ast.Attribute):
            root = self.root(func)
            if root in ("torch", "ops", "__torch__"):
                return  # checked as an Attribute
            if func.attr.startswith("__") or func.attr not in self.methods:
                self.refuse(call, f"calls method {func.attr!r}, which the archive does not define, in {fn.name}")
        else:
            self.refuse(call, f"calls a computed value in {fn.name}")

    def check_operator(self, node: ast.Attribute) -> None:
        name = self.dotted(node)
        parts = name.split(".")
        if parts[0] == "torch" and len(parts) == 2 and parts[1] in _TORCH:
            return
        if parts[0] == "ops" and len(parts) == 3 and parts[2] in _OPS.get(parts[1], ()):
            return
        if parts[0] == "torch" and len(parts) == 2 and parts[1].removesuffix("_") in _TORCH:
            return
        raise Refused(self.label, f"{self.member}:{node.lineno}: operator {name} is not on mnistkit's operator "
                                  "allowlist (what image classifiers use; nothing that touches files, processes "
                                  "or the network)")

    def check_qualified(self, node: ast.Attribute) -> None:
        name = self.dotted(node)
        if name.startswith("__torch__.torch.classes."):
            raise Refused(self.label, f"{self.member}:{getattr(node, 'lineno', '?')}: uses {name}, a C++ object "
                                      "registered with torch; mnistkit loads TorchScript made of tensors")

    # ---- helpers
    @staticmethod
    def dotted(node) -> str:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name):
            parts.append(node.id)
            return ".".join(reversed(parts))
        return "<expr>." + ".".join(reversed(parts))

    def root(self, node: ast.Attribute) -> str | None:
        while isinstance(node, ast.Attribute):
            node = node.value
        return node.id if isinstance(node, ast.Name) else None
