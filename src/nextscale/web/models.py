"""The models a server offers by name: the one it started with (`--model`, or `--vae` with `--var`), then every
built-in model. Each is loaded when a request first names it and kept (the built-in ones are a few MB each)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..errors import NextscaleError
from ..registry import BUILTIN
from .inputs import BadRequest
from .session import Session


class Models:
    """Sessions by name, the first one the default. Requests are checked on Starlette's thread pool, so two may
    name a model that is not loaded yet at once: a lock makes it load once. Generating stays on the line's one
    worker thread, whichever model a job uses."""

    def __init__(self, first: Session, more: dict[str, Callable[[], Session]] | None = None):
        """`first` (loaded: the default) and `more` by name, in their order; `first` comes before them unless it is
        one of them (`nextscale serve --model digits-small`: the built-in models keep the registry's order)."""
        more = more or {}
        order = list(more) if first.title in more else [first.title, *more]
        self.default = first.title
        self._loaders = {name: (lambda: first) if name == first.title else more[name] for name in order}
        self._sessions = {first.title: first}
        self._lock = threading.Lock()

    @classmethod
    def with_builtins(cls, first: Session) -> Models:
        """`first`, then each built-in model in the registry's order, on `first`'s device and with its limits."""

        def loader(name: str) -> Callable[[], Session]:
            def load() -> Session:
                from ..weights import load_model

                vae, var = load_model(name, device=first.device)
                return Session(vae, var, ["--model", name], name, first.device_arg, max_images=first.max_images)

            return load

        return cls(first, {name: loader(name) for name in BUILTIN})

    @property
    def names(self) -> list[str]:
        return list(self._loaders)

    @property
    def loaded(self) -> list[str]:
        return list(self._sessions)

    def get(self, name: object = None) -> Session:
        """The session of model `name` (None or "": the default), loading it on first use. An unknown name is a
        400; a model that fails to load, a 500 naming why."""
        if name is None or name == "":
            name = self.default
        if not isinstance(name, str) or name not in self._loaders:
            raise BadRequest(f"unknown model {name!r}; this server offers: {', '.join(self.names)}")
        session = self._sessions.get(name)
        if session is None:
            with self._lock:
                session = self._sessions.get(name)
                if session is None:
                    try:
                        session = self._loaders[name]()
                    except NextscaleError as e:
                        raise BadRequest(f"model {name} could not be loaded: {e}", status=500) from None
                    self._sessions[name] = session
        return session
