"""What several test files share: run helpers (runs.py), LUT comparisons (luts.py) and small frozen
networks (frozen.py). Imported as `from helpers.runs import ...` (tests/ is on sys.path)."""
