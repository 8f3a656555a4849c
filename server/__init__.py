"""fedfer's Flower ServerApp: strategy, global evaluation, privacy ledger and run folder."""
