"""One-line AST mutants of a Python module, applied as text edits of the original source.

Each mutant replaces one node's source segment with the unparsed mutated node, so the
rest of the file (comments, line numbers) is unchanged and a survivor reads as a one-line
diff.  Operators:

  binop        + <-> -, * <-> /, // -> /, % -> //, ** -> *, @ -> *  (also in ``x op= y``)
  compare      < <-> <=, > <-> >=, == <-> !=, is <-> is not, in <-> not in
  boolop       and <-> or
  unary        drop a unary minus, drop ``not``
  const        int n -> n + 1, float x -> -x (0.0 -> 1.0), True <-> False
  slice        swap the two bounds of ``a[i:j]``; drop the single bound of ``a[i:]`` / ``a[:j]``
  name         max <-> min, argmax <-> argmin, maximum <-> minimum, any <-> all, floor <-> ceil
  return       ``return x`` -> ``return None``

Not mutated: docstrings and other strings, f-strings, annotations, the message of a
``raise``, and lines marked ``# pragma: no mutate``.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass

_BINOP_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
               ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult,
               ast.MatMult: ast.Mult}
_CMP_SWAP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
             ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
             ast.In: ast.NotIn, ast.NotIn: ast.In}
_NAME_SWAP = {"max": "min", "min": "max", "argmax": "argmin", "argmin": "argmax",
              "maximum": "minimum", "minimum": "maximum", "any": "all", "all": "any",
              "floor": "ceil", "ceil": "floor", "nanmax": "nanmin", "nanmin": "nanmax"}
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
           ast.Mod: "%", ast.Pow: "**", ast.MatMult: "@", ast.Lt: "<", ast.LtE: "<=",
           ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is",
           ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in", ast.And: "and",
           ast.Or: "or"}


@dataclass(frozen=True)
class Mutant:
    """One mutation of one module: where, what, and the mutated source."""
    id: str            # "<operator>:<line>:<col>:<description>", unique within the module
    operator: str
    line: int
    description: str   # e.g. "+ -> -"
    line_source: str   # the original line, stripped
    source: str        # the whole mutated module
    lines: tuple[int, int]  # first and last line a test must execute to reach the mutant


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


def _skipped_nodes(tree: ast.Module) -> set[int]:
    """ids of nodes never mutated: docstrings, annotations, f-strings, raise messages."""
    skip: set[int] = set()

    def drop(node):
        if node is not None:
            skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            drop(body[0])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            drop(node.returns)
            for arg in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
                        node.args.vararg, node.args.kwarg):
                if arg is not None:
                    drop(arg.annotation)
        elif isinstance(node, ast.AnnAssign):
            drop(node.annotation)
        elif isinstance(node, ast.JoinedStr):
            drop(node)
        elif isinstance(node, ast.Raise):
            drop(node.exc)
        elif isinstance(node, ast.If) and _is_main_guard(node.test):
            drop(node)
    return skip


def _is_main_guard(test: ast.expr) -> bool:
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__")


def _replacements(node: ast.AST):
    """Yield (operator, description, replacement node) for one node."""
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAP:
        new = _BINOP_SWAP[type(node.op)]
        yield "binop", f"{_SYMBOL[type(node.op)]} -> {_SYMBOL[new]}", \
            ast.BinOp(left=node.left, op=new(), right=node.right)
    elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOP_SWAP:
        new = _BINOP_SWAP[type(node.op)]
        yield "binop", f"{_SYMBOL[type(node.op)]}= -> {_SYMBOL[new]}=", \
            ast.AugAssign(target=node.target, op=new(), value=node.value)
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _CMP_SWAP:
                new = _CMP_SWAP[type(op)]
                ops = list(node.ops)
                ops[i] = new()
                yield "compare", f"{_SYMBOL[type(op)]} -> {_SYMBOL[new]}" + (f" (#{i + 1})" if len(ops) > 1 else ""), \
                    ast.Compare(left=node.left, ops=ops, comparators=node.comparators)
    elif isinstance(node, ast.BoolOp):
        new = ast.Or if isinstance(node.op, ast.And) else ast.And
        yield "boolop", f"{_SYMBOL[type(node.op)]} -> {_SYMBOL[new]}", ast.BoolOp(op=new(), values=node.values)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not)):
        yield "unary", "drop unary -" if isinstance(node.op, ast.USub) else "drop not", node.operand
    elif isinstance(node, ast.Constant) and type(node.value) in (bool, int, float):
        v = node.value
        if isinstance(v, bool):
            yield "const", f"{v} -> {not v}", ast.Constant(not v)
        elif isinstance(v, int):
            yield "const", f"{v} -> {v + 1}", ast.Constant(v + 1)
        else:
            new = -v if v != 0 else 1.0
            yield "const", f"{v!r} -> {new!r}", ast.Constant(new)
    elif isinstance(node, ast.Slice) and node.step is None:
        if node.lower is not None and node.upper is not None:
            yield "slice", "swap slice bounds", ast.Slice(lower=node.upper, upper=node.lower)
        elif node.lower is not None:
            yield "slice", "drop slice lower bound", ast.Slice(lower=None, upper=None)
        elif node.upper is not None:
            yield "slice", "drop slice upper bound", ast.Slice(lower=None, upper=None)
    elif isinstance(node, ast.Name) and node.id in _NAME_SWAP and isinstance(node.ctx, ast.Load):
        yield "name", f"{node.id} -> {_NAME_SWAP[node.id]}", ast.Name(id=_NAME_SWAP[node.id], ctx=ast.Load())
    elif (isinstance(node, ast.Attribute) and node.attr in _NAME_SWAP
          and isinstance(node.ctx, ast.Load)):
        yield "name", f".{node.attr} -> .{_NAME_SWAP[node.attr]}", \
            ast.Attribute(value=node.value, attr=_NAME_SWAP[node.attr], ctx=ast.Load())
    elif isinstance(node, ast.Return) and node.value is not None and not (
            isinstance(node.value, ast.Constant) and node.value.value is None):
        yield "return", "return value -> None", ast.Return(value=None)


def _reach(tree: ast.Module) -> dict[int, tuple[int, int]]:
    """For each node, the lines whose execution reaches it: its enclosing simple statement, or
    the node itself inside the header of a compound statement (``if``, ``for``, ``def``...)."""
    out: dict[int, tuple[int, int]] = {}

    def visit(node, span):
        if isinstance(node, ast.stmt):
            span = None if hasattr(node, "body") else (node.lineno, node.end_lineno)
        if hasattr(node, "lineno"):
            out[id(node)] = span or (node.lineno, node.end_lineno)
        for child in ast.iter_child_nodes(node):
            visit(child, span)
    visit(tree, None)
    return out


def _unparse(node: ast.AST) -> str:
    text = ast.unparse(node)
    if isinstance(node, ast.Slice):
        return text
    if isinstance(node, ast.expr):
        return f"({text})"
    return text


def mutants(source: str) -> list[Mutant]:
    """Every mutant of ``source`` that compiles, in source order."""
    tree = ast.parse(source)
    skip = _skipped_nodes(tree)
    reach = _reach(tree)
    lines = source.splitlines(keepends=True)
    blines = [line.encode("utf-8") for line in lines]
    offsets = [0]
    for b in blines:
        offsets.append(offsets[-1] + len(b))
    data = source.encode("utf-8")
    out: list[Mutant] = []
    seen: set[str] = set()
    nodes = sorted((n for n in ast.walk(tree) if id(n) not in skip and hasattr(n, "lineno")),
                   key=lambda n: (n.lineno, n.col_offset, -(n.end_lineno or 0), -(n.end_col_offset or 0)))
    for node in nodes:
        if "pragma: no mutate" in lines[node.lineno - 1]:
            continue
        start = offsets[node.lineno - 1] + node.col_offset
        end = offsets[node.end_lineno - 1] + node.end_col_offset
        for operator, description, new in _replacements(node):
            # No copy_location: a replacement may reuse a child of ``node`` (``drop unary -``
            # returns the operand), and moving that child's location would make its own
            # mutants, met later in this loop, rewrite the wrong span.
            text = data[:start] + _unparse(new).encode("utf-8") + data[end:]
            mutated = text.decode("utf-8")
            try:
                compile(mutated, "<mutant>", "exec")
            except SyntaxError:
                continue
            mid = f"{operator}:{node.lineno}:{node.col_offset}:{description}"
            if mid in seen:
                continue
            seen.add(mid)
            out.append(Mutant(mid, operator, node.lineno, description,
                              lines[node.lineno - 1].strip(), mutated, reach[id(node)]))
    return out
