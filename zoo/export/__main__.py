"""``python -m zoo.export``: runs :func:`zoo.export.cli.main`."""

from zoo.export.cli import main

raise SystemExit(main())
