"""The imperative shell: leadership, the admission loop, wiring and supervision."""
