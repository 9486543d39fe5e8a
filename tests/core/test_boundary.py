"""The driver boundary: the core imports no event loop, modules import no cycle, threads run without gevent."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pausetls

from gates import GENEROUS
from pki import PKI, Issued
from served import pausetls_env

PACKAGE = Path(pausetls.__file__).parent
LOOPS = {"gevent", "asyncio", "trio", "anyio"}

# every module of the core package, and the thread driver and server: what `ThreadedTLSServer` runs on
CORE_PACKAGE = [f"pausetls.core.{path.stem}" for path in (PACKAGE / "core").glob("*.py") if path.stem != "__init__"]
CORE = [
    *sorted(CORE_PACKAGE),
    "pausetls.sessions.cache",
    "pausetls.drivers.threads",
    "pausetls.servers.threaded",
    "pausetls.threaded_server",
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(path: Path, modules: set[str]) -> tuple[set[str], set[str]]:
    """(pausetls modules, other top-level packages) imported anywhere in *path*, functions included,
    ``if TYPE_CHECKING:`` blocks excluded."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    internal: set[str] = set()
    external: set[str] = set()

    def resolve(target: str, names: list[str]) -> None:
        if target.split(".")[0] != "pausetls":
            external.add(target.split(".")[0])
            return
        for imported in names:  # ``from . import x``: the module x if there is one, else the package
            internal.add(f"{target}.{imported}" if f"{target}.{imported}" in modules else target)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    resolve(alias.name, [])
                    if alias.name.split(".")[0] == "pausetls":
                        internal.add(alias.name)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                resolve(target, [alias.name for alias in child.names])
            visit(child)

    visit(ast.parse(path.read_text()))
    internal.discard(name)
    return internal, external


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Per pausetls module: the pausetls modules it imports, and the other packages it imports."""
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    internal, external = {}, {}
    for name, path in paths.items():
        internal[name], external[name] = _imports(path, set(paths))
    return internal, external


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of *graph*, or None."""
    done: set[str] = set()

    def walk(module: str, path: list[str]) -> list[str] | None:
        for imported in sorted(graph.get(module, ())):
            if imported in path:
                return [*path[path.index(imported) :], imported]
            if imported not in done:
                cycle = walk(imported, [*path, imported])
                if cycle:
                    return cycle
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = walk(module, [module])
        if cycle:
            return cycle
    return None


def test_no_pausetls_modules_import_each_other_in_a_circle() -> None:
    internal, _ = import_graph()
    assert find_cycle(internal) is None, " -> ".join(find_cycle(internal) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_core_reaches_no_event_loop_through_any_import() -> None:
    """Every pausetls module the core imports, directly or not (lazy imports in functions too), and the
    packages above each, whose ``__init__`` runs first: ``import pausetls.threaded_server`` runs ``pausetls``."""
    internal, external = import_graph()
    reached, todo = set(CORE), list(CORE)
    while todo:
        module = todo.pop()
        parents = {module.rsplit(".", depth)[0] for depth in range(1, module.count(".") + 1)}
        for imported in (internal.get(module, set()) | parents) - reached:
            reached.add(imported)
            todo.append(imported)
    loops = {module: sorted(external.get(module, set()) & LOOPS) for module in reached}
    loops = {module: found for module, found in loops.items() if found}
    assert not loops, f"the core reaches an event loop: {loops}"
    assert "pausetls.drivers.gevent" not in reached


def test_the_import_walk_sees_a_loop_behind_a_relative_import() -> None:
    internal, external = import_graph()
    assert "pausetls.drivers.gevent" in internal["pausetls.servers.gevent"]  # ``from ..drivers.gevent import ...``
    assert "gevent" in external["pausetls.drivers.gevent"]


THREADED_WITHOUT_GEVENT = textwrap.dedent(
    """
    import socket, ssl, sys
    sys.modules["gevent"] = None  # any import of gevent (or of gevent.x) now fails
    chain, key, ca, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

    import pausetls.threaded_server
    from pausetls import TLS_SERVER_METHOD, Context, ThreadedTLSServer

    def echo(tls, address):
        tls.sendall(tls.recv(100))

    context = Context(TLS_SERVER_METHOD)
    context.use_certificate_chain_file(chain)
    context.use_privatekey_file(key)
    context.set_session_cache()  # the in-memory store: its deferred writes run on the thread driver
    server = ThreadedTLSServer(("127.0.0.1", 0), echo, context)
    server.start()
    try:
        client = ssl.create_default_context(cafile=ca)
        with socket.create_connection(("127.0.0.1", server.server_port), timeout=timeout) as sock:
            with client.wrap_socket(sock, server_hostname="localhost") as tls:
                tls.sendall(b"ping")
                print(tls.recv(100).decode(), tls.version())
    finally:
        server.stop()
    try:
        pausetls.TLSServer
    except ImportError:
        print("TLSServer needs gevent")
    print(sorted(name for name in sys.modules if name.split(".")[0] == "gevent" and sys.modules[name]))
    """
)


def test_threaded_server_imports_and_serves_with_gevent_blocked(pki: PKI, server_cert: Issued, tmp_path: Path) -> None:
    args = [str(server_cert.chain_path), str(server_cert.key_path), str(pki.ca_path), str(GENEROUS)]
    done = subprocess.run(
        [sys.executable, "-c", THREADED_WITHOUT_GEVENT, *args],
        cwd=tmp_path,  # not the checkout: ``-c`` puts the cwd first, and its pausetls/ has no binding when installed
        env=pausetls_env(),
        capture_output=True,
        text=True,
        timeout=2 * GENEROUS,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["ping TLSv1.3", "TLSServer needs gevent", "[]"], done.stderr
