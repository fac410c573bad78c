import sys

from blueloop.cli import main

sys.exit(main())
