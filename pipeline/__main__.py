"""`python -m alpr` is the `alpr` command."""
from alpr.cli import main

main()
