"""fastnn's modules import one another one way only: no import cycles, counting the imports
made inside functions (a function-level import hides a cycle from Python, not from a reader).

Edges come from every `import` statement anywhere in a module's source, resolved to fastnn
modules; importing a package's own __init__ implicitly (as Python does for a submodule) is not
counted, or every module would depend on fastnn/__init__.py."""

import ast
import pathlib

import fastnn

PACKAGE_DIR = pathlib.Path(fastnn.__file__).parent


def _module_names():
    """{dotted name: path} of every Python module in the package."""
    names = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _resolve(module, is_package, node):
    """The absolute module a relative `from ... import` starts from."""
    if node.level == 0:
        return node.module
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph():
    """{module: set of fastnn modules it imports}."""
    modules = _module_names()
    graph = {}
    for name, path in modules.items():
        edges = set()
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(name, is_package, node)
                # `from pkg import sub` imports the submodule; `from mod import name` the module
                targets = [
                    f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                    for alias in node.names
                ]
            else:
                continue
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def cycles(graph):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    # fastnn/__init__.py names the public modules at the top; the walker must find them
    assert {"fastnn.model", "fastnn.trainer", "fastnn.backends"} <= graph["fastnn"]
    # and an import inside a function counts: the registry loads backends lazily
    assert cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_no_module_is_named_like_the_standard_library():
    """A module named like a public standard-library one (fastnn/io.py was) shadows it for any
    script run from inside the package directory, and confuses readers. (CPython's private
    accelerator modules, such as _random, are not imported by name by anyone.)"""
    import sys

    public = {name for name in sys.stdlib_module_names if not name.startswith("_")}
    clashes = [name for name in _module_names() if name.rsplit(".", 1)[-1] in public]
    assert clashes == []
