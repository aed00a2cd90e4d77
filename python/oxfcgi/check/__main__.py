"""``python -m oxfcgi.check``: the doctor on its own (see :mod:`oxfcgi.check`)."""

import sys

from oxfcgi.check import main

sys.exit(main())
