"""The results table: printed with rich, and written as markdown with the machine it ran on."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.common import BenchResult

COLUMNS = ("benchmark", "value", "limit", "ratio", "target", "verdict")


def _num(value: float | None, digits: int = 2) -> str:
    if value is None or math.isnan(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def row(result: BenchResult) -> tuple[str, ...]:
    ratio_target = "" if result.target is None else f">= {result.target:g}"
    limit = "-" if result.limit is None else f"{_num(result.limit)} {result.unit}"
    return (
        result.name,
        f"{_num(result.value)} {result.unit}",
        limit,
        _num(result.ratio),
        ratio_target,
        result.verdict,
    )


def print_table(results: list[BenchResult], machine: dict[str, str], *, quick: bool) -> None:
    table = Table(title=f"shoptet-worker benchmarks{' (quick sizes)' if quick else ''}")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("benchmark", "verdict") else "right")
    for result in results:
        style = {"ok": "green", "MISSED": "red", "ERROR": "bold red"}.get(result.verdict)
        table.add_row(*row(result), style=style)
    console = Console()
    console.print(table)
    for result in results:
        console.print(f"[bold]{result.name}[/bold]")
        for note in [*result.notes, *([f"error: {result.error}"] if result.error else [])]:
            console.print(f"  - {note}", highlight=False)
    console.print(", ".join(f"{k}: {v}" for k, v in machine.items()), highlight=False)


def markdown(results: list[BenchResult], machine: dict[str, str], *, quick: bool) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python -m bench{' --quick' if quick else ''}` (`make bench`)."
        + (" **Quick sizes: not the issue's sizes.**" if quick else "")
        + (" The machine below is the latest run's." if len({r.details.get("run") for r in results}) > 1 else ""),
        "Ratio = value / limit for throughputs, limit / value for memory and time: higher is better.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row(r)) + " |" for r in results]
    missed = [r.name for r in results if r.verdict in ("MISSED", "ERROR")]
    lines += ["", f"Targets missed: {', '.join(missed)}." if missed else "Every target met.", "", "## Notes", ""]
    runs = {str(r.details.get("run", "")) for r in results}
    if len(runs) > 1:
        lines += ["Rows come from different runs (`--only`): each row's notes say which.", ""]
    for result in results:
        lines.append(f"- **{result.name}**")
        if "run" in result.details:
            lines.append(f"  - run: {result.details['run']}")
        lines += [f"  - {note}" for note in result.notes]
        if result.error:
            lines.append(f"  - error: `{result.error}`")
    lines += ["", "## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in machine.items()]
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, results: list[BenchResult], machine: dict[str, str], *, quick: bool) -> None:
    path.write_text(markdown(results, machine, quick=quick), encoding="utf-8")


def save_json(path: Path, results: list[BenchResult]) -> None:
    """The rows as JSON next to the markdown, so that ``--only NAME`` can update one row later."""
    path.write_text(json.dumps([asdict(r) for r in results], indent=1, default=str) + "\n", encoding="utf-8")


def load_json(path: Path) -> list[BenchResult]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [BenchResult(**row) for row in rows]


def merge(previous: list[BenchResult], fresh: list[BenchResult], order: list[str]) -> list[BenchResult]:
    """Previous rows with the fresh ones replacing rows of the same name, in ``order``."""
    by_name = {r.name: r for r in previous} | {r.name: r for r in fresh}
    return [by_name[name] for name in order if name in by_name]
