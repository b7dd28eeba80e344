"""``python -m moltmesh`` is the ``moltmesh`` command."""

from moltmesh.cli import main

raise SystemExit(main())
