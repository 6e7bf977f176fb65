"""Shell completion of dataset and method names (`bench --install-completion`). Each runs on
every TAB press, so it imports only what its names need."""

from __future__ import annotations

from collections.abc import Iterable


def complete_datasets(incomplete: str) -> list[str]:
    """Dataset names from the catalog (the cards' TOML; no torch)."""
    from bench.catalog import load_catalog
    from bench.errors import UserError

    try:
        names = list(load_catalog())
    except UserError:  # a broken card in $MEDPEFT_CARDS: complete nothing rather than crash
        return []
    return comma_items(incomplete, names)


def complete_methods(incomplete: str) -> list[str]:
    """Method names from the registry, and the shorthands 'core' and 'all'. Methods register on
    import (some from the installed peft), so this imports them: the one completion that costs
    seconds."""
    from methods import list_methods

    return comma_items(incomplete, ["core", "all", *list_methods()])


def comma_items(incomplete: str, names: Iterable[str]) -> list[str]:
    """Completions of the last item of a comma-separated list: 'full,li' -> ['full,linear']."""
    head, _, last = incomplete.rpartition(",")
    prefix = f"{head}," if head else ""
    chosen = set(head.split(",")) if head else set()
    return [prefix + n for n in names if n.startswith(last) and n not in chosen]
