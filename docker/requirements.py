"""Print the package's dependencies from pyproject.toml, one a line (a pip requirements file).

    python docker/requirements.py pyproject.toml [EXTRA ...]

Used by `make wheelhouse` and the Dockerfile, so the image installs exactly what the package
declares (plus the named extras, e.g. `airflow` for the compose stack's Airflow and tracking
server image), without the package source: that layer stays cached while the source changes.
"""

import sys
import tomllib

path, *extras = sys.argv[1:] or ["pyproject.toml"]
with open(path, "rb") as f:
    project = tomllib.load(f)["project"]
lines = list(project["dependencies"])
for extra in extras:
    if extra not in project.get("optional-dependencies", {}):
        sys.exit(f"requirements.py: unknown extra {extra!r}; known: {', '.join(project['optional-dependencies'])}")
    lines += project["optional-dependencies"][extra]
print("\n".join(lines))
