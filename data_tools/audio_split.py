"""Split a NeMo manifest into train/val/test, whole speakers at a time when speakers are known.

A speaker in both train and test makes the test score a lie (the model has heard that voice), so
clips are grouped: by speaker when the manifest says who speaks, else by source sentence (the whole
clip and its phrase-split pieces stay together), and whole groups are dealt to the splits. Seeded.

    split_manifest(manifest, out_dir=None, fractions=(0.8, 0.1, 0.1), seed=0) -> SplitResult
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_tools.manifest import ManifestEntry, read_manifest, write_manifest
from hackathon.core.atomic import atomic_write_json
from hackathon.core.errors import HackathonError

SPLITS = ("train", "val", "test")
MIN_SPEAKERS_FOR_SPEAKER_SPLIT = 3  # one each for train, val and test


@dataclass
class SplitResult:
    manifests: dict[str, Path]
    counts: dict[str, int]
    hours: dict[str, float]
    grouped_by: str  # "speaker" or "clip"
    report_path: Path


def _group_key(entry: ManifestEntry, by_speaker: bool) -> str:
    if by_speaker and entry.speaker is not None:
        return f"speaker:{entry.speaker}"
    return f"clip:{entry.extra.get('whole', entry.audio_filepath)}"


def _deal_groups(groups: dict[str, list[ManifestEntry]], fractions: tuple[float, float, float],
                 seed: int) -> dict[str, list[str]]:
    """Shuffle the groups, then fill test, then val, up to their share of clips; the rest is train."""
    keys = sorted(groups)
    np.random.default_rng(seed).shuffle(keys)
    total = sum(len(g) for g in groups.values())
    assignment: dict[str, list[str]] = {s: [] for s in SPLITS}
    remaining = list(keys)
    for split, share in (("test", fractions[2]), ("val", fractions[1])):
        target = share * total
        taken = 0
        # Leave at least one group for train (and one for val when val still has to be filled).
        reserve = 2 if split == "test" and fractions[1] > 0 else 1
        while taken < target and len(remaining) > reserve:
            key = remaining.pop()
            assignment[split].append(key)
            taken += len(groups[key])
    assignment["train"] = remaining
    return assignment


def split_manifest(manifest: str | Path, out_dir: str | Path | None = None,
                   fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
                   by_speaker: bool = True, overwrite: bool = False) -> SplitResult:
    """Write <out_dir>/{train,val,test}_manifest.json (default out_dir: the manifest's folder)."""
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise HackathonError(f"split fractions {fractions} must be >= 0 and sum to 1",
                             fix="e.g. --fractions 0.8,0.1,0.1")
    manifest = Path(manifest)
    entries = read_manifest(manifest)
    if not entries:
        raise HackathonError(f"{manifest}: manifest is empty, nothing to split", fix="check the prepare step")
    out_dir = Path(out_dir) if out_dir else manifest.parent
    targets = {s: out_dir / f"{s}_manifest.json" for s in SPLITS}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not overwrite:
        raise HackathonError(f"split manifests already exist: {', '.join(existing)}",
                             fix="pass --out to another folder, or --force to replace them")

    speakers = {e.speaker for e in entries if e.speaker is not None}
    use_speakers = by_speaker and len(speakers) >= MIN_SPEAKERS_FOR_SPEAKER_SPLIT
    groups: dict[str, list[ManifestEntry]] = {}
    for entry in entries:
        groups.setdefault(_group_key(entry, use_speakers), []).append(entry)
    assignment = _deal_groups(groups, fractions, seed)

    counts, hours = {}, {}
    for split in SPLITS:
        chosen = [e for key in sorted(assignment[split]) for e in groups[key]]
        write_manifest(targets[split], chosen)
        counts[split] = len(chosen)
        hours[split] = round(sum(e.duration for e in chosen) / 3600, 4)
    grouped_by = "speaker" if use_speakers else "clip"
    report = {"tool": "split", "source_manifest": str(manifest), "seed": seed, "fractions": [round(f, 4) for f in fractions],
              "grouped_by": grouped_by, "counts": counts, "hours": hours,
              "speakers": {s: sorted(k.split(":", 1)[1] for k in assignment[s] if k.startswith("speaker:"))
                           for s in SPLITS} if use_speakers else {}}
    if by_speaker and not use_speakers and speakers:
        report["note"] = (f"only {len(speakers)} speaker(s) known: split by clip, so test voices are also in train")
    report_path = atomic_write_json(out_dir / "split_report.json", report)
    return SplitResult(targets, counts, hours, grouped_by, report_path)
