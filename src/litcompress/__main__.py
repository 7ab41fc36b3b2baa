"""``python -m litcompress``: the ``litcompress`` command."""

from litcompress.cli import main

raise SystemExit(main())
