"""The run folder's reports: report.md and plots, per-site tables, the privacy audit's report, partition reports."""
