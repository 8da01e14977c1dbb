"""What reproducing an experiment returns: per run what was measured, what the paper
published, the declared tolerance and the verdict.

A verdict is "pass" or "FAIL" only when every declared check could be made; otherwise it
says why not: "not checked: <reason>" (a comparison run missing, a shortened protocol,
nothing declared), "not run", "epoch k of N", "diverged". A check never passes by default.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apical.run_folder import REPORT, jsonable, write_json


@dataclass(frozen=True)
class RunReport:
    """One run of an experiment: `values` are the measured numbers by column name."""

    label: str
    values: dict[str, Any] = field(default_factory=dict)
    published: str = ""
    expected: str = ""
    verdict: str = "not run"

    @property
    def checked(self) -> bool:
        return self.verdict in ("pass", "FAIL")


@dataclass(frozen=True)
class Report:
    """The experiment's report; `files` maps names (relative to the experiment folder, as
    exported) to the figures, tables and rows it wrote."""

    name: str
    kind: str
    title: str
    source: str
    claim: str
    folder: Path
    runs: list[RunReport]
    notes: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    def run(self, label: str) -> RunReport:
        return next(r for r in self.runs if r.label == label)

    def to_dict(self) -> dict[str, Any]:
        return jsonable({
            "name": self.name, "kind": self.kind, "title": self.title, "source": self.source,
            "claim": self.claim, "notes": self.notes,
            "runs": [{"label": r.label, "values": r.values, "published": r.published,
                      "expected": r.expected, "verdict": r.verdict} for r in self.runs],
        })  # fmt: skip

    def write(self) -> Path:
        """report.json in the experiment folder."""
        write_json(self.folder / REPORT, self.to_dict())
        return self.folder / REPORT

    def export(self, folder: Path) -> Path:
        """Copy the report and its files to folder/NAME (what docs keep of a run)."""
        target = Path(folder) / self.folder.name
        for relative, source in self.files.items():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target / relative)
        write_json(target / REPORT, self.to_dict())
        return target


def judge(checks: list[tuple[str, float | None, float]], missing: list[str]) -> str:
    """The verdict of (description, measured or None, bound) checks, each measured <= bound,
    given the reasons why some checks cannot be made."""
    if any(v is not None and not (math.isfinite(v) and v <= bound) for _, v, bound in checks):
        return "FAIL"
    if missing:
        return "not checked: " + "; ".join(missing)
    if not checks:
        return "not checked: no bound declared"
    return "pass"
