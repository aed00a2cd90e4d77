"""Type stub of the native engine module (checked with mypy.stubtest by tests/test_api.py;
``_ServerSettings`` is checked against the settings table by tests/test_settings.py)."""

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypedDict, final

__all__ = [
    "BindError",
    "ErrorStream",
    "FileWrapper",
    "InputStream",
    "Listener",
    "RequestTerminated",
    "Scoreboard",
    "Server",
    "StartResponse",
    "Write",
    "__version__",
]
__version__: str

class BindError(OSError):
    """The server could not listen where it was told to."""

class RequestTerminated(TimeoutError):
    """Raised in a request's thread when it ran past request_terminate_timeout."""

class _ServerSettings(TypedDict):
    """What ``Server`` takes: the ``server`` group of oxfcgi.settings, every key, resolved."""

    threads: int
    multiplexed: bool
    max_conns: int
    max_in_flight: int
    roles: tuple[int, ...]
    max_params_size: int
    max_params: int
    graceful_timeout: float
    idle_timeout: float
    keepalive_timeout: float
    read_timeout: float
    params_timeout: float
    send_timeout: float
    script_name: str | None
    environ: dict[str, Any] | None
    multithread: bool
    multiprocess: bool
    debug: bool
    status_path: str | None
    ping_path: str | None
    max_requests: int | None
    request_slowlog_timeout: float
    request_terminate_timeout: float

@final
class Listener:
    def __new__(
        cls,
        bind: tuple[Any, ...],
        *,
        backlog: int = 1024,
        socket_mode: int = 0o660,
        umask: int | None = None,
        socket_owner: int | None = None,
        socket_group: int | None = None,
    ) -> Listener: ...
    @property
    def address(self) -> str: ...
    def close(self) -> None: ...
    def disown(self) -> None: ...

@final
class Scoreboard:
    def __new__(cls, rows: int) -> Scoreboard: ...
    def __len__(self) -> int: ...
    def release(self, row: int) -> None: ...
    def worker(self, row: int) -> dict[str, int]: ...

@final
class Server:
    def __new__(
        cls,
        app: Callable[..., Any],
        settings: dict[str, Any],
        *,
        handle_signals: bool = True,
        scoreboard: Scoreboard | None = None,
        worker_row: int = 0,
    ) -> Server: ...
    def serve(self, listener: Listener) -> bool: ...
    def stop(self, reload: bool = False) -> None: ...
    def running_requests(self) -> list[tuple[float, str, int]]: ...
    def terminate(self, thread_id: int, older_than: float) -> bool: ...
    def active(self) -> int: ...
    @staticmethod
    def engine_defaults() -> dict[str, Any]: ...

@final
class InputStream:
    def read(self, size: int | None = -1) -> bytes: ...
    def read1(self, size: int | None = -1) -> bytes: ...
    def readline(self, size: int | None = -1) -> bytes: ...
    def readlines(self, hint: int | None = -1) -> list[bytes]: ...
    def readinto(self, buffer: Any) -> int: ...
    def readable(self) -> bool: ...
    def seekable(self) -> bool: ...
    def writable(self) -> bool: ...
    def close(self) -> None: ...
    def __iter__(self) -> InputStream: ...
    def __next__(self) -> bytes: ...

@final
class ErrorStream:
    def write(self, text: str | bytes) -> int: ...
    def writelines(self, lines: Iterable[str]) -> None: ...
    def flush(self) -> None: ...
    def writable(self) -> bool: ...

@final
class FileWrapper:
    @property
    def filelike(self) -> Any: ...
    @property
    def blksize(self) -> int: ...
    def __new__(cls, filelike: Any, blksize: int = 8192) -> FileWrapper: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __next__(self) -> Any: ...
    def close(self) -> None: ...

@final
class StartResponse:
    def __call__(self, status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Write: ...

@final
class Write:
    def __call__(self, data: bytes) -> None: ...
