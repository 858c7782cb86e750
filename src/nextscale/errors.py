class NextscaleError(ValueError):
    """A problem with the user's input (a file, an argument): the CLI prints it as one line and exits 2."""


class CheckpointError(NextscaleError):
    pass
