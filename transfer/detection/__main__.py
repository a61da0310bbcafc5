import sys

from mocobench.transfer.detection.cli import main

sys.exit(main())
