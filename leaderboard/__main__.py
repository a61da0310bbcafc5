import sys

from mocobench.leaderboard.cli import main

sys.exit(main())
