"""Print pip pins for the oldest supported releases of the packages named on the command line,
read from pyproject.toml's `name>=floor` dependencies: `python3 .ci/floors.py peft timm` prints
`peft==0.7.0 timm==1.0.9`."""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
floors = {
    m["name"].lower(): m["floor"]
    for d in deps
    if (m := re.match(r"(?P<name>[\w.-]+)>=(?P<floor>[\w.]+)$", d))
}
missing = [name for name in sys.argv[1:] if name.lower() not in floors]
if missing:
    sys.exit(f"no `name>=floor` dependency in pyproject.toml for: {', '.join(missing)}")
print(" ".join(f"{name}=={floors[name.lower()]}" for name in sys.argv[1:]))
