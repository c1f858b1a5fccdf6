"""The `prefixtune` command: one subcommand per module, registered in `cli.main.SUBCOMMANDS`."""
