"""The subcommands of ``rnnkit``: one module each, with add_arguments() and run()."""
