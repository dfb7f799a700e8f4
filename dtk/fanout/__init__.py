"""Fan-out: one build matrix over many machines, as CI systems and Kubernetes run it."""
