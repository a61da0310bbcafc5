import sys

from mocobench.datasets.cli import main

sys.exit(main())
