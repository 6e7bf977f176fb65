"""What `bench tune` / `bench run --tune` asked for (`TuneRequest`), checked as the command line
builds it; torch-free, so a bad --budget or --scheduler fails before the heavy imports."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.errors import UserError
from bench.option_values import SCHEDULERS

DEFAULT_BUDGET = 8


@dataclass
class TuneRequest:
    """What `bench tune` / `bench run --tune` asked for."""

    budget: int = DEFAULT_BUDGET
    seed: int = 0  # shuffles each space and trains the trials
    # method -> axis -> raw comma-separated values (--space METHOD.KEY=a,b,c)
    spaces: dict[str, dict[str, str]] = field(default_factory=dict)
    scheduler: str = "none"  # SCHEDULERS
    eta: int = 3  # successive halving: keep the best 1/eta of each rung

    def __post_init__(self) -> None:
        """Bad values fail here, as the command line builds the request, before any data loads."""
        if self.budget < 1:
            raise UserError(f"--budget must be >= 1, got {self.budget}")
        if self.seed < 0:
            raise UserError(f"--tune-seed must be >= 0, got {self.seed}")
        if self.scheduler not in SCHEDULERS:
            raise UserError(
                f"--scheduler must be one of {', '.join(SCHEDULERS)}, not {self.scheduler!r}"
            )
        if self.eta < 2:
            raise UserError(f"--eta must be >= 2 (successive halving keeps 1/eta), got {self.eta}")
