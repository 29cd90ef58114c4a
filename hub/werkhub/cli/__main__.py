"""``python -m werkhub.cli``: the ``werkhub`` command."""

from werkhub.cli.main import main

raise SystemExit(main())
