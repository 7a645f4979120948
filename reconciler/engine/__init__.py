"""Applying plans through the ports: observe -> plan -> apply -> record."""
