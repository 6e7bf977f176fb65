"""The decoded-image cache: a dataset read from image files is decoded once, then
memory-mapped; any change to the files re-decodes; a failed or partial write is never read back;
`bench data check` always reads the files. Tiny datasets written with PIL by the tests."""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from bench import decoded_cache
from bench.catalog import get_card
from bench.cli import app
from bench.data import load_dataset
from bench.data_check import check_dataset
from bench.dataset_arrays import read_arrays
from bench.formats import images as decoding

CLASSES = ("benign", "malignant")
FOLDER_CARD = """task = "binary"
format = "imagefolder"
primary_metric = "auc"
classes = ["benign", "malignant"]
image_size = 16
val_fraction = 0.25
"""
CSV_CARD = """task = "binary"
format = "csv"
primary_metric = "auc"
classes = ["benign", "malignant"]
image_size = 16
[reader]
manifest = "labels.csv"
"""
OLD_NS = (time.time_ns() // 10**9 - 7200) * 10**9  # two hours ago: past the settle window


def write_card(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.toml").write_text(
        f'name = "{name}"\ntitle = "test {name}"\nlicense = "test"\nsource = "the test"\n'
        f'layout = "written by the test"\n{body}'
    )


def rgb(path: Path, seed: int) -> None:
    """A random RGB image of a seed-dependent size (so the reader resizes some of them)."""
    rng = np.random.default_rng(seed)
    side = 16 + 4 * (seed % 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (side, side + 2, 3), dtype=np.uint8)).save(path)


def settle(root: Path, ns: int = OLD_NS) -> None:
    """Give every file an old mtime: data written a moment ago is not cached (racy mtimes)."""
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(ns, ns))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user card folder, a private cache (never the user's home) and the cache switched on."""
    cards = tmp_path / "cards"
    cards.mkdir()
    write_card(cards, "folders", FOLDER_CARD)
    write_card(cards, "manifest", CSV_CARD)
    monkeypatch.setenv("MEDPEFT_CARDS", str(cards))
    monkeypatch.setenv("MEDPEFT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MEDPEFT_DECODED_CACHE", raising=False)
    return tmp_path


@pytest.fixture
def folders(env: Path) -> Path:
    """data/folders/{train,test}/<class>/*.png, RGB; val is carved from train."""
    root = env / "data"
    for split, n in (("train", 6), ("test", 3)):
        for k, cls in enumerate(CLASSES):
            for i in range(n):
                rgb(root / "folders" / split / cls / f"{i}.png", seed=100 * k + 10 * i + len(split))
    settle(root)
    return root


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every image file the readers open."""
    seen: list[str] = []
    real = Image.open

    def counting(fp, *args, **kwargs):
        seen.append(str(fp))
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(decoding.Image, "open", counting)
    return seen


def entries() -> list[Path]:
    """The cache's entries, and any temporary folder left beside them."""
    where = decoded_cache.decoded_cache_dir()
    return sorted(where.iterdir()) if where.is_dir() else []


def same(a, b) -> None:
    """Two loads of one dataset are identical: pixels, labels, paths, protocol, fingerprint."""
    assert a.fingerprint == b.fingerprint
    assert a.protocol == b.protocol
    for split in ("train", "val", "test"):
        x, y = a.splits[split], b.splits[split]
        assert x.images.dtype == y.images.dtype and x.images.shape == y.images.shape
        assert np.array_equal(x.images.numpy(), y.images.numpy())
        assert x.labels.dtype == y.labels.dtype
        assert np.array_equal(x.labels.numpy(), y.labels.numpy())
        assert x.paths == y.paths


def mapped_file(tensor) -> str | None:
    """The file whose memory map holds the tensor's data (Linux /proc), or None."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, _, _, _, _, *name = line.split(maxsplit=5)
        start, end = (int(x, 16) for x in span.split("-"))
        if start <= address < end:
            return name[0] if name else None
    return None


# ------------------------------------------------------------------------------------ hits


def test_second_load_is_a_memory_mapped_hit_identical_to_a_fresh_decode(
    folders: Path, monkeypatch: pytest.MonkeyPatch, opens: list[str]
) -> None:
    card = get_card("folders")
    first = load_dataset(card, folders)
    assert len(opens) == 18  # every file decoded once
    [entry] = entries()
    assert entry.parent == folders.parent / "cache" / "decoded"  # under $MEDPEFT_CACHE
    assert sorted(p.name for p in entry.iterdir()) == sorted(
        [f"{s}.{k}" for s in ("train", "val", "test") for k in ("images.npy", "labels.npy",
                                                                "paths.json")] + ["meta.json"]
    )  # fmt: skip

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cache hit opened an image file")

    monkeypatch.setattr(decoding.Image, "open", no_decoding)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch.from_numpy on a non-writable array
        hit = load_dataset(card, folders)
    same(hit, first)
    assert hit.protocol["val"]["carved_from"] == "train"  # stored after the carve
    assert hit.splits["train"].images.shape[1] == 3  # RGB, stored [N, C, H, W]
    if Path("/proc/self/maps").is_file():  # no copy in process memory: the mapped files
        for name, split in hit.splits.items():
            assert mapped_file(split.images) == str(entry / f"{name}.images.npy")

    monkeypatch.undo()
    monkeypatch.setenv("MEDPEFT_CARDS", str(folders.parent / "cards"))
    monkeypatch.setenv("MEDPEFT_CACHE", str(folders.parent / "cache"))
    monkeypatch.setenv("MEDPEFT_DECODED_CACHE", "0")
    fresh = load_dataset(card, folders)  # decoded from the files, cache off
    same(hit, fresh)
    assert "decoded" not in str(mapped_file(fresh.splits["train"].images))  # heap, not a file


def test_listing_is_the_readers_own_file_list(folders: Path, opens: list[str]) -> None:
    card = get_card("folders")
    root, found, groups = decoding.list_files(read_arrays, card, folders)
    assert root == card.folder(folders) and not opens  # listed without opening an image
    assert groups == {}  # an image folder names no patient groups
    decoded = read_arrays(card, folders)
    assert {s: [rel for _, rel in items] for s, items in found.items()} == {
        s: part.paths for s, part in decoded.items()
    }
    assert {s: [int(lab) for lab, _ in items] for s, items in found.items()} == {
        s: part.labels.tolist() for s, part in decoded.items()
    }


# -------------------------------------------------------------------------- invalidation


def test_touched_or_added_file_is_decoded_again(folders: Path, opens: list[str]) -> None:
    card = get_card("folders")
    first = load_dataset(card, folders)
    [old] = entries()
    one = folders / "folders" / "test" / "malignant" / "1.png"
    os.utime(one, ns=(OLD_NS + 10**9, OLD_NS + 10**9))  # same bytes, new mtime
    opens.clear()
    touched = load_dataset(card, folders)
    assert len(opens) == 18  # re-decoded, not served from the old entry
    same(touched, first)
    [new] = entries()  # the superseded entry was removed, not left to fill the disk
    assert new != old

    rgb(folders / "folders" / "test" / "benign" / "9.png", seed=999)
    settle(folders)
    opens.clear()
    added = load_dataset(card, folders)
    assert len(opens) == 19
    assert "test/benign/9.png" in added.splits["test"].paths
    assert len(added.splits["test"]) == len(first.splits["test"]) + 1
    opens.clear()
    same(load_dataset(card, folders), added)
    assert not opens  # and that is cached in turn


def test_changed_label_in_a_manifest_is_decoded_again(env: Path, opens: list[str]) -> None:
    root = env / "data"
    rows = ["image,split,label"]
    for i in range(8):
        rgb(root / "manifest" / "img" / f"{i}.png", seed=i)
        rows.append(f"img/{i}.png,{'test' if i >= 6 else 'train'},{CLASSES[i % 2]}")
    manifest = root / "manifest" / "labels.csv"
    manifest.write_text("\n".join(rows) + "\n")
    settle(root)
    card = get_card("manifest")
    before = load_dataset(card, root)
    # same size, same mtime: only the label differs (the key holds labels, not only file stats)
    manifest.write_text(manifest.read_text().replace("img/7.png,test,malignant",
                                                     "img/7.png,test,benign   "))  # fmt: skip
    settle(root)
    opens.clear()
    after = load_dataset(card, root)
    assert len(opens) == 8
    assert before.splits["test"].labels.tolist() == [0, 1]
    assert after.splits["test"].labels.tolist() == [0, 0]


def test_files_written_seconds_ago_are_not_cached(folders: Path) -> None:
    settle(folders, time.time_ns())  # an mtime a later write could repeat with other bytes
    load_dataset(get_card("folders"), folders)
    assert entries() == []


# ---------------------------------------------------------------------- failures, switches


def test_failed_write_leaves_nothing_that_is_read_back(
    folders: Path, monkeypatch: pytest.MonkeyPatch, opens: list[str], caplog
) -> None:
    card = get_card("folders")
    real = decoded_cache._save

    def crash_after_images(path: Path, array: np.ndarray) -> None:
        real(path, array)
        if path.name == "val.images.npy":
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(decoded_cache, "_save", crash_after_images)
    with caplog.at_level(logging.WARNING, logger="bench.decoded_cache"):
        data = load_dataset(card, folders)  # the run goes on without a cache
    assert "decoded cache not written" in caplog.text and "No space left" in caplog.text
    assert entries() == []  # neither an entry nor the temporary folder

    class Killed(BaseException):  # like Ctrl-C mid-write: propagates, still cleans up
        pass

    def killed(path: Path, array: np.ndarray) -> None:
        real(path, array)
        raise Killed

    monkeypatch.setattr(decoded_cache, "_save", killed)
    with pytest.raises(Killed):
        load_dataset(card, folders)
    assert entries() == []

    # a writer killed outright leaves arrays without meta.json (written last): never read
    monkeypatch.setattr(decoded_cache, "_save", real)
    load_dataset(card, folders)
    [entry] = entries()
    (entry / "meta.json").unlink()
    opens.clear()
    same(load_dataset(card, folders), data)
    assert len(opens) == 18
    assert (entry / "meta.json").is_file()  # rewritten whole


def test_corrupt_entry_is_detected_and_replaced(folders: Path, opens: list[str], caplog) -> None:
    card = get_card("folders")
    first = load_dataset(card, folders)
    [entry] = entries()
    images = entry / "test.images.npy"
    raw = bytearray(images.read_bytes())
    raw[-1] ^= 0xFF  # same size, one pixel flipped: only the fingerprint check can see it
    images.write_bytes(bytes(raw))
    opens.clear()
    with caplog.at_level(logging.WARNING, logger="bench.decoded_cache"):
        again = load_dataset(card, folders)
    assert "unusable" in caplog.text and "fingerprint" in caplog.text
    assert len(opens) == 18
    same(again, first)


def test_switched_off_by_env(folders: Path, monkeypatch: pytest.MonkeyPatch, opens) -> None:
    card = get_card("folders")
    monkeypatch.setenv("MEDPEFT_DECODED_CACHE", "0")
    load_dataset(card, folders)
    assert entries() == []  # nothing written
    monkeypatch.delenv("MEDPEFT_DECODED_CACHE")
    load_dataset(card, folders)
    assert len(entries()) == 1
    monkeypatch.setenv("MEDPEFT_DECODED_CACHE", "0")
    opens.clear()
    load_dataset(card, folders)
    assert len(opens) == 18  # an existing entry is not read either


def test_data_check_reads_the_files_not_the_cache(folders: Path, opens: list[str]) -> None:
    card = get_card("folders")
    check_dataset(card, folders)
    assert len(opens) == 18 and len(entries()) == 1  # decoded, and the cache written for runs
    opens.clear()
    check_dataset(card, folders)
    assert len(opens) == 18  # a check of the files decodes them even with a cache present
    opens.clear()
    load_dataset(card, folders)
    assert not opens  # what `bench run` loads


def test_data_info_says_whether_a_cache_exists(folders: Path) -> None:
    runner = CliRunner()

    def info() -> str:
        args = ["data", "info", "folders", "--data-root", str(folders)]
        result = runner.invoke(app, args, catch_exceptions=False, env={"COLUMNS": "300"})
        assert result.exit_code == 0, result.output
        return " ".join(result.output.replace("│", " ").split())

    assert "decoded cache none for the current files" in info()
    load_dataset(get_card("folders"), folders)
    [entry] = entries()
    assert "decoded cache yes, " in info() and str(entry) in info()
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["identity"]["card"]["name"] == "folders"


def test_bench_run_from_the_cache_records_what_a_decode_records(
    folders: Path, monkeypatch: pytest.MonkeyPatch, opens: list[str]
) -> None:
    def run(results: Path) -> dict:
        args = ["run", "--methods", "linear", "--datasets", "folders", "--data-root", str(folders),
                "--backbone", "test_vit", "--no-pretrained", "--img-size", "32", "--epochs", "1",
                "--results", str(results), "--no-progress"]  # fmt: skip
        res = CliRunner().invoke(app, args, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        (record,) = [json.loads(f.read_text()) for f in results.glob("*.json")]
        assert record["status"] == "ok", record.get("error")
        return record

    cold = run(folders.parent / "r1")
    assert len(opens) == 18

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cache hit opened an image file")

    monkeypatch.setattr(decoding.Image, "open", no_decoding)
    cached = run(folders.parent / "r2")  # trains and evaluates on the memory-mapped pixels
    assert cached["dataset"] == cold["dataset"]  # fingerprint, sizes, protocol
    assert cached["run_id"] == cold["run_id"]
    # same pixels, same seed: the same scores to the last bit on one machine
    assert cached["metrics"] == cold["metrics"]
