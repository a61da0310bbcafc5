import sys

from mocobench.data.cli import main

sys.exit(main())
