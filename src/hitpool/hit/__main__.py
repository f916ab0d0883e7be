"""``python -m hitpool.hit``: the same as the ``hit`` command."""

from .cli import main

raise SystemExit(main())
