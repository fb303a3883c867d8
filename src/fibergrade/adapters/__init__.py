"""Instrument adapters: transports, scale and analyser protocols, export readers, simulators."""
