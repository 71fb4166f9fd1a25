"""The three canonical classes and the editable alias table (specs/detect/aliases.yaml) that maps source
class names onto them."""

from __future__ import annotations

import re
from pathlib import Path

from hackathon.core.errors import HackathonError
from hackathon.core.paths import SPECS_DIR

CANONICAL_CLASSES = ("with_mask", "without_mask", "mask_weared_incorrect")
DEFAULT_ALIASES_FILE = SPECS_DIR / "detect" / "aliases.yaml"


def normalise_name(name: str) -> str:
    """'No-Mask ' -> 'no_mask': case, surrounding blanks and separators never make a class unknown."""
    return re.sub(r"[\s\-.]+", "_", str(name).strip().lower()).strip("_")


class AliasTable:
    """Maps raw class names to canonical ones; unknown names map to None (reported, never guessed)."""

    def __init__(self, table: dict[str, list[str]]):
        self.classes: tuple[str, ...] = tuple(table)
        self._lookup: dict[str, str] = {}
        for canonical, aliases in table.items():
            for alias in [canonical, *(aliases or [])]:
                key = normalise_name(alias)
                other = self._lookup.get(key)
                if other is not None and other != canonical:
                    raise HackathonError(
                        f"Alias {alias!r} maps to both {other!r} and {canonical!r} in the alias table.",
                        fix="Keep each alias under one class only in specs/detect/aliases.yaml.")
                self._lookup[key] = canonical

    def canonical(self, raw_name: str) -> str | None:
        return self._lookup.get(normalise_name(raw_name))

    def category_id(self, canonical: str) -> int:
        """COCO category id: 1-based position in the table (0 stays free, Roboflow uses it as a placeholder)."""
        return self.classes.index(canonical) + 1

    @classmethod
    def load(cls, path: str | Path | None = None) -> "AliasTable":
        import yaml

        path = Path(path) if path else DEFAULT_ALIASES_FILE
        if not path.exists():
            raise HackathonError(f"Alias table {path} not found.",
                                 fix=f"Point data.aliases at a YAML file like {DEFAULT_ALIASES_FILE}.")
        try:
            table = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise HackathonError(f"Cannot parse alias table {path}: {exc}", fix="Fix the YAML at the line shown.")
        if not isinstance(table, dict) or not table:
            raise HackathonError(f"Alias table {path} is not a mapping of class -> list of aliases.",
                                 fix=f"See {DEFAULT_ALIASES_FILE} for the expected form.")
        return cls({str(k): [str(a) for a in (v or [])] for k, v in table.items()})
