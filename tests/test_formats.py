"""The format registry (`bench.formats`): every card's format is registered, an unknown name lists
the available ones, and each format answers for its own files."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.catalog import get_card, load_catalog
from bench.formats import Format, format_names, get_format, register


def test_registry_lists_every_format_in_order() -> None:
    assert format_names() == ("demo", "medmnist-npz", "imagefolder", "csv", "split-list")
    assert {card.format for card in load_catalog().values()} <= set(format_names())
    with pytest.raises(KeyError, match="unknown format 'tiff-stack'; available: demo, medmnist"):
        get_format("tiff-stack")


def test_a_name_registers_once() -> None:
    with pytest.raises(ValueError, match="registered twice"):

        @register
        class Again(Format):
            name = "csv"


def test_only_image_file_formats_decode_files() -> None:
    decoding = {name for name in format_names() if get_format(name).decodes_files}
    assert decoding == {"imagefolder", "csv", "split-list"}


def test_each_format_names_where_its_files_are(tmp_path: Path) -> None:
    card = get_card("pathmnist_64")
    assert get_format(card.format).location(card, tmp_path) == tmp_path / "pathmnist_64.npz"
    assert get_format(card.format).stored_image_size(card, tmp_path) == 64  # no file: the card's
    other = next(c for c in load_catalog().values() if c.format == "imagefolder")
    assert get_format(other.format).location(other, tmp_path) == other.folder(tmp_path)
