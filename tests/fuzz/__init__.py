"""Fuzzing: the atheris harness (`make fuzz`), its seed corpus, and the packet
mutator the hostile-input tests send to a running server."""
