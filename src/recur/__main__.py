"""``python -m recur`` is the same as the ``recur`` console script."""

from recur.cli.main import main

raise SystemExit(main())
