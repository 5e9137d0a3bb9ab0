"""Bytewax sources and sinks, one module per external system."""
