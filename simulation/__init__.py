"""fedfer's simulation harness and command line (`fedfer ...`)."""
