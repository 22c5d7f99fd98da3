"""`python -m downloader` is the `downloader` command."""

from .cli import main

main()
