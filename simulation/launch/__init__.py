"""Starting runs: experiment files, the simulation launcher, the local deployment (SuperLink + SuperNodes), certificates and keys, processes, output paths."""
