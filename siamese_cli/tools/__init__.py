"""The work behind each `siamese` subcommand, one module per tool, callable from Python."""
