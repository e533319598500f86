"""`ligo-ds report` (the work: analysis/report.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..analysis.report import report
from ..errors import ConfigError
from ..options import Command, option


@dataclass(frozen=True, kw_only=True)
class ReportOptions(Command):
    runs: list[str] = option(
        help="pretrain and grow run directories", metavar="RUN_DIR", positional=True, identity=False
    )
    out: str = option(help="directory for report.md, report.csv and loss_vs_flops.png", metavar="DIR", identity=False)
    scratch: str | None = option(
        None, "the baseline run's directory name", shown_default="the best scratch run", metavar="NAME", identity=False
    )

    def check(self) -> None:
        names = [Path(r).name for r in self.runs]
        if self.scratch is not None and self.scratch not in names:
            raise ConfigError(f"{self.flag('scratch')} {self.scratch!r} is not among the runs: {', '.join(names)}")


Options = ReportOptions
CONFIG_FILE = False


def run(opts: ReportOptions) -> int:
    """Compare runs against the scratch baseline: FLOPs and time to reach its final validation loss.

    Writes DIR/report.md, DIR/report.csv and DIR/loss_vs_flops.png, and prints the table.
    """
    report(opts.runs, opts.out, opts.scratch)
    print((Path(opts.out) / "report.md").read_text())
    return 0
