"""CLI tests: the `newsletter` commands through Typer's runner (`cli`, from the root conftest) or in a
subprocess where the exit status and stderr themselves are the contract."""
