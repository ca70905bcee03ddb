import sys

from sqaccel.cli import main

sys.exit(main())
