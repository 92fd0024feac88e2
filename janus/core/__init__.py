"""The pure decision core: no I/O, no clock, no randomness of its own.

Every function takes `now` (Unix seconds, float) and, where there is jitter, an
RNG, so hours of traffic can be simulated in milliseconds.
"""
