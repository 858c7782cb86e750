class NextscaleError(ValueError):
    """A problem with the user's input (a file, an argument): the CLI prints it as one line and exits 2."""


class CheckpointError(NextscaleError):
    pass


class SettingError(NextscaleError):
    """A bad value of one named parameter: the message starts with the parameter's name (`top_k must be …`).

    The command line rewords it with the flag whose argparse `dest` is that name (`--top-k must be …`), so library
    messages never name flags and the CLI never matches message text.
    """

    def __init__(self, setting: str, problem: str):
        super().__init__(f"{setting} {problem}")
        self.setting, self.problem = setting, problem

    def reworded(self, name: str) -> str:
        return f"{name} {self.problem}"
