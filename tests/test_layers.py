"""The import contract: layers point one way, shared code sits in leaves, no private names cross packages.

Layers, top to bottom (a module may import its own layer and those below, never one above):

    0  config, medassist.tools, every management command       composition, measurement, operations
    1  APIs (apis, urls, serializers, admin, views), workers.tasks, workers.versions,   interfaces
       medassist.portal (the web portal: every module of it)
    2  medassist.jobs                                           job services and selectors
    3  medassist.kinds                                          one module per job kind
    4  medassist.knowledge, training, workers.runtime           domain and model runtime
    5  medassist.common, medassist.audit, medassist.registry    leaves

Apart from the layers: medassist.client (the command-line client) imports only itself, and nothing imports it.
Inside layer 4: knowledge imports neither training nor the runtime, and the runtime imports nothing
of this project outside itself (and no Django): it takes plain specs and settings as arguments.
The checks read the source (ast), so a function-local import counts like a top-level one.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("medassist", "workers", "training", "config")
INTERFACE_MODULES = ("apis", "urls", "serializers", "admin", "views")


def layer(module: str) -> tuple[int, str]:
    parts = module.split(".")
    if parts[0] == "config" or "management" in parts or module.startswith("medassist.tools"):
        return 0, "tools/config"
    if parts[-1] in INTERFACE_MODULES or module.startswith(("workers.tasks", "workers.versions", "medassist.portal")):
        return 1, "interfaces"
    if module.startswith("medassist.jobs"):
        return 2, "jobs"
    if module.startswith("medassist.kinds"):
        return 3, "kinds"
    if module.startswith("medassist.knowledge"):
        return 4, "knowledge"
    if module.startswith("training"):
        return 4, "training"
    if module.startswith("workers.runtime"):
        return 4, "runtime"
    if module.startswith(("medassist.common", "medassist.audit", "medassist.registry")):
        return 5, parts[1]
    return 9, module  # medassist/__init__, workers/__init__: package markers


def package(module: str) -> str:
    """The unit inside which private names may be shared: medassist.<app>, workers.runtime, training..."""
    parts = module.split(".")
    if parts[0] == "medassist" and len(parts) > 1:
        return ".".join(parts[:2])
    if parts[0] == "workers" and len(parts) > 1 and parts[1] == "runtime":
        return "workers.runtime"
    return parts[0]


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def first_party_modules() -> dict[str, Path]:
    modules = {}
    for top in FIRST_PARTY:
        for path in (ROOT / top).rglob("*.py"):
            if "migrations" not in path.parts:
                modules[_module_name(path)] = path
    return modules


def imports(modules: dict[str, Path]):
    """(importer, imported module, imported name or None, line, private attribute uses) for every first-party import."""
    found = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        aliases: dict[str, str] = {}  # local name -> first-party module it refers to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith(FIRST_PARTY):
                    continue
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    if submodule in modules:  # `from pkg import module`
                        found.append((module, submodule, None, node.lineno))
                        aliases[alias.asname or alias.name] = submodule
                    else:
                        found.append((module, target, alias.name, node.lineno))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith(FIRST_PARTY):
                        found.append((module, alias.name, None, node.lineno))
                        if alias.asname:
                            aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append((module, aliases[node.value.id], node.attr, node.lineno))
    return found


MODULES = first_party_modules()
IMPORTS = imports(MODULES)


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{a}:{line} imports {b} ({layer(a)[1]} -> {layer(b)[1]})"
              for a, b, _, line in IMPORTS if layer(b)[0] < layer(a)[0]]
    assert upward == []


def test_knowledge_and_the_runtime_keep_to_their_side_of_layer_4():
    wrong = []
    for a, b, _, line in IMPORTS:
        if layer(a)[1] == "knowledge" and layer(b)[1] in ("training", "runtime"):
            wrong.append(f"{a}:{line} imports {b}")
        if layer(a)[1] == "runtime" and not b.startswith("workers.runtime"):
            wrong.append(f"{a}:{line} imports {b}: the runtime takes specs and settings as arguments")
    assert wrong == []


def test_the_leaves_import_no_domain_code():
    wrong = [f"{a}:{line} imports {b}" for a, b, _, line in IMPORTS
             if layer(a)[0] == 5 and layer(b)[0] == 5 and layer(a)[1] == "common" and layer(b)[1] != "common"]
    assert wrong == []


# --- the command-line client (issue 14, client engineer) ---------------------------------------------------
def test_the_client_stands_apart_and_uses_only_the_http_api():
    """medassist.client runs on a researcher's machine against the public API: it imports nothing
    first-party but itself, and no server code imports it."""
    wrong = [f"{a}:{line} imports {b}" for a, b, _, line in IMPORTS
             if a.startswith("medassist.client") != b.startswith("medassist.client")]
    assert wrong == []


def test_no_private_name_is_imported_across_packages():
    private = [f"{a}:{line} uses {b}.{name}" for a, b, name, line in IMPORTS
               if name and name.startswith("_") and not name.startswith("__") and package(a) != package(b)]
    assert private == []


def test_there_are_no_import_cycles():
    graph = defaultdict(set)
    for a, b, _, _ in IMPORTS:
        target = b if b in MODULES else b.rsplit(".", 1)[0] if b.rsplit(".", 1)[0] in MODULES else b
        if target != a and target in MODULES and not MODULES[target].name == "__init__.py":
            graph[a].add(target)
    # Tarjan's strongly connected components: any component of more than one module is a cycle.
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10_000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
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
                cycles.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_model_runtime_imports_with_django_unconfigured():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = ("import sys\n"
            "import workers.runtime, workers.runtime.store, workers.runtime.engines, workers.runtime.memory\n"
            "import workers.runtime.onnx_models, workers.runtime.answer_evidence\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'medassist', 'config', 'training'))\n"
            "assert not bad, bad\n"
            "spec = workers.runtime.store.EngineSpec(role='generator', format='torch-fp32', artifact_path='/nonexistent')\n"
            "try:\n"
            "    workers.runtime.store.load_engine(spec)\n"
            "except workers.runtime.store.ArtifactError as exc:\n"
            "    print('refused:', exc)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "refused: artifact directory /nonexistent does not exist" in done.stdout
