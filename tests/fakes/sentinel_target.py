"""Importing this module, or calling `fire`, proves a payload got code loaded or run."""

from tests.fakes.sentinel import STATE

STATE["imported"] = True


def fire() -> str:
    STATE["fired"] = True
    return "pwned"


class Boom:
    def __init__(self, *args: object, **kwargs: object) -> None:
        fire()
