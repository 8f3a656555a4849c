"""Empirical privacy audit (issue 17): canaries inserted on the client data path, the one-run epsilon
lower bound of Steinke, Nasr & Jagielski (2023), and membership-inference scores. Plain PyTorch/numpy."""
