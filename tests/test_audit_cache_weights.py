"""Hostile-input audit: cache folders and weights files (bench/cache_dirs.py, bench/weights.py,
bench/demo_vit.py, bench/feature_cache.py, bench/decoded_cache.py).

An unusable cache folder fails at once, naming the folder and $MEDPEFT_CACHE:
  - demo-vit, MEDPEFT_CACHE a regular file: refused before pretraining starts
    (test_demo_vit_pretraining_never_starts_in_an_unwritable_cache, and through `bench run`:
    test_cli_refuses_an_unwritable_cache_before_pretraining)
  - the feature cache, same: refused before any feature is computed
    (test_feature_cache_refuses_an_unwritable_cache)
  - the decoded-image cache, same: a warning that says what to change, the files are decoded
    (test_decoded_cache_warns_about_an_unwritable_cache)
  - a folder without write permission: the OS's reason and the variable to change
    (test_read_only_cache_folder_is_named; skipped as root, who may write anywhere)

A weights file that reads but does not hold tensors timm can use is one UserError naming the file,
the entry and what was expected (test_bad_weights_content_is_one_clear_error):
  .pth/.pt  an int, None, a string or a dict where a tensor belongs, a list or an int where the
            state dict belongs, a name that is not text, a complex tensor, a 1-D pos_embed or
            patch projection, nested dicts holding strings;
  .safetensors  a 1-D pos_embed, a tensor named 'model' (timm unwraps that name), a tensor of the
            right rank but the wrong size (the failing key is named);
  .npz      text or complex arrays, a 1-D patch kernel or position embedding.
A property test mutates a real model's state dict (values, ranks, names, wrappers, format): the
result loads or is one UserError naming the file (test_mutated_state_dicts_load_or_fail_cleanly).

Temporary entries of killed writers go when the cache next writes (older than an hour; a younger
one may be a live writer's):
  - feature-cache build folders (test_feature_cache_removes_stale_build_folders), and a live
    build keeps its folder fresh (test_feature_build_keeps_its_temp_folder_fresh)
  - demo-vit weight temp files (test_demo_vit_removes_stale_temp_files)
  - decoded-cache write folders (test_decoded_cache_removes_stale_write_folders)
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from bench import demo_vit
from bench.backbones import create_backbone, resolve_backbone
from bench.catalog import get_card
from bench.cli import app
from bench.data import load_dataset
from bench.errors import UserError
from bench.feature_cache import load_or_build

HOUR = 3600
OLD = time.time() - 2 * HOUR


def not_pretraining(*args, **kwargs):
    raise AssertionError("demo-vit pretraining started")


@pytest.fixture
def cache_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$MEDPEFT_CACHE naming a regular file; pretraining demo-vit fails the test."""
    file = tmp_path / "cache.txt"
    file.write_text("not a folder\n")
    monkeypatch.setenv("MEDPEFT_CACHE", str(file))
    monkeypatch.setattr(demo_vit, "pretrain_demo_vit", not_pretraining)
    no_shipped_weights(monkeypatch, tmp_path)
    return file


def no_shipped_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A package built without the shipped demo-vit weights: the cache must hold them."""
    monkeypatch.setattr(demo_vit, "shipped_demo_vit_path", lambda: tmp_path / "none.safetensors")


def assert_names_file_and_variable(message: str, folder: Path, file: Path) -> None:
    assert message.startswith(f"cannot write the cache folder {folder}: "), message
    assert f"{file} is a file, not a folder" in message, message
    assert f"Set MEDPEFT_CACHE (now {file}) to a folder you can write" in message, message
    assert "\n" not in message


# ---------------------------------------------------------------------- unwritable cache folders


def test_demo_vit_pretraining_never_starts_in_an_unwritable_cache(cache_is_a_file: Path) -> None:
    with pytest.raises(UserError) as caught:
        resolve_backbone("demo-vit", pretrained=True, weights=None, progress=False)
    assert_names_file_and_variable(str(caught.value), cache_is_a_file, cache_is_a_file)


def test_cli_refuses_an_unwritable_cache_before_pretraining(
    cache_is_a_file: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    res = CliRunner().invoke(
        app,
        ["run", "--methods", "linear", "--datasets", "demo", "--backbone", "demo-vit",
         "--no-progress", "--results", str(results)],
        env={"COLUMNS": "400"},
    )  # fmt: skip
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    err = res.stderr.strip()
    assert err.startswith("error: "), err
    assert_names_file_and_variable(err.removeprefix("error: "), cache_is_a_file, cache_is_a_file)
    assert not results.exists()


def test_feature_cache_refuses_an_unwritable_cache(cache_is_a_file: Path) -> None:
    calls: list[tuple[int, int]] = []

    def compute(start: int, end: int) -> dict[str, torch.Tensor]:
        calls.append((start, end))
        return {"f": torch.zeros(end - start, 2)}

    with pytest.raises(UserError) as caught:
        load_or_build({"dataset": "toy"}, count=4, shapes={"f": (2,)}, dtype="float32",
                      compute=compute, batch_size=2)  # fmt: skip
    assert_names_file_and_variable(str(caught.value), cache_is_a_file / "features", cache_is_a_file)
    assert calls == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_read_only_cache_folder_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.cache_dirs import check_cache_writable

    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o500)
    monkeypatch.setenv("MEDPEFT_CACHE", str(cache))
    try:
        with pytest.raises(UserError) as caught:
            check_cache_writable()
    finally:
        cache.chmod(0o700)
    assert str(caught.value) == (
        f"cannot write the cache folder {cache}: Permission denied. "
        f"Set MEDPEFT_CACHE (now {cache}) to a folder you can write"
    )


@pytest.fixture
def image_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A card `folders` (imagefolder, two classes) and its files, settled (two hours old)."""
    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "folders.toml").write_text(
        'name = "folders"\ntitle = "t"\nlicense = "t"\nsource = "t"\nlayout = "t"\n'
        'task = "binary"\nformat = "imagefolder"\nprimary_metric = "auc"\n'
        'classes = ["benign", "malignant"]\nimage_size = 16\nval_fraction = 0.25\n'
    )
    monkeypatch.setenv("MEDPEFT_CARDS", str(cards))
    monkeypatch.delenv("MEDPEFT_DECODED_CACHE", raising=False)
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for cls in ("benign", "malignant"):
            for i in range(n):
                path = root / "folders" / split / cls / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
                os.utime(path, (OLD, OLD))
    return root


def test_decoded_cache_warns_about_an_unwritable_cache(
    image_dataset: Path, cache_is_a_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="bench.decoded_cache"):
        data = load_dataset(get_card("folders"), image_dataset)
    assert len(data.splits["test"]) == 6  # decoded from the files all the same
    [warning] = [r.getMessage() for r in caplog.records if "decoded cache" in r.getMessage()]
    assert warning.startswith("decoded cache not written: cannot write the cache folder "), warning
    assert f"{cache_is_a_file} is a file, not a folder" in warning
    assert f"Set MEDPEFT_CACHE (now {cache_is_a_file})" in warning


# --------------------------------------------------------------------------- weights content


@pytest.fixture(scope="module")
def test_vit_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return timm.create_model("test_vit", pretrained=False).state_dict()  # embed 64, 160 px


def _full(**changes: torch.Tensor):
    return lambda state: {**state, **changes}


NPZ_PATCH = {
    "embedding/kernel": np.zeros((16, 16, 3, 64), np.float32),
    "embedding/bias": np.zeros(64, np.float32),
    "cls": np.zeros((1, 1, 64), np.float32),
}
# name: (file suffix, content from test_vit's state dict, what the message must say)
BAD_WEIGHTS = {
    "int-value": (".pth", lambda s: {"pos_embed": 5},
                  "entry 'pos_embed' holds an int (5), expected a tensor"),
    "none-value": (".pth", lambda s: {**s, "cls_token": None},
                   "entry 'cls_token' holds None, expected a tensor"),
    "string-value": (".pt", lambda s: {**s, "norm.weight": "ones"},
                     "entry 'norm.weight' holds a str ('ones'), expected a tensor"),
    "list-state-dict": (".pth", lambda s: {"state_dict": [1, 2, 3]},
                        "entry 'state_dict' holds a list, expected a dict of tensors"),
    "int-model": (".pt", lambda s: {"model": 3, "epoch": 7},
                  "entry 'model' holds an int (3), expected a dict of tensors"),
    "nested-strings": (".pth", lambda s: {"model": {"blocks": {"0": "attn"}, "norm": "x"}},
                       "entry 'model.blocks' holds a dict, expected a tensor"),
    "wrapped-string": (".pth", lambda s: {"state_dict": {**s, "pos_embed": "grid"}, "epoch": 1},
                       "entry 'state_dict.pos_embed' holds a str ('grid'), expected a tensor"),
    "int-name": (".pth", lambda s: {**s, 7: torch.zeros(2)},
                 "an entry is named an int (7), expected text"),
    "complex": (".pth", _full(pos_embed=torch.zeros(1, 101, 64, dtype=torch.complex64)),
                "entry 'pos_embed' is a torch.complex64 tensor, expected real numbers"),
    "1d-pos-embed": (".pth", _full(pos_embed=torch.zeros(10)),
                     "entry 'pos_embed' is a 1-D tensor of shape (10,), expected 3-D like "
                     "test_vit's (1, 101, 64)"),
    "1d-patch-embed": (".pth", _full(**{"patch_embed.proj.weight": torch.zeros(5)}),
                       "entry 'patch_embed.proj.weight' is a 1-D tensor of shape (5,), expected "
                       "4-D like test_vit's (64, 3, 16, 16)"),
    "safetensors-1d-pos-embed": (".safetensors", _full(pos_embed=torch.zeros(10)),
                                 "entry 'pos_embed' is a 1-D tensor of shape (10,), expected 3-D"),
    "safetensors-tensor-named-model": (".safetensors", lambda s: {**s, "model": torch.zeros(3)},
                                       "entry 'model' holds a Tensor, expected a dict of tensors"),
    "safetensors-wrong-size": (".safetensors",
                               _full(**{"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}),
                               "size mismatch for blocks.0.attn.qkv.weight"),
    "npz-text": (".npz", lambda s: {**NPZ_PATCH, "cls": np.array(["token"])},
                 "array 'cls' holds text, expected real numbers"),
    "npz-complex": (".npz", lambda s: {**NPZ_PATCH, "embedding/bias": np.zeros(64, np.complex64)},
                    "array 'embedding/bias' holds complex numbers, expected real numbers"),
    "npz-1d-kernel": (".npz", lambda s: {**NPZ_PATCH, "embedding/kernel": np.zeros(3)},
                      "array 'embedding/kernel' is 1-D of shape (3,), expected 4-D or 2-D"),
    "npz-1d-pos-embedding": (".npz", lambda s: {
        **NPZ_PATCH, "Transformer/posembed_input/pos_embedding": np.zeros(10, np.float32)},
        "array 'Transformer/posembed_input/pos_embedding' is 1-D of shape (10,), expected 3-D"),
}  # fmt: skip


def write_weights(path: Path, content: dict) -> None:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous().clone() for k, v in content.items()}, str(path))
    elif path.suffix == ".npz":
        np.savez(path, **content)
    else:
        torch.save(content, path)


@pytest.mark.parametrize("case", list(BAD_WEIGHTS))
def test_bad_weights_content_is_one_clear_error(
    tmp_path: Path, test_vit_state: dict[str, torch.Tensor], case: str
) -> None:
    suffix, make, fragment = BAD_WEIGHTS[case]
    path = tmp_path / f"weights{suffix}"
    write_weights(path, make(test_vit_state))
    with pytest.raises(UserError) as caught:
        create_backbone(resolve_backbone("test_vit", pretrained=True, weights=path), num_classes=2)
    message = str(caught.value)
    assert str(path) in message and fragment in message, message
    assert "\n" not in message


VALUES = st.one_of(
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.text(max_size=4),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.one_of(st.text(max_size=3), st.integers()), max_size=2),
    st.builds(
        lambda shape, dtype: torch.zeros(shape, dtype=dtype),
        st.lists(st.integers(0, 3), max_size=5),
        st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool, torch.complex64]),
    ),
)
RESHAPES = {
    "flatten": lambda t: t.flatten(),
    "unsqueeze": lambda t: t.unsqueeze(0),
    "squeeze": lambda t: t.squeeze(),
    "transpose": lambda t: t.transpose(0, -1) if t.ndim else t,
    "scalar": lambda t: t.flatten()[:1].reshape(()) if t.numel() else t,
}
EDITS = st.one_of(
    st.tuples(st.just("drop")),
    st.tuples(st.just("value"), VALUES),
    st.tuples(st.just("reshape"), st.sampled_from(sorted(RESHAPES))),
    st.tuples(st.just("rename"), st.one_of(st.text(max_size=12), st.integers())),
)
WRAPPERS = st.sampled_from([None, "state_dict", "model", "state_dict_ema", "encoder", "module."])


@settings(deadline=None, max_examples=30)
@given(
    picks=st.lists(st.tuples(st.integers(0, 10**6), EDITS), max_size=4),
    extra=st.dictionaries(st.text(max_size=8), VALUES, max_size=2),
    wrapper=WRAPPERS,
    suffix=st.sampled_from([".pth", ".safetensors"]),
)
def test_mutated_state_dicts_load_or_fail_cleanly(
    tmp_path_factory: pytest.TempPathFactory,
    test_vit_state: dict[str, torch.Tensor],
    picks: list,
    extra: dict,
    wrapper: str | None,
    suffix: str,
) -> None:
    state: dict = {k: v.clone() for k, v in test_vit_state.items()}
    names = list(state)
    for index, edit in picks:
        key = names[index % len(names)]
        if key not in state:
            continue
        if edit[0] == "drop":
            del state[key]
        elif edit[0] == "value":
            state[key] = edit[1]
        elif edit[0] == "reshape" and isinstance(state[key], torch.Tensor):
            state[key] = RESHAPES[edit[1]](state[key])
        elif edit[0] == "rename":
            state[edit[1]] = state.pop(key)
    state.update(extra)
    if wrapper == "module.":
        state = {f"module.{k}" if isinstance(k, str) else k: v for k, v in state.items()}
    elif wrapper is not None:
        state = {wrapper: state, "epoch": 3}
    tensors_only = all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    if not tensors_only:
        suffix = ".pth"  # safetensors holds named tensors and nothing else
    path = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / f"w{suffix}"
    write_weights(path, state)
    try:
        model = create_backbone(
            resolve_backbone("test_vit", pretrained=True, weights=path), num_classes=2
        )
    except UserError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc), str(exc)
    else:
        assert model.get_classifier().out_features == 2


# -------------------------------------------------------------------- stale temporary entries


def make_old(path: Path, *, folder: bool) -> Path:
    if folder:
        path.mkdir(parents=True)
        (path / "k.npy").write_bytes(b"partial")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")
    os.utime(path, (OLD, OLD))
    return path


def test_feature_cache_removes_stale_build_folders(tmp_path: Path) -> None:
    root = tmp_path / "features"
    old = make_old(root / f".{'a' * 24}.4242.deadbeef.tmp", folder=True)
    fresh = root / f".{'b' * 24}.4243.cafef00d.tmp"  # another runner's build in progress
    fresh.mkdir()
    foreign = make_old(root / ".notes.tmp", folder=True)  # not a build folder: the user's
    entry = load_or_build({"dataset": "toy"}, count=4, shapes={"f": (2,)}, dtype="float32",
                          compute=lambda a, b: {"f": torch.ones(b - a, 2)}, batch_size=2,
                          root=root)  # fmt: skip
    assert not old.exists()
    assert fresh.is_dir() and foreign.is_dir()
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [entry.path.name, fresh.name, foreign.name]
    )


def test_feature_build_keeps_its_temp_folder_fresh(tmp_path: Path) -> None:
    """A build that runs longer than the stale age is not taken for a killed one: every batch
    touches its folder."""
    root = tmp_path / "features"
    ages: list[float] = []

    def compute(start: int, end: int) -> dict[str, torch.Tensor]:
        [tmp] = [p for p in root.iterdir() if p.name.endswith(".tmp")]
        ages.append(time.time() - tmp.stat().st_mtime)
        os.utime(tmp, (OLD, OLD))  # as if this batch had taken two hours
        return {"f": torch.ones(end - start, 2)}

    load_or_build({"dataset": "toy"}, count=6, shapes={"f": (2,)}, dtype="float32",
                  compute=compute, batch_size=2, root=root)  # fmt: skip
    assert len(ages) == 3
    assert all(age < 60 for age in ages[1:]), ages


def test_the_shipped_demo_vit_needs_no_writable_cache(tmp_path, monkeypatch) -> None:
    file = tmp_path / "cache.txt"
    file.write_text("not a folder\n")
    monkeypatch.setenv("MEDPEFT_CACHE", str(file))
    monkeypatch.setattr(demo_vit, "pretrain_demo_vit", not_pretraining)
    source = resolve_backbone("demo-vit", pretrained=True, weights=None, progress=False)
    assert source.weights == demo_vit.shipped_demo_vit_path()


def test_demo_vit_removes_stale_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("MEDPEFT_CACHE", str(cache))
    old = make_old(cache / ".demo-vit-v1.safetensors.abcd1234.tmp", folder=False)
    older_recipe = make_old(cache / ".demo-vit-v0.safetensors.x_9y8z7w.tmp", folder=False)
    fresh = cache / ".demo-vit-v1.safetensors.qwer5678.tmp"  # a pretraining saving right now
    fresh.write_bytes(b"partial")
    foreign = make_old(cache / ".notes.tmp", folder=False)
    calls: list[Path] = []
    monkeypatch.setattr(demo_vit, "pretrain_demo_vit", lambda path, **kw: calls.append(path))
    no_shipped_weights(monkeypatch, tmp_path)
    path = demo_vit.ensure_demo_vit(progress=False)
    assert calls == [path]
    assert not old.exists() and not older_recipe.exists()
    assert fresh.exists() and foreign.exists()


def test_decoded_cache_removes_stale_write_folders(
    image_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded = tmp_path / "cache" / "decoded"
    monkeypatch.setenv("MEDPEFT_CACHE", str(tmp_path / "cache"))
    old = make_old(decoded / f".{'c' * 24}.4242.deadbeef.tmp", folder=True)  # two hours old
    fresh = decoded / f".{'d' * 24}.4243.cafef00d.tmp"
    fresh.mkdir()
    load_dataset(get_card("folders"), image_dataset)
    assert not old.exists() and fresh.is_dir()
    assert len([p for p in decoded.iterdir() if not p.name.startswith(".")]) == 1  # the entry
