"""One module per main.py command (cli.py dispatches to them, importing each only when it runs)."""
