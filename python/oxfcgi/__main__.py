"""``python -m oxfcgi`` runs the ``oxfcgi`` command (see :mod:`oxfcgi.cli`)."""

import sys

from oxfcgi.cli import main

sys.exit(main())
