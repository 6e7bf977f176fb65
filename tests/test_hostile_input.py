"""Hostile input: malformed options, protocol files, dataset cards, manifests, images,
weights and records end in one clear message, never a traceback; nothing makes the suite read
outside the dataset folder, run code from a pickle, or overwrite a file that is not its own.

Bad-input cases covered in this file, each asserting its message:

CLI grid options (`bench run`, through CliRunner; exit 2, one `error:` line, nothing written):
   1. --set random text; missing '.' or '='                 test_set_random_text_fails_cleanly
   2. --set for an unknown method (also 'all', 'core')       test_set_unknown_method
   3. --set for a key the method does not have               test_set_unknown_key
   4. --set value of the wrong type for the key's default    test_set_value_of_wrong_type
   5. --set nan/inf/1e999 for a float key                    test_set_non_finite_float
   6. --seeds/--shots/--split-seeds random text              test_int_lists_random_text
   7. negative values                                        test_int_lists_bad_values
   8. reversed ranges                                        test_int_lists_bad_values
   9. huge ranges (more than 10,000 values)                  test_int_lists_bad_values
  10. values above 2**32 - 1 (np.random.seed's limit)        test_int_lists_bad_values
  11. --methods/--datasets random or unknown names   test_names_random_text, test_unknown_names
  12. --protocol names that are not shipped ('../..')        test_protocol_names
  13-22. one each: '1_000' seeds, --split-seeds without --shots, --lr inf, --warmup-epochs nan,
      --set linear.weight_decay=inf, --set all.lr, an over-long name, a huge --shots range,
      --protocol naming a real protocol file by a '../' path, --results naming a file
                                  test_cli_case, test_protocol_path_is_not_a_name,
                                  test_results_is_a_file
Protocol files (`load_protocol`, and `bench run --protocol` on a generated file):
  23. random bytes / text                                    test_protocol_file_random_bytes
  24. random tables (any keys, any values)                   test_protocol_random_tables
  25. missing key, wrong type, unknown key                   test_protocol_mutation_message
  26. a generated protocol run through the CLI               test_protocol_file_through_cli
  27-33. malformed TOML, bool as integer, paper_csv a path, name not the file's, negative seed,
      split_seeds without shots, empty methods               test_protocol_file_case
Data:
  34-38. cards: malformed TOML, missing keys, name not the file's, $MEDPEFT_CARDS not a folder,
      a dataset defined twice                                test_card_case
  39-41. split list naming '../..', an absolute path, a symlink out   test_split_list_escape
  42. CSV: a symlinked folder then '..' (checked path == opened path) test_csv_symlink_then_dotdot
  43. per-split CSV manifest path leading out                test_card_paths_escape
  44. annotation file path leading out                       test_card_paths_escape
  45. NUL byte / symlink loop in a listed path               test_unusable_listed_paths
  46-48. images: decompression bomb, not an image, empty file   test_bad_image
Weights:
  49. torch.save pickle calling os.system (refused, never run)  test_malicious_pickles_are_never_run
  50. raw pickle renamed .pth (refused, never run)            test_malicious_pickles_are_never_run
  51. .npz holding a pickled object array (never run)        test_malicious_pickles_are_never_run
  52. a tensor instead of a state dict                       test_weights_not_a_state_dict
  53. wrong tensor shape                                     test_weights_wrong_shape
  54. bench run --weights evil.pth: exit 2, nothing run      test_cli_refuses_malicious_weights
Records (`bench report` and `bench status` list them as unreadable, leave
them untouched, and report the rest):
  55-63. truncated JSON, binary, a JSON list, foreign JSON, schema without run id, config a
      string, a metric a list, status a number, calibration bins of unequal length
                                                             test_bad_record_is_skipped
  64. any field of a record replaced by any JSON value       test_mutated_records_never_crash_report
  65. a wrong-typed record where a cell's record goes: run refuses, file kept
                                                             test_run_never_overwrites_wrong_typed
Also: a card with wrong-typed values or a shot-file template reaching attributes
(test_card_with_wrong_types_is_a_user_error, 8 cases), a weights file missing backbone tensors
(test_weights_missing_tensors_refused; a file missing only the head is accepted), and one with
another model's extra tensors or blocks (test_weights_with_tensors_the_backbone_lacks_refused).

Cases a later audit found, each in its own file: tests/test_audit_records.py (results folders:
copies, foreign records, special files, full disk, exit statuses, report files),
tests/test_audit_data.py (cards, npz headers, image folders), tests/test_audit_cache_weights.py
(weights content, cache folders, stale temp files), tests/test_audit_claims.py (runners in one
Slurm job, SIGTERM).

Cases covered elsewhere before this file (by test name):
  tests/test_cli.py::test_bad_input_is_one_clear_line_before_training (unknown method, unknown
    dataset, malformed --set, unknown --set key, wrong-typed --set value, --set for a method not
    in --methods, '0,x' and '-1' seeds, --epochs 0, --batch-size 0, --lr -1, unknown backbone),
    test_unreadable_weights_file_cli, test_foreign_file_is_never_overwritten
  tests/test_cli_config.py: test_click_refuses_a_bad_choice_listing_the_valid (--device tpu,
    --precision fp8), test_other_choices_are_refused_too, test_bad_grid_files_fail_on_one_line
  tests/test_config.py: test_parse_sets_malformed, test_coerce_follows_default_type,
    test_parse_int_list
  tests/test_compile.py: test_precision_defaults_and_refusals,
    test_run_refuses_bf16_on_cpu_before_training
  tests/test_paper_protocols.py::test_protocol_refuses_grid_options_and_dry_run_lists_missing_data
  tests/test_backbones.py: test_weights_of_another_architecture_fail_clearly,
    test_unreadable_weights_file, test_pickle_with_code_is_refused, test_missing_weights_file,
    test_offline_named_backbone_fails_fast_with_instructions, test_unknown_backbone_suggests_names,
    test_weights_with_no_pretrained_contradict
  tests/test_data.py: test_unknown_dataset_lists_available, test_missing_file_says_where_to_get_it,
    test_labels_out_of_range_rejected
  tests/test_protocols.py: test_bad_card_names_its_file (task, metric, image_size, format),
    test_medmnist_size_variants, test_missing_test_split_is_never_carved,
    test_too_few_images_for_shots_fails_before_training,
    test_published_shot_files_are_read_by_split_seed, test_data_check_names_a_truncated_image,
    test_download_refuses_non_medmnist_with_the_source
  tests/test_readers.py: test_truncated_png_names_its_path, test_unexpected_class_folder_is_listed,
    test_class_without_training_image_is_named, test_missing_train_folder,
    test_csv_missing_columns_named, test_csv_unknown_label,
    test_csv_multilabel_columns_must_match_classes, test_csv_multihot_value_must_be_0_or_1,
    test_csv_unknown_split, test_csv_image_missing_on_disk, test_csv_paths_escaping_root_refused,
    test_csv_class_without_training_image, test_csv_ragged_row_refused,
    test_csv_onehot_row_must_have_exactly_one_1, test_csv_ignore_columns, test_csv_splits_errors,
    test_split_list_line_errors, test_split_list_file_errors, test_npz_errors_name_the_file,
    test_npz_multilabel_values_must_be_0_or_1, test_npz_unreadable_files,
    test_download_medmnist_failures
  tests/test_report_select.py: test_malformed_where_says_the_form,
    test_unknown_where_key_names_the_keys_there_are, test_cli_bad_filter_fails_before_writing
  tests/test_splits.py: test_class_with_too_few_images_is_named_with_counts,
    test_multilabel_too_few_positives_names_the_label, test_shots_below_one_rejected,
    test_wrong_label_shapes_rejected, test_val_fraction_outside_open_interval_rejected
  tests/test_transforms.py::test_unknown_preset_is_a_user_error_listing_names
  tests/test_profile.py::test_profile_cli_bad_input_is_one_line
  tests/test_feature_cache.py::test_build_that_does_not_fit_fails_before_computing
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import re
import string
import struct
import zlib
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import timm
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from bench import protocols
from bench.backbones import create_backbone, resolve_backbone
from bench.catalog import get_card, load_catalog
from bench.cli import app
from bench.errors import UserError
from bench.formats.csv_manifest import read_csv_manifest, read_csv_splits
from bench.formats.imagefolder import read_imagefolder
from bench.formats.split_list import read_split_lists
from bench.protocols import list_protocols, load_protocol
from bench.records import read_record
from bench.weights import check_weights_geometry
from methods import get_method

runner = CliRunner()
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
FEW = settings(FUZZ, max_examples=30)
GRID = ("--methods", "linear", "--datasets", "demo", "--backbone", "test_vit")
# Small methods whose dry runs are quick; their typed keys are what --set fuzzing aims at.
SET_METHODS = ("linear", "vpt", "lora", "ept", "adapter")
TYPED_KEYS = [
    (method, key, type(value).__name__)
    for method in SET_METHODS
    for key, value in get_method(method).all_defaults.items()
    if type(value) in (int, float, bool)
]
BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0"}
NON_FINITE = {"nan", "inf", "infinity"}
# Text as a terminal may hand it over: any code point, lone surrogates included (argv bytes
# that are not UTF-8 arrive as surrogate escapes).
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


def bench(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(
        app, list(args), catch_exceptions=True, env={"COLUMNS": "400", **(env or {})}
    )


def dry_run(scratch: Path, *args: str):
    """`bench run --dry-run ARGS` with --results in scratch; the run must end cleanly (exit 0
    or a one-line user error) and write nothing."""
    results = scratch / "results"
    res = bench("run", "--dry-run", "--no-progress", "--no-pretrained",
                "--data-root", str(scratch / "data"), "--results", str(results), *args)  # fmt: skip
    # never a traceback: every way out is a clean return or typer's exit
    assert res.exception is None or isinstance(res.exception, SystemExit), (args, res.exception)
    assert res.exit_code in (0, 2), (args, res.exit_code, res.output)
    assert not results.exists(), f"{args!r} wrote into --results"
    return res


def refused(res, *fragments: str) -> None:
    """Exit 2 through SystemExit, one `error:` line on stderr holding every fragment."""
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "error:" in res.output
    for fragment in fragments:
        assert fragment in err, (fragment, err)


# ------------------------------------------------------------------ CLI: --set (property-based)


@FUZZ
@given(text=ANY_TEXT)
def test_set_random_text_fails_cleanly(scratch: Path, text: str) -> None:
    res = dry_run(scratch, *GRID, f"--set={text}")
    if "." not in text or "=" not in text:
        refused(res, "malformed --set", "expected METHOD.KEY=VALUE")
    elif res.exit_code == 2:
        refused(res)


def _unknown_method(name: str) -> bool:
    try:
        get_method(name)
        return False
    except KeyError:
        return True


METHOD_NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,15}", fullmatch=True)
KEY_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)


@FEW
@given(name=st.sampled_from(["all", "core"]) | METHOD_NAMES.filter(_unknown_method), key=KEY_NAMES)
def test_set_unknown_method(scratch: Path, name: str, key: str) -> None:
    res = dry_run(scratch, *GRID, "--set", f"{name}.{key}=1")
    refused(res, f"unknown method {name!r}; available: full, linear")


@FEW
@given(method=st.sampled_from(SET_METHODS), key=KEY_NAMES)
def test_set_unknown_key(scratch: Path, method: str, key: str) -> None:
    assume(key not in get_method(method).all_defaults)
    res = dry_run(scratch, "--methods", method, "--datasets", "demo", "--backbone", "test_vit",
                  "--set", f"{method}.{key}=1")  # fmt: skip
    refused(res, f"--set {method}.{key}: {method!r} has no hyperparameter {key!r}; valid:")


@FUZZ
@given(
    target=st.sampled_from(TYPED_KEYS),
    value=st.text(alphabet=string.ascii_letters, min_size=1, max_size=12),
)
def test_set_value_of_wrong_type(scratch: Path, target: tuple[str, str, str], value: str) -> None:
    method, key, kind = target
    # letters alone are never an int or a float; a few words are booleans or non-finite floats
    assume(value.lower() not in BOOL_WORDS | NON_FINITE)
    res = dry_run(scratch, "--methods", method, "--datasets", "demo", "--backbone", "test_vit",
                  "--set", f"{method}.{key}={value}")  # fmt: skip
    refused(res, f"{method}.{key}={value!r}: expected a value of type {kind}")


@FEW
@given(
    target=st.sampled_from([t for t in TYPED_KEYS if t[2] == "float"]),
    value=st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e400"]),
)
def test_set_non_finite_float(scratch: Path, target: tuple[str, str, str], value: str) -> None:
    method, key, _ = target
    res = dry_run(scratch, "--methods", method, "--datasets", "demo", "--backbone", "test_vit",
                  "--set", f"{method}.{key}={value}")  # fmt: skip
    refused(res, f"{method}.{key}={value!r}: expected a finite number")


# ------------------------------------------------- CLI: --seeds/--shots/--split-seeds (property)

INT_OPTIONS = ("--seeds", "--shots", "--split-seeds")


def _int_option(option: str, text: str) -> list[str]:
    # --split-seeds needs --shots beside it
    return [f"{option}={text}", *(["--shots", "1"] if option == "--split-seeds" else [])]


@FUZZ
@given(option=st.sampled_from(INT_OPTIONS), text=ANY_TEXT)
def test_int_lists_random_text(scratch: Path, option: str, text: str) -> None:
    res = dry_run(scratch, *GRID, *_int_option(option, text))
    if any(not (c in "0123456789-," or c.isspace()) for c in text):
        refused(res, f"{option} ", "expected integers like '0,1,2' or '0-4'")
    elif res.exit_code == 2:
        refused(res, option)


BAD_INT_LISTS = st.one_of(
    st.integers(1, 10**6).map(lambda n: (f"-{n}", "every value must be an integer from 0 to")),
    st.tuples(st.integers(0, 10**6), st.integers(1, 10**6)).map(
        lambda t: (f"{t[0] + t[1]}-{t[0]}", f"runs backwards; write it low-high, e.g. '{t[0]}-")
    ),
    st.tuples(st.integers(0, 10**6), st.integers(10_000, 10**9)).map(
        lambda t: (f"0,{t[0]}-{t[0] + t[1]}", "more than 10,000 values")
    ),
    st.integers(2**32, 10**60).map(
        lambda n: (str(n), "every value must be an integer from 0 to 4294967295")
    ),
)


@FUZZ
@given(option=st.sampled_from(INT_OPTIONS), case=BAD_INT_LISTS)
def test_int_lists_bad_values(scratch: Path, option: str, case: tuple[str, str]) -> None:
    text, message = case
    res = dry_run(scratch, *GRID, *_int_option(option, text))
    refused(res, f"{option} ", message)


@FEW
@given(seeds=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4))
def test_valid_seed_lists_give_one_cell_per_distinct_seed(scratch: Path, seeds: list[int]) -> None:
    res = dry_run(scratch, *GRID, "--seeds", " , ".join(map(str, seeds)))
    assert res.exit_code == 0, res.output
    assert f"compute: {len(set(seeds))} cell(s)" in res.output


# --------------------------------------------------- CLI: --methods/--datasets/--protocol names


@FUZZ
@given(option=st.sampled_from(["--methods", "--datasets"]), names=st.lists(ANY_TEXT, max_size=3))
def test_names_random_text(scratch: Path, option: str, names: list[str]) -> None:
    args = dict(zip(GRID[::2], GRID[1::2], strict=True))
    args[option] = ",".join(names)
    res = dry_run(scratch, *(f"{flag}={value}" for flag, value in args.items()))
    if res.exit_code == 2:
        refused(res)


def _unknown_dataset(name: str) -> bool:
    # MedMNIST+ sizes are spelled NAME_SIZE; leave those to test_protocols
    return name not in load_catalog() and not re.fullmatch(r".+_[0-9]+", name)


@FUZZ
@given(
    option=st.sampled_from(["--methods", "--datasets"]),
    names=st.lists(METHOD_NAMES, min_size=1, max_size=3),
)
def test_unknown_names(scratch: Path, option: str, names: list[str]) -> None:
    is_unknown = _unknown_method if option == "--methods" else _unknown_dataset
    assume(all(is_unknown(n) and n not in ("all", "core") for n in names))
    args = dict(zip(GRID[::2], GRID[1::2], strict=True))
    args[option] = ",".join(names)
    res = dry_run(scratch, *(a for pair in args.items() for a in pair))
    kind = "method" if option == "--methods" else "dataset"
    refused(res, f"unknown {kind} {names[0]!r}; available:")


@FEW
@given(
    name=st.sampled_from(["../../../etc/passwd", "/etc/passwd", "fptplus/../fptplus", "FPTPLUS"])
    | ANY_TEXT.filter(lambda n: n not in list_protocols())
)
def test_protocol_names(scratch: Path, name: str) -> None:
    res = dry_run(scratch, f"--protocol={name}")
    refused(res, f"unknown protocol {name!r}; available: ept-table1")


# ------------------------------------------------------------------- CLI: one case per message


CLI_CASES = [
    (("--seeds", "1_000"), "--seeds '1_000': expected integers like '0,1,2' or '0-4'"),
    (("--seeds", "0-4294967295"), "more than 10,000 values; a grid that large is a typo"),
    (("--shots", "1-99999"), "--shots '1-99999': more than 10,000 values"),
    (("--split-seeds", "0-4"), "--split-seeds chooses few-shot samples; it needs --shots"),
    (("--lr", "inf"), "--lr must be > 0 and finite, got inf"),
    (("--warmup-epochs", "nan"), "--warmup-epochs and --grad-clip must be >= 0 and finite"),
    (("--set", "linear.weight_decay=inf"), "linear.weight_decay='inf': expected a finite number"),
    (("--set", "all.lr=0.1"), "--set all.…: unknown method 'all'"),
    (("--datasets", "demo," + "x" * 300), "is longer than 200 characters"),
]


@pytest.mark.parametrize(("args", "message"), CLI_CASES)
def test_cli_case(scratch: Path, args: tuple[str, ...], message: str) -> None:
    base = dict(zip(GRID[::2], GRID[1::2], strict=True))
    base.update(zip(args[::2], args[1::2], strict=True))
    refused(dry_run(scratch, *(a for pair in base.items() for a in pair)), message)


def test_protocol_path_is_not_a_name(scratch: Path, tmp_path: Path) -> None:
    # a real protocol file outside bench/protocols, named by a relative path: never read
    elsewhere = tmp_path / "fptplus.toml"
    elsewhere.write_bytes((protocols.PROTOCOL_DIR / "fptplus.toml").read_bytes())
    name = os.path.relpath(elsewhere.with_suffix(""), protocols.PROTOCOL_DIR)
    assert name.startswith("..")
    refused(dry_run(scratch, "--protocol", name),
            f"unknown protocol {name!r}; available: ept-table1")  # fmt: skip


def test_results_is_a_file(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.write_text("mine")
    res = bench("run", "--dry-run", *GRID, "--no-pretrained", "--results", str(results))
    refused(res, f"--results {results} exists and is not a folder")
    assert results.read_text() == "mine"


# -------------------------------------------------------------------------- protocol files

BASE_PROTOCOL: dict[str, Any] = {
    "name": "mine", "title": "a test grid", "paper_csv": "mine.csv", "backbone": "test_vit",
    "img_size": 32, "epochs": 1, "batch_size": 2, "augment": "none", "datasets": ["demo"],
    "methods": ["linear"], "seeds": [0], "paper_metric_note": "accuracy",
    "paper_methods": {"Linear": "linear"}, "paper_datasets": {"Demo": "demo"},
}  # fmt: skip
# What each key holds, written from the spec of a protocol file (not read from the loader).
KINDS = {
    "name": "string", "title": "string", "paper_csv": "string", "backbone": "string",
    "augment": "string", "paper_metric_note": "string", "img_size": "integer",
    "epochs": "integer", "batch_size": "integer", "datasets": "strings", "methods": "strings",
    "dataset_lr_methods": "strings", "seeds": "integers", "shots": "integers",
    "split_seeds": "integers", "paper_methods": "table", "paper_datasets": "table",
}  # fmt: skip
REQUIRED = ("name", "title", "paper_csv", "backbone", "epochs", "batch_size", "augment",
            "datasets", "methods", "seeds")  # fmt: skip
WORDS = st.text(alphabet=string.ascii_letters + string.digits + " -_.", max_size=10)
SCALARS = st.one_of(st.booleans(), st.integers(-(2**63), 2**63 - 1), WORDS,
                    st.floats(allow_nan=False, allow_infinity=False))  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,5}", fullmatch=True), inner, max_size=2
        )
    ),
    max_leaves=4,
)
# Values that are not of a key's kind, per kind.
WRONG = {
    "string": st.integers() | st.booleans() | st.lists(WORDS, min_size=1, max_size=2),
    "integer": WORDS | st.booleans() | st.floats(allow_nan=False, allow_infinity=False)
    | st.lists(st.integers(0, 9), min_size=1, max_size=2),
    "strings": WORDS | st.integers() | st.lists(st.integers() | st.booleans(), min_size=1,
                                                max_size=2),
    "integers": WORDS | st.integers() | st.lists(WORDS | st.booleans(), min_size=1, max_size=2),
    "table": WORDS | st.integers() | st.lists(st.integers(), max_size=2),
}  # fmt: skip


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's string escapes are TOML's
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(table: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in table.items())


def protocol_file(folder: Path, table: dict[str, Any] | str, name: str = "mine") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(table if isinstance(table, str) else to_toml(table), encoding="utf-8")
    return path


def test_base_protocol_loads(tmp_path: Path) -> None:
    p = load_protocol(protocol_file(tmp_path, BASE_PROTOCOL))
    assert (p.name, p.methods, p.seeds, p.img_size, p.shots) == (
        "mine",
        ("linear",),
        (0,),
        32,
        None,
    )
    assert load_protocol(protocol_file(tmp_path, {**BASE_PROTOCOL, "img_size": 32})).epochs == 1
    without = {k: v for k, v in BASE_PROTOCOL.items() if k != "img_size"}
    assert load_protocol(protocol_file(tmp_path, without)).img_size is None


@FUZZ
@given(data=st.binary(max_size=200) | ANY_TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_protocol_file_random_bytes(scratch: Path, data: bytes) -> None:
    path = scratch / "protocols" / "mine.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    with pytest.raises(UserError, match=rf"^protocol file {re.escape(str(path))}: "):
        load_protocol(path)


@FUZZ
@given(
    table=st.dictionaries(
        st.sampled_from(sorted(KINDS)) | st.from_regex(r"[a-z_]{1,8}", fullmatch=True),
        VALUES,
        max_size=8,
    )
)
def test_protocol_random_tables(scratch: Path, table: dict[str, Any]) -> None:
    path = protocol_file(scratch / "protocols", table)
    try:
        p = load_protocol(path)
    except UserError as exc:
        assert str(exc).startswith(f"protocol file {path}: ")
        return
    # what loads has the types the grid needs
    assert isinstance(p.epochs, int) and all(isinstance(s, int) for s in p.seeds)
    assert all(isinstance(m, str) for m in p.methods)


MUTATIONS = st.one_of(
    st.sampled_from(REQUIRED).map(lambda k: ("drop", k, None)),
    st.sampled_from(sorted(KINDS)).flatmap(
        lambda k: WRONG[KINDS[k]].map(lambda v, k=k: ("wrong", k, v))
    ),
    st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True)
    .filter(lambda k: k not in KINDS)
    .map(lambda k: ("unknown", k, 1)),
)


def mutate(mutation: tuple[str, str, Any]) -> tuple[dict[str, Any], str]:
    """The base protocol changed one way, and the message the change must produce."""
    how, key, value = mutation
    table = copy.deepcopy(BASE_PROTOCOL)
    if how == "drop":
        del table[key]
        return table, f"missing key(s) [{key!r}]"
    table[key] = value
    if how == "unknown":
        return table, f"unknown key(s) [{key!r}]; valid: name, title"
    return table, f"{key} must be "


@FUZZ
@given(mutation=MUTATIONS)
def test_protocol_mutation_message(scratch: Path, mutation: tuple[str, str, Any]) -> None:
    table, message = mutate(mutation)
    path = protocol_file(scratch / "protocols", table)
    with pytest.raises(UserError, match=re.escape(f"protocol file {path}: {message}")):
        load_protocol(path)


@FEW
@given(mutation=MUTATIONS | st.just(("none", "", None)))
def test_protocol_file_through_cli(scratch: Path, mutation: tuple[str, str, Any]) -> None:
    table, message = mutate(mutation) if mutation[0] != "none" else (BASE_PROTOCOL, "")
    folder = scratch / "shipped"
    for old in folder.glob("*.toml"):
        old.unlink()
    protocol_file(folder, table)
    with mock.patch.object(protocols, "PROTOCOL_DIR", folder):
        res = dry_run(scratch, "--protocol", "mine")
    if mutation[0] == "none":
        assert res.exit_code == 0 and "compute: 1 cell(s)" in res.output, res.output
    else:
        refused(res, f"protocol file {folder / 'mine.toml'}: {message}")


PROTOCOL_CASES = [
    ('name = "mine"\nepochs = = 3\n', "Invalid value"),
    ({**BASE_PROTOCOL, "batch_size": True}, "batch_size must be an integer, got bool True"),
    ({**BASE_PROTOCOL, "paper_csv": "../../secret.csv"}, "paper_csv '../../secret.csv' must be a "
                                                         "file name in"),
    ({**BASE_PROTOCOL, "name": "other"}, "name 'other' must equal the file name 'mine'"),
    ({**BASE_PROTOCOL, "seeds": [0, -1]}, "seeds must be >= 0, got [0, -1]"),
    ({**BASE_PROTOCOL, "split_seeds": [0, 1]}, "split_seeds choose few-shot samples; they need "
                                               "shots"),
    ({**BASE_PROTOCOL, "methods": []}, "methods is empty"),
]  # fmt: skip


@pytest.mark.parametrize(("table", "message"), PROTOCOL_CASES)
def test_protocol_file_case(tmp_path: Path, table: dict[str, Any] | str, message: str) -> None:
    path = protocol_file(tmp_path, table)
    with pytest.raises(
        UserError, match=re.escape(f"protocol file {path}: ") + ".*" + re.escape(message)
    ):
        load_protocol(path)


# ------------------------------------------------------------------------------ dataset cards

CARD = """name = "{name}"
title = "test"
task = "multiclass"
format = "imagefolder"
primary_metric = "accuracy"
classes = ["a", "b"]
image_size = 16
"""


def test_card_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cards = tmp_path / "cards"
    cards.mkdir()
    monkeypatch.setenv("MEDPEFT_CARDS", str(cards))
    cases = [
        ("mine", "name = [\n", "dataset card {path}: "),
        ("mine", 'name = "mine"\ntitle = "t"\n', "dataset card {path}: missing key(s) "
                                                  "['task', 'format', 'primary_metric']"),
        ("mine", CARD.format(name="yours"), "dataset card {path}: name 'yours' must equal the "
                                             "file name 'mine'"),
    ]  # fmt: skip
    for stem, body, message in cases:
        path = cards / f"{stem}.toml"
        path.write_text(body)
        with pytest.raises(UserError, match=re.escape(message.format(path=path))):
            load_catalog()
        path.unlink()
    # a dataset defined twice, in two card folders
    other = tmp_path / "more"
    other.mkdir()
    (cards / "mine.toml").write_text(CARD.format(name="mine"))
    (other / "mine.toml").write_text(CARD.format(name="mine"))
    monkeypatch.setenv("MEDPEFT_CARDS", os.pathsep.join([str(cards), str(other)]))
    with pytest.raises(UserError, match=r"dataset 'mine' is defined twice: .*cards/mine\.toml"):
        load_catalog()
    # $MEDPEFT_CARDS naming a file
    monkeypatch.setenv("MEDPEFT_CARDS", str(cards / "mine.toml"))
    with pytest.raises(
        UserError, match=r"\$MEDPEFT_CARDS names .*mine\.toml, which is not a folder"
    ):
        load_catalog()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('["a", "b"]', "5", "classes must be a list, got 5"),
        ('["a", "b"]', '"ab"', "classes must be a list, got 'ab'"),
        ('["a", "b"]', '["a", 2.5]', "classes must be a list of names, got 2.5"),
        ("image_size = 16", 'image_size = "big"', "image_size must be a whole number, got 'big'"),
        ("image_size = 16", "image_size = true", "image_size must be a whole number, got True"),
        ("image_size = 16", 'image_size = 16\nval_fraction = "x"',
         "val_fraction must be a number, got 'x'"),
        ("image_size = 16", 'image_size = 16\nepochs = "many"', "epochs must be a whole number"),
        ("image_size = 16", 'image_size = 16\n[reader]\nshot_files = {train = "{shots.__class__}"}',
         "use plain text with only the placeholders {shots} and {exp}"),
    ],
)  # fmt: skip
def test_card_with_wrong_types_is_a_user_error(tmp_path: Path, monkeypatch, old, new, message):
    text = CARD.format(name="mine")
    assert old in text
    (tmp_path / "mine.toml").write_text(text.replace(old, new))
    monkeypatch.setenv("MEDPEFT_CARDS", str(tmp_path))
    with pytest.raises(UserError, match="dataset card .*mine.toml: .*" + re.escape(message)):
        get_card("mine")


# ------------------------------------------------------------------ manifests leading outside


def png(path: Path, value: int = 100, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), value, dtype=np.uint8)).save(path)
    return path


OUTSIDE = "paths must stay inside the dataset folder"


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_split_list_escape(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "data"
    png(root / "images" / "a.png")
    secret = png(tmp_path / "secret.png")  # exists: only the containment check can refuse it
    value = {"dotdot": "../../secret.png", "absolute": str(secret), "symlink": "link.png"}[kind]
    if kind == "symlink":
        (root / "images" / "link.png").symlink_to(secret)
    (root / "train.txt").write_text(f"a.png 0\n{value} 1\n")
    listed = root / "train.txt"
    message = f"annotation file {listed} line 2: image path "
    with pytest.raises(UserError, match=re.escape(message) + r".* points outside .*" + OUTSIDE):
        read_split_lists(root, {"train": "train.txt"}, ["x", "y"], size=8, multilabel=False)


def test_csv_symlink_then_dotdot(tmp_path: Path) -> None:
    """`sub/../a.png` with `sub` a link to `deep/dir`: the OS reaches deep/a.png (inside) but the
    normalised path names a.png, a link out. The path checked must be the path opened."""
    root = tmp_path / "data"
    png(root / "deep" / "a.png")
    (root / "deep" / "dir").mkdir()
    (root / "sub").symlink_to(root / "deep" / "dir")
    (root / "a.png").symlink_to(png(tmp_path / "secret.png", 7))
    manifest = root / "m.csv"
    manifest.write_text("image,label\nsub/../a.png,x\n")
    with pytest.raises(
        UserError, match=rf"m\.csv line 2: image path 'sub/\.\./a\.png' .*{OUTSIDE}"
    ):
        read_csv_manifest(root, manifest, ["x"], size=8, split_column=None)


def test_card_paths_escape(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "labels.csv").write_text("image,label\n")
    with pytest.raises(UserError, match=rf"split 'train': manifest '\.\./labels\.csv' .*{OUTSIDE}"):
        read_csv_splits(root, {"train": ("../labels.csv", "")}, ["x"], size=8)
    (tmp_path / "train.txt").write_text("a.png 0\n")
    with pytest.raises(
        UserError, match=rf"split 'train': annotation file '/.*train\.txt' .*{OUTSIDE}"
    ):
        read_split_lists(root, {"train": str(tmp_path / "train.txt")}, ["x"], size=8,
                         multilabel=False)  # fmt: skip


def test_unusable_listed_paths(tmp_path: Path) -> None:
    root = tmp_path / "data"
    png(root / "images" / "a.png")
    (root / "images" / "loop").symlink_to(root / "images" / "loop")
    for name in ("a\x00b.png", "loop/x.png"):
        (root / "train.txt").write_text(f"a.png 0\n{name} 0\n")
        with pytest.raises(UserError, match=r"train\.txt line 2: image path .*"):
            read_split_lists(root, {"train": "train.txt"}, ["x"], size=8, multilabel=False)


# --------------------------------------------------------------------------------- bad images


def png_header(path: Path, width: int, height: int) -> None:
    """A PNG that declares width x height but holds no pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("bomb", "could be decompression bomb"),
        ("text", "cannot identify image file"),
        ("empty", "cannot identify image file"),
    ],
)
def test_bad_image(tmp_path: Path, kind: str, message: str) -> None:
    bad = tmp_path / "train" / "x" / "bad.png"
    if kind == "bomb":
        png_header(bad, 40_000, 40_000)  # 1.6 G pixels: refused before any memory is taken
    else:
        bad.parent.mkdir(parents=True)
        bad.write_bytes(b"" if kind == "empty" else b"#!/bin/sh\nrm -rf ~\n")
    with pytest.raises(UserError, match=r"cannot read image train/x/bad\.png .*" + message):
        read_imagefolder(tmp_path, ["x"], size=8)


# ----------------------------------------------------------------------------------- weights


class Payload:
    """Unpickling this runs a shell command that leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickles_are_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    zipped, raw, npz = tmp_path / "evil.pth", tmp_path / "renamed.pth", tmp_path / "evil.npz"
    torch.save({"pos_embed": Payload(marker)}, zipped)
    raw.write_bytes(pickle.dumps({"pos_embed": Payload(marker)}, protocol=2))
    np.savez(npz, a=np.array([Payload(marker)], dtype=object))
    for path in (zipped, raw):  # the torch-free shape check reads neither, and leaves them
        check_weights_geometry(path, "test_vit", width=64, depth=6)
    for path in (zipped, raw):
        with pytest.raises(UserError, match=rf"cannot read weights file {re.escape(str(path))}: "
                           r"it is a pickle that calls \w+\.system, which loading with "
                           r"weights_only=True refuses"):  # fmt: skip
            resolve_backbone("test_vit", pretrained=True, weights=path)
    with pytest.raises(
        UserError, match=rf"cannot build backbone 'test_vit' from {re.escape(str(npz))}"
    ):
        create_backbone(resolve_backbone("test_vit", pretrained=True, weights=npz), num_classes=2)
    assert not marker.exists(), "a pickle in a weights file ran code"
    # the legacy (pre-zip) torch.save format holds tensors only: still accepted
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    assert resolve_backbone("test_vit", pretrained=True, weights=legacy).weights == legacy


def test_weights_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(UserError, match="it holds a Tensor, not a state dict"):
        resolve_backbone("test_vit", pretrained=True, weights=path)


def test_weights_wrong_shape(tmp_path: Path) -> None:
    state = timm.create_model("test_vit", pretrained=False).state_dict()
    state["blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(UserError, match=r"cannot build backbone 'test_vit' from .*w\.safetensors: "
                       r"Error\(s\) in loading state_dict"):  # fmt: skip
        create_backbone(resolve_backbone("test_vit", pretrained=True, weights=path), num_classes=2)


def test_weights_missing_tensors_refused(tmp_path: Path) -> None:
    """timm loads non-strictly when the head is replaced: the suite refuses a file that lacks
    backbone tensors instead of training on half-random weights."""
    state = timm.create_model("test_vit", pretrained=False).state_dict()
    kept = {k: v.contiguous() for k, v in state.items() if not k.startswith("blocks.0.attn")}
    path = tmp_path / "partial.safetensors"
    save_file(kept, str(path))
    with pytest.raises(UserError, match=r"lack backbone tensors \(blocks\.0\.attn\.qkv\.weight, "):
        create_backbone(resolve_backbone("test_vit", pretrained=True, weights=path), num_classes=2)
    # the head alone missing is the normal case (a new head is built): accepted
    headless = {k: v.contiguous() for k, v in state.items() if not k.startswith("head.")}
    save_file(headless, str(tmp_path / "headless.safetensors"))
    model = create_backbone(
        resolve_backbone("test_vit", pretrained=True, weights=tmp_path / "headless.safetensors"),
        num_classes=2,
    )
    torch.testing.assert_close(model.blocks[0].attn.qkv.weight, state["blocks.0.attn.qkv.weight"])


def test_weights_with_tensors_the_backbone_lacks_refused(tmp_path: Path) -> None:
    """Another model's extra tensors (a distilled DeiT's token) would be dropped by timm's
    non-strict load, leaving a model the record calls pretrained on that file: refused. A
    deeper model's blocks are refused before timm loads anything."""
    state = timm.create_model("test_vit", pretrained=False).state_dict()
    distilled = {k: v.contiguous() for k, v in state.items()} | {
        "dist_token": torch.zeros(1, 1, 64)
    }
    path = tmp_path / "distilled.safetensors"
    save_file(distilled, str(path))
    with pytest.raises(UserError, match=r"hold tensors test_vit has no place for \(dist_token\)"):
        create_backbone(resolve_backbone("test_vit", pretrained=True, weights=path), num_classes=2)
    deeper = tmp_path / "deeper.pth"
    torch.save(state | {"blocks.6.norm1.weight": torch.ones(64)}, deeper)
    with pytest.raises(UserError, match="it holds 7 transformer blocks, but test_vit has 6"):
        resolve_backbone("test_vit", pretrained=True, weights=deeper)


def test_cli_refuses_malicious_weights(tmp_path: Path) -> None:
    marker, weights = tmp_path / "pwned", tmp_path / "evil.pth"
    torch.save({"pos_embed": Payload(marker)}, weights)
    res = bench("run", *GRID, "--weights", str(weights), "--results", str(tmp_path / "r"),
                "--no-progress")  # fmt: skip
    refused(res, f"cannot read weights file {weights}: it is a pickle that calls")
    assert not marker.exists() and not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------------- records


def good_record(run_id: str = "demo-linear-s0-abc") -> dict[str, Any]:
    config = {"method": "linear", "dataset": "demo", "seed": 0, "backbone": "test_vit",
              "pretrained": False, "weights": None, "weights_sha256": None, "epochs": 1,
              "batch_size": 8, "img_size": 32, "device": "cpu", "precision": "fp32",
              "optimizer": "adamw", "lr": 0.01, "weight_decay": 0.0, "warmup_epochs": 1.0,
              "grad_clip": 1.0, "augment": "none", "shots": None, "split_seed": 0, "hparams": {},
              "version": 2, "compile": False}  # fmt: skip
    return {
        "schema": 1, "run_id": run_id, "status": "ok", "error": None, "demo": True,
        "config": config,
        "dataset": {"name": "demo", "task": "multiclass", "primary_metric": "accuracy"},
        "params": {"trainable_params": 100, "trainable_pct": 0.5, "trainable_pct_no_head": 0.0},
        "metrics": {"primary_metric": "accuracy", "primary": 0.5,
                    "test": {"accuracy": 0.5, "macro_f1": 0.4, "auc": 0.6, "ece": 0.1},
                    "calibration": {"n_bins": 2, "count": [3, 1], "confidence": [0.4, 0.9],
                                    "accuracy": [0.3, None]}},
        "cost": {"wall_s": 1.0, "phases_s": {"train": 0.5},
                 "train_step": {"throughput_img_s": 100.0},
                 "memory": {"train": {"peak_rss_mb": 10.0, "memory_source": "rss"}}},
    }  # fmt: skip


def _set(record: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(record)
    *parents, key = dotted.split(".")
    table = out
    for name in parents:
        table = table[name]
    table[key] = value
    return out


BAD_RECORDS = {
    "truncated": json.dumps(good_record())[:-40].encode(),
    "binary": bytes(range(256)),
    "a list": b"[1, 2, 3]",
    "foreign": json.dumps({"hello": "not yours", "run_id": "x"}).encode(),
    "no run id": json.dumps({k: v for k, v in good_record().items() if k != "run_id"}).encode(),
    "config a string": json.dumps(_set(good_record(), "config", "linear")).encode(),
    "metric a list": json.dumps(_set(good_record(), "metrics.test.accuracy", [0.5])).encode(),
    "status a number": json.dumps(_set(good_record(), "status", 1)).encode(),
    "uneven bins": json.dumps(_set(good_record(), "metrics.calibration.count", [1])).encode(),
}


def report_over(results: Path, out: Path):
    res = bench("report", "--results", str(results), "--out", str(out), "--no-plots")
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res


@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_bad_record_is_skipped(tmp_path: Path, case: str) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "demo-linear-s0-abc.json").write_text(json.dumps(good_record()))
    bad = results / "bad.json"
    bad.write_bytes(BAD_RECORDS[case])
    assert read_record(bad) is None
    res = report_over(results, tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert f"skipped {bad}: not a medpeft-bench record (left untouched)" in res.output
    assert "(1 record(s))" in res.output  # the good record is still reported
    status = bench("status", "--results", str(results))
    assert status.exception is None or isinstance(status.exception, SystemExit)
    assert f"{bad}: not a medpeft-bench record" in status.output, status.output
    assert bad.read_bytes() == BAD_RECORDS[case]


def _leaf_paths(table: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in table.items():
        out.append(prefix + key)
        if isinstance(value, dict):
            out += _leaf_paths(value, prefix + key + ".")
    return out


@pytest.mark.slow
@settings(FUZZ, max_examples=40)
@given(dotted=st.sampled_from(_leaf_paths(good_record())), value=VALUES | st.none())
def test_mutated_records_never_crash_report(scratch: Path, dotted: str, value: Any) -> None:
    results = scratch / "records"
    results.mkdir(exist_ok=True)
    (results / "demo-linear-s0-abc.json").write_text(json.dumps(good_record()))
    mutated = results / "demo-linear-s1-def.json"
    mutated.write_text(json.dumps(_set(good_record("demo-linear-s1-def"), dotted, value)))
    res = report_over(results, scratch / "report")
    assert res.exit_code == 0, (dotted, value, res.output)
    if read_record(mutated, run_id="demo-linear-s1-def") is None:
        assert f"skipped {mutated}" in res.output  # not a record, or one of another run id
        assert "(1 record(s))" in res.output
    else:
        assert "(2 record(s))" in res.output


def test_run_never_overwrites_wrong_typed(scratch: Path, tmp_path: Path) -> None:
    plan_out = dry_run(scratch, *GRID)
    run_id = re.search(r"(demo-linear-s0-[0-9a-f]{12})", plan_out.output)[1]
    results = tmp_path / "results"
    results.mkdir()
    squatter = results / f"{run_id}.json"
    text = json.dumps(_set(good_record(run_id), "metrics.primary", "high"))
    squatter.write_text(text)
    res = bench("run", "--dry-run", *GRID, "--no-pretrained", "--results", str(results))
    refused(res, f"1 file(s) in {results} sit where records go but are not medpeft-bench records")
    assert squatter.read_text() == text
