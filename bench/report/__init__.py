"""`bench report`: JSON records to tables, statistics, figures and a self-contained HTML page.

Reads only the records; never imports a model (nor torch). `frame` turns records into the long
frame that `summary`, `tables`, `efficiency`, `stats`, `plots`, `paper`, `missing` and `tuning`
read; `write` writes the report folder; `filters` chooses the records; `profile` shows
`bench profile` records; `conditions` says whether a table's timings can be compared.
"""

from bench.report.filters import parse_where, select_records
from bench.report.frame import records_frame
from bench.report.paper import PAPER_REGIMES, write_paper_table
from bench.report.profile import is_profile, profile_frame, profile_tables
from bench.report.stats import choose_baseline
from bench.report.summary import blocks, summarize
from bench.report.tuning import row_name
from bench.report.write import write_report

__all__ = [
    "PAPER_REGIMES",
    "blocks",
    "choose_baseline",
    "is_profile",
    "parse_where",
    "profile_frame",
    "profile_tables",
    "records_frame",
    "row_name",
    "select_records",
    "summarize",
    "write_paper_table",
    "write_report",
]
