"""The ``reconcile`` command line."""

#: True in a process that ends when its command returns (the console script: set by
#: ``reconciler.cli.main.entry``); False when commands run inside another program (tests)
process_ends_after_command = False
