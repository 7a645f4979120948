"""What runs on or is sent to a node: the bootstrap bundle and its commands."""
