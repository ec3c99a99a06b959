"""One file per adaptation method: ``adapt/methods/<name>.py`` registers the method ``<name>`` (``_`` for ``-``) and
nothing else but its rank presets; the registry and the machinery beside it import no method file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_import_graph import import_graph

METHODS_DIR = Path(__file__).resolve().parents[2] / "src" / "medtransfer" / "adapt" / "methods"
PACKAGE = "medtransfer.adapt.methods"

# Records, for every adapt method registered while ``medtransfer.adapt.methods`` is imported, the method file whose
# module-level code was running (the innermost frame of a ``medtransfer.adapt.methods.<file>`` module), whatever
# helper (register_peft_method, register_rank_presets ...) made the call. Registry.add is patched before
# anything of medtransfer.adapt is imported, in a fresh interpreter.
RECORD = """
import json, sys
from medtransfer import registry

added = {}
original = registry.Registry.add

def add(self, entry):
    if self.kind == "adapt method":
        frame, module = sys._getframe(1), None
        while frame is not None and module is None:
            name = frame.f_globals.get("__name__", "")
            module = name if name.startswith("medtransfer.adapt.methods.") else None
            frame = frame.f_back
        added[entry.name] = {"module": module, "label_base": entry.label_base}
    return original(self, entry)

registry.Registry.add = add
import medtransfer.adapt.methods  # noqa: E402
print(json.dumps(added))
"""


@pytest.fixture(scope="module")
def registered_by() -> dict[str, dict]:
    done = subprocess.run([sys.executable, "-c", RECORD], capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def method_name(stem: str) -> str:
    return stem.replace("_", "-")


def test_the_folder_lists_one_file_per_method_and_each_file_registers_its_own(registered_by):
    stems = sorted(p.stem for p in METHODS_DIR.glob("*.py") if p.name != "__init__.py")
    bases = {method_name(stem): f"{PACKAGE}.{stem}" for stem in stems}
    assert len(bases) == len(stems) >= 30
    unfiled = sorted(n for n, r in registered_by.items() if r["module"] is None)
    assert not unfiled, f"registered outside a method file: {unfiled}"
    for name, record in registered_by.items():
        base = record["label_base"] or name
        assert base in bases, f"method {name!r} ({record['module']}) has no file {base.replace('-', '_')}.py"
        assert record["module"] == bases[base], f"method {name!r} is registered by {record['module']}, " \
                                                f"not by its base method's file {bases[base]}"
    assert sorted(n for n, r in registered_by.items() if not r["label_base"]) == sorted(bases)
    presets = sorted(n for n, r in registered_by.items() if r["label_base"])
    assert presets == sorted(f"{base}-r{rank}" for base in ("lora", "vera") for rank in (4, 8, 16))


def test_the_catalogue_registers_what_the_live_registry_holds(registered_by):
    from medtransfer.adapt.methods import METHODS

    assert [n for n in METHODS if n in registered_by] == list(registered_by)
    assert METHODS["lora-r4"].label_base == "lora" and list(METHODS).index("lora-r4") == list(METHODS).index("lora") + 1


def test_method_files_import_no_other_method_and_the_machinery_imports_none():
    graph, _ = import_graph()
    entries = {m for m in graph if m.startswith(f"{PACKAGE}.")}
    for entry in sorted(entries):
        assert not (set(graph[entry]) & (entries | {PACKAGE})), f"{entry} imports another method file"
    users = {m for m in graph if any(d == PACKAGE or d in entries for d in graph[m])}
    machinery = {m for m in graph if m.startswith("medtransfer.adapt.") and m != PACKAGE and m not in entries}
    # the consumers that look methods up by name; everything else in adapt is machinery under the methods
    assert sorted(users & machinery) == ["medtransfer.adapt.catalog", "medtransfer.adapt.run"]
