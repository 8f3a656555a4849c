"""The fedfer command line: the parser (cli.py), one cmd_*.py module per sub-command, console output."""
