"""`python -m kinmail` runs the command line."""

from kinmail.cli.main import main

main()
