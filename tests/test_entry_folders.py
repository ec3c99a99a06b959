"""Each registry's entries live in a folder, one file per entry, found without editing another file."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from medtransfer import registry as generic
from medtransfer.probe import registry as head_registry
from medtransfer.probe.heads import HEADS

SRC = Path(__file__).resolve().parents[1] / "src" / "medtransfer"


def _registered_by(path: Path, monkeypatch) -> list[str]:
    """The heads that running ``path`` alone registers, into an empty registry."""
    fresh = generic.Registry("probe head")
    monkeypatch.setattr(head_registry, "HEADS", fresh)
    spec = importlib.util.spec_from_file_location(f"_entry_{path.stem}", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    return list(fresh)


def test_probe_heads_folder_holds_one_file_per_head(monkeypatch):
    files = sorted(p for p in (SRC / "probe" / "heads").glob("*.py") if p.name != "__init__.py")
    assert sorted(p.stem.replace("_", "-") for p in files) == sorted(HEADS)
    for path in files:  # each file registers exactly the head it is named after
        assert _registered_by(path, monkeypatch) == [path.stem.replace("_", "-")], path.name


def test_an_entry_file_is_found_without_being_listed(tmp_path, monkeypatch):
    package = tmp_path / "plugin_entries"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("zeta", "alpha", "beta", "_private"):
        (package / f"{name}.py").write_text(f"import plugin_entries\nplugin_entries.SEEN = [*getattr("
                                            f"plugin_entries, 'SEEN', []), {name!r}]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import plugin_entries

    try:
        order = generic.import_entries("plugin_entries", plugin_entries.__path__, first=("zeta",))
        assert order == ["zeta", "alpha", "beta"] and order == plugin_entries.SEEN  # listed first, then by name
        with pytest.raises(ImportError, match="listed entries without a file: gamma"):
            generic.import_entries("plugin_entries", plugin_entries.__path__, first=("gamma",))
    finally:
        for name in [m for m in sys.modules if m.startswith("plugin_entries")]:
            del sys.modules[name]
