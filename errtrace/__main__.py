"""``python -m errtrace``: the same as the ``errtrace`` command."""

import sys

from errtrace.cli import main

sys.exit(main())
