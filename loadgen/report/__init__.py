"""What a load run leaves: tables, `report.json` and PNG plots.

tables  summary and side-by-side tables; writing and reading `report.json`
plots   latency and load plots (PNG)
hints   why a run lost jobs, and what to try
"""
