"""The torch-free method manifest (`bench/methods_manifest.json`): it says what the registry says,
and it is set aside the moment a method file differs from the ones it was written from."""

from __future__ import annotations

import json
import shutil

from bench import method_manifest as mm


def test_the_shipped_manifest_is_the_registrys() -> None:
    shipped = json.loads(mm.MANIFEST.read_text(encoding="utf-8"))
    fresh = mm.build_manifest()
    # a method this install's peft cannot build has no count here: the shipped one's stands
    counted = {m["name"]: m["trainable"] for m in shipped["methods"]}
    for entry in fresh["methods"]:
        if entry["trainable"] is None:
            entry["trainable"] = counted.get(entry["name"])
    assert shipped == fresh, "stale: regenerate it with `python -m bench.method_manifest`"
    assert mm.load_manifest() == shipped


def test_a_changed_or_added_method_file_sets_the_manifest_aside(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "methods"
    shutil.copytree(mm.METHODS_DIR, folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(mm, "METHODS_DIR", folder)
    assert mm.load_manifest() is not None  # the same files
    (folder / "my_method.py").write_text("# a user's own method\n")
    assert mm.load_manifest() is None
    (folder / "my_method.py").unlink()
    (folder / "full.py").write_text((folder / "full.py").read_text() + "\n")
    assert mm.load_manifest() is None


def test_a_tuner_newer_than_the_installed_peft_is_unavailable(monkeypatch) -> None:
    monkeypatch.setattr(mm.metadata, "version", lambda name: "0.7.0")
    assert mm.unavailable({"name": "lora", "min_peft": None}) == ""
    assert mm.unavailable({"name": "x", "min_peft": "0.7.0"}) == ""
    assert mm.unavailable({"name": "oft", "min_peft": "0.16.0"}) == (
        "oft needs peft >= 0.16.0; installed 0.7.0: pip install -U 'peft>=0.16.0'"
    )
