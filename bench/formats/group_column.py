"""The patient/study group column of a CSV manifest: the card's `[reader] group_column`, else a
column named "group" (`bench.group_splits` keeps a group's images together)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bench.errors import UserError

# the column read as each image's group when the card names none
DEFAULT_GROUP_COLUMN = "group"


def find_group_column(
    header: Sequence[str],
    named: str | None,
    classes: Sequence[str],
    ignore_columns: Sequence[str],
    where: str,
) -> str | None:
    """The card's `group_column` (which must be in the header), else "group" when the manifest
    has it and it is neither a class nor ignored; None: the data names no groups."""
    if named is not None:
        if named not in header:
            raise UserError(
                f"{where}: no group column {named!r} (the card's group_column); columns "
                f"present: {list(header)}"
            )
        return named
    if DEFAULT_GROUP_COLUMN in header and DEFAULT_GROUP_COLUMN not in (*classes, *ignore_columns):
        return DEFAULT_GROUP_COLUMN
    return None


def group_of(row: Mapping[str, str], column: str, at: str) -> str:
    """One row's group; an empty one is refused (it would pool unrelated images into one)."""
    group = row[column].strip()
    if not group:
        raise UserError(
            f"{at}: empty {column!r}; give every image its patient/study id (a patient's "
            "images are kept on one side of every split)"
        )
    return group
