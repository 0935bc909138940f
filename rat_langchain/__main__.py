"""``python -m rat_langchain`` is the ``rat-langchain`` CLI."""

import sys

from rat_langchain.cli import main

sys.exit(main())
