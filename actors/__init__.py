"""Ray actors, the HTTP gateway and the CLI: thin shells over the plain classes in `stream` and `models`."""
