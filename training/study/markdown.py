"""Markdown for the report: number formats shared with the findings, tables, figures and sections.

Findings quote numbers through the same formatters the tables use, so a sentence like "19.01 dB"
always matches a cell of the table above it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from training.evaluate import EVAL_SEED
from training.study.scoring import Score, TestSet

CELL_NOTE = (
    "each cell: mean PSNR (dB) / mean SSIM over the images and training seeds, each on its noise draws (± the standard "
    "deviation of the PSNR across training seeds, where there are several)"
)


def psnr(value: float) -> str:
    return f"{value:.2f}"


def ssim(value: float) -> str:
    return f"{value:.3f}"


def db(value: float) -> str:
    """An absolute PSNR as quoted in findings, e.g. ``19.01 dB``."""
    return f"{psnr(value)} dB"


def delta_db(value: float) -> str:
    """A difference of PSNRs, always signed (``+1.23 dB``, ``−0.40 dB``) so it never reads as a table value."""
    return f"{'+' if value >= 0 else '−'}{abs(value):.2f} dB"


def pct(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.2f} ms"


def cell(score: Score) -> str:
    spread = f" ±{score.seed_sd:.2f}" if score.seed_sd is not None else ""
    return f"{psnr(score.psnr)}{spread} / {ssim(score.ssim)}"


def seeds_note(noise_seeds: Sequence[int], train_seeds: int) -> str:
    drawn = (
        f"noise seed {noise_seeds[0]}" if len(noise_seeds) == 1 else f"noise seeds {', '.join(map(str, noise_seeds))}"
    )
    if train_seeds == 1:
        return drawn + "; one training seed per model"
    paired = "; training seed k on the k-th draw, a one-seed model and the noisy input on every draw"
    return drawn + f"; {train_seeds} training seeds per model" + (paired if len(noise_seeds) > 1 else "")


def caption(
    test: TestSet, command: str, what: str = CELL_NOTE, seeds: Sequence[int] = (EVAL_SEED,), train_seeds: int = 1
) -> str:
    """The line under every table: which images, which noise seeds, what the numbers are, which command."""
    return f"Test set: {test.describe()}; {seeds_note(seeds, train_seeds)}; {what}. Command: `{command}`."


@dataclass
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    caption: str
    title: str = ""

    def render(self) -> str:
        lines = [f"**{self.title}**", ""] if self.title else []
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("| " + " | ".join("---" if i == 0 else "---:" for i in range(len(self.header))) + " |")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        lines += ["", f"*{self.caption}*"]
        return "\n".join(lines)


@dataclass
class Figure:
    file: str  # name inside the figures folder
    caption: str

    def render(self) -> str:
        return f"![{self.caption}](figures/{self.file})\n\n*Figure: {self.caption}*"


@dataclass
class Section:
    """One experiment of the report: what it asks, its tables and figures, and what the numbers say."""

    key: str
    title: str
    question: str
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def render(self, number: int) -> str:
        parts = [f'## {number}. {self.title}\n\n<a id="{self.key}"></a>', self.question]
        parts += [t.render() for t in self.tables]
        parts.append("**Findings.** " + " ".join(self.findings))
        parts += [f.render() for f in self.figures]
        return "\n\n".join(parts)


def render_report(preamble: Sequence[str], sections: Sequence[Section], epilogue: Sequence[str]) -> str:
    body = [*preamble, *(s.render(i) for i, s in enumerate(sections, start=1)), *epilogue]
    return "\n\n".join(body).rstrip() + "\n"
