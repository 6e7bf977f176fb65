"""`python -m bench.launchers worker SPEC.json`: run one cell's worker (see bench.launchers.worker)."""

import sys

from bench.launchers.worker import main

sys.exit(main())
