"""Running the service: the command line's commands, migrations, and the local servers
of `archomata dev` (`make run`)."""
