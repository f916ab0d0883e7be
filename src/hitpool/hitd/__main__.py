"""`python -m hitpool.hitd`: the same as the `hitd` command."""

from .cli import main

raise SystemExit(main())
